"""A state store's schema as its database describes it, to compare two stores made two
ways: every table (columns in order, keys, indexes, constraints, defaults), the DDL as
the engine keeps it, and the rows that say the schema (meta, alembic_version); and a
store as an older aishell left it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, inspect, text

from aishell.state import history


def store_shape(url: str) -> dict[str, Any]:
    """Every table as the database describes it, and the rows that say the schema."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            shape: dict[str, Any] = {}
            for table in sorted(found.get_table_names()):
                shape[table] = {
                    "columns": [
                        (c["name"], str(c["type"]), c["nullable"], c["default"])
                        for c in found.get_columns(table)
                    ],
                    "key": found.get_pk_constraint(table),
                    "indexes": sorted(found.get_indexes(table), key=lambda i: str(i["name"])),
                    "unique": sorted(
                        found.get_unique_constraints(table), key=lambda u: str(u["name"])
                    ),
                    "foreign": found.get_foreign_keys(table),
                    "checks": found.get_check_constraints(table),
                }
            if conn.dialect.name == "sqlite":
                # A column a revision added is in the table's text as ADD COLUMN put it:
                # on the line before the key's, not on one of its own.
                shape["ddl"] = [
                    (kind, name, " ".join((sql or "").split()))
                    for kind, name, sql in conn.execute(
                        text("SELECT type, name, sql FROM sqlite_master ORDER BY name")
                    )
                ]
            elif conn.dialect.name == "mysql":
                shape["ddl"] = [
                    # The next AUTO_INCREMENT value is the rows', not the schema's.
                    " ".join(w for w in made.split() if "AUTO_INCREMENT=" not in w)
                    for table in sorted(found.get_table_names())
                    for made in [conn.execute(text(f"SHOW CREATE TABLE `{table}`")).one()[1]]
                ]
            else:
                shape["ddl"] = conn.execute(
                    text(
                        "SELECT c.relname, c.relkind, pg_catalog.pg_get_indexdef(c.oid) "
                        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1"
                    )
                ).all()
                shape["constraints"] = conn.execute(
                    text(
                        "SELECT conrelid::regclass::text, conname, "
                        "pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
                        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
                    )
                ).all()
            key = "`key`" if conn.dialect.name == "mysql" else "key"
            shape["meta"] = conn.execute(text(f"SELECT {key}, value FROM meta")).all()
            shape["version"] = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            return shape
    finally:
        engine.dispose()


def made_at(url: str, revision: str) -> None:
    """The store at url brought to `revision` by the revisions, as an aishell of that
    revision left it."""
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(history.alembic_config(conn), revision)
    finally:
        engine.dispose()
