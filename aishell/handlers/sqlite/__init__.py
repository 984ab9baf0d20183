"""SQLite implementations of the maintenance tools: real page counts, real checks.

One module per subject: catalog (what is measured of the file), privileges (may this
process write it, and what each agent needs), health, fragmentation, rebuild
(REINDEX), optimize (VACUUM, ANALYZE) and corruption (integrity_check, and the repair).
The tool catalog names each handler by its module: sqlite.<module>.<tool>.
"""
