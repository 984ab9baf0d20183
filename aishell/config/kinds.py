"""How the catalog sorts tools: by category, and by the capabilities a tool needs.

In the config's package: an agent's file names capabilities, checked against these
when it is read; the registry, above, gives each tool its own.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    ANALYSIS = "analysis"
    MAINTENANCE = "maintenance"
    BACKUP = "backup"
    CLEANUP = "cleanup"
    DDL = "ddl"


class Capability(StrEnum):
    DATABASE_READ = "database_read"
    DATABASE_WRITE = "database_write"
    DATABASE_DDL = "database_ddl"
    FILE_READ = "file_read"
    FILE_WRITE = "file_write"
    BACKUP_CREATE = "backup_create"
    BACKUP_RESTORE = "backup_restore"
    SCHEMA_ANALYZE = "schema_analyze"
    SCHEMA_MODIFY = "schema_modify"
    QUERY_OPTIMIZE = "query_optimize"
    INDEX_MANAGE = "index_manage"
