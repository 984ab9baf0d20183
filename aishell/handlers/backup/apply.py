"""Loading one backup file of a chain into a database: a SQLite file through its backup
API (an increment table by table), a server's through pg_restore or the mariadb client.
Validation loads into a scratch copy, a restore into the target itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Dialect

from aishell.handlers.backup.processes import my_args, mysql_client, pg_args, run_tool, server_env
from aishell.sqltext import quote_identifier, quote_plain_identifier
from aishell.toolcontext import ToolContext


def sqlite_apply(conn: sqlite3.Connection, path: Path, manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "full":
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            source.backup(conn)
        finally:
            source.close()
        return
    conn.execute("ATTACH DATABASE ? AS inc", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        for table in [*manifest["changed"], *manifest["dropped"]]:
            conn.execute(f"DROP TABLE IF EXISTS main.{quote_plain_identifier(table)}")
        for table in manifest["changed"]:
            quoted = quote_plain_identifier(table)
            objects = conn.execute(
                "SELECT type, sql FROM inc.sqlite_schema WHERE tbl_name = ? AND sql IS NOT NULL "
                "ORDER BY type = 'table' DESC",
                (table,),
            ).fetchall()
            for kind, sql in objects:
                conn.execute(sql)
                if kind == "table":
                    conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM inc.{quoted}")
        conn.commit()
    finally:
        conn.execute("DETACH DATABASE inc")


def restore_argv(
    dialect: str, url: URL, database: str, path: Path, manifest: Mapping[str, Any], replace: bool
) -> tuple[list[str], Path | None] | None:
    """The client command that loads one server backup file into `database`, and the file
    it reads on stdin; None for an empty increment. What a restore shows is built here too."""
    if not path.stat().st_size:
        return None
    if dialect == "postgresql":
        argv = ["pg_restore", "--no-owner", "--exit-on-error"]
        if replace or manifest["kind"] == "incremental":
            argv += ["--clean", "--if-exists"]
        return [*argv, "-d", database, *pg_args(url), str(path)], None
    # The dump drops and recreates each table it holds.
    return [mysql_client(), *my_args(url), database], path


def dropped_statements(dialect: Dialect, manifest: Mapping[str, Any]) -> list[str]:
    """What an incremental backup runs for the tables dropped since its parent."""
    if manifest["kind"] != "incremental":
        return []
    return [
        f"DROP TABLE IF EXISTS {quote_identifier(dialect, table)}"
        for table in manifest.get("dropped") or []
    ]


def server_apply(
    dialect: str,
    url: URL,
    database: str,
    path: Path,
    manifest: dict[str, Any],
    replace: bool,
    ctx: ToolContext,
) -> None:
    env = server_env(url)
    command = restore_argv(dialect, url, database, path, manifest, replace)
    if command is not None:
        argv, stdin = command
        if stdin is None:
            run_tool(argv, env, ctx)
        else:
            with stdin.open("rb") as dump:
                run_tool(argv, env, ctx, stdin=dump)
    if manifest["kind"] == "incremental" and manifest["dropped"]:
        engine = create_engine(url.set(database=database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for statement in dropped_statements(conn.dialect, manifest):
                    conn.execute(text(statement))
        finally:
            engine.dispose()
