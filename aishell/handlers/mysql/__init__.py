"""MySQL and MariaDB implementations of the maintenance tools.

One module per subject: catalog (what is read of information_schema, and sizes),
privileges (SHOW GRANTS, refusals, and what each agent needs), health, fragmentation,
rebuild (ALTER TABLE ... FORCE and orphaned #sql tables), optimize (OPTIMIZE TABLE,
ANALYZE TABLE) and corruption (CHECK TABLE, and the repair). The tool catalog names
each handler by its module: mysql.<module>.<tool>.
"""
