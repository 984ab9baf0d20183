"""The functions of the servers' own whose calls do more than compute a value.

A read that calls one writes (WRITING_FUNCTIONS), reaches beyond its session
(REACHING_FUNCTIONS), or runs code its caller's text does not hold (READING_BY_NAME,
RUNS_WHAT_IT_IS_GIVEN): the guard judges statements by them, and the catalog's walk of
what a view, a policy, a check or an index calls counts them as code of its own.
"""

from __future__ import annotations

# Functions a SELECT can call that change something: a query that calls one writes.
WRITING_FUNCTIONS = frozenset(
    {
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "set_config",
        "nextval",
        "setval",
        "pg_stat_reset",
        "pg_stat_reset_shared",
        "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters",
        "pg_stat_reset_slru",
        "pg_stat_reset_replication_slot",
        "pg_stat_statements_reset",
        "txid_current",
        "pg_current_xact_id",
        "pg_import_system_collations",
        "pg_logical_emit_message",
    }
)
# Functions that reach beyond the statement's own session: another session (ending it,
# signalling it, taking a lock it waits on, opening one elsewhere), the server's files,
# or state every session shares. They never run in a read, and their risk is critical.
REACHING_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_signal_backend",
        "pg_promote",
        "pg_wal_replay_pause",
        "pg_wal_replay_resume",
        "pg_log_backend_memory_contexts",
        "pg_notify",
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
        "pg_advisory_unlock_all",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_ls_dir",
        "pg_ls_logdir",
        "pg_ls_waldir",
        "pg_ls_tmpdir",
        "pg_ls_archive_statusdir",
        "pg_file_write",
        "pg_file_rename",
        "pg_file_unlink",
        "pg_file_sync",
        "pg_backup_start",
        "pg_backup_stop",
        "pg_start_backup",
        "pg_stop_backup",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        "pg_replication_slot_advance",
        "pg_logical_slot_get_changes",
        "pg_logical_slot_get_binary_changes",
        "lo_import",
        "lo_export",
        "lo_unlink",
        "lo_create",
        "lo_creat",
        "lo_open",
        "lo_close",
        "lo_get",
        "lo_put",
        "lo_from_bytea",
        "lo_truncate",
        "lo_truncate64",
        "loread",
        "lowrite",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "dblink_connect_u",
        "dblink_disconnect",
        "dblink_send_query",
        "dblink_get_result",
        "dblink_open",
        "dblink_fetch",
        "dblink_close",
        "get_lock",
        "release_lock",
        "release_all_locks",
        "load_file",
        "master_pos_wait",
        "master_gtid_wait",
        "source_pos_wait",
        "sys_exec",
        "sys_eval",
        # SQLite: loads a library's code; reads or sets the address of a tokenizer's C
        # code, which a later query of an FTS table then calls (allowed in query_only).
        "load_extension",
        "fts3_tokenizer",
    }
)
# Functions that read the relations (views too) a text argument names: what those run is
# out of the statement's sight. These are STABLE, where query_to_xml() and the cursor
# ones are VOLATILE: the catalog's check of a statement's calls counts those.
READING_BY_NAME = frozenset(
    {
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
    }
)
# The catalog's functions that run what they are given at run time, which no catalog
# dependency can record: SQL as text (query_to_xml(q, ...), ts_stat(q), ts_rewrite(query,
# q)), a cursor's query (cursor_to_xml), every relation a name or schema given names
# (table_to_xml(rel, ...), schema_to_xml, database_to_xml: views, and what they run).
RUNS_WHAT_IT_IS_GIVEN = READING_BY_NAME | frozenset(
    {
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "ts_stat",
        "ts_rewrite",
    }
)
# The catalog's functions whose call in a view, a policy, a check, a default or an
# index is code of its own there: all of the above but nextval, which every serial
# column's default calls (its write is the sequence's, which no rollback undoes and no
# read-only session allows).
PG_CODE_OF_ITS_OWN = (RUNS_WHAT_IT_IS_GIVEN | REACHING_FUNCTIONS | WRITING_FUNCTIONS) - {"nextval"}
