"""PostgreSQL implementations of the maintenance tools, from the server's own catalogs.

One module per subject: catalog (what is read of the server), privileges (who may
maintain what, and what each agent needs), health, fragmentation, rebuild (REINDEX
CONCURRENTLY and its leftovers), optimize (VACUUM, ANALYZE) and corruption (amcheck,
and the repair). The tool catalog names each handler by its module: postgresql.<module>.<tool>.
"""
