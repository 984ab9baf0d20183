"""How the catalog sorts tools: by category, and by the capabilities a tool needs.

Below both the config (an agent's capabilities are checked against these) and the
registry (each tool names its own), so that neither has to import the other.
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
