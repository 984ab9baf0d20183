"""MySQL and MariaDB implementations of the maintenance tools.

One module per subject: catalog (what is read of information_schema, and sizes),
privileges (SHOW GRANTS, refusals, and what each agent needs), health, fragmentation,
rebuild (ALTER TABLE ... FORCE and orphaned #sql tables), optimize (OPTIMIZE TABLE,
ANALYZE TABLE), corruption (CHECK TABLE), repair (a copy aside, then the rebuild) and
checkrows (what the result rows of those statements say). The tool catalog names each
handler by its module: mysql.<module>.<tool>.
"""
