"""A purge into an archive table locks that table for each batch, and every preview says
so, naming it (as its own table's locks are named); a purge without one shows no such
lock. Seen on the server: the lock it shows is the lock it takes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from tests.handlers.purge.test_archive_durability import (  # noqa: F401  (fixtures)
    _with_archive_table,
    logs,
)
from tests.handlers.purge.test_log_cleanup import job

SHOWN = {
    "postgresql": "ROW EXCLUSIVE on events_archive, per batch",
    "mysql": "SHARED_WRITE on events_archive, per batch",
}


def _purge_locks(config: Config, **given: object) -> list[str]:
    preview = commands.plan_job(config, "log_cleanup", job(**given)).to_dict()
    [purge] = [s for s in preview["steps"] if s["tool"] == "delete_old_records"]
    return list(purge["locks"]["taken"])


def test_a_purge_into_an_archive_table_shows_its_lock(
    logs: tuple[Config, str],  # noqa: F811
) -> None:
    config, url = logs
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    if url.startswith("sqlite"):
        _with_archive_table(url)
        taken = _purge_locks(config, archive_to="table:events_archive")
        assert not [t for t in taken if "events_archive" in t], taken  # the file's lock
        return
    _with_archive_table(url)
    taken = _purge_locks(config, archive_to="table:events_archive")
    assert [t for t in taken if t.startswith(SHOWN[dialect])], taken
    bare = _purge_locks(config)
    assert not [t for t in bare if "events_archive" in t], bare
    if dialect == "postgresql":
        assert "ROW EXCLUSIVE" in _seen_on(config, url, "events_archive")


def _seen_on(config: Config, url: str, table: str) -> set[str]:
    """The modes other sessions held on `table` while the purge ran (pg_locks)."""
    seen: set[str] = set()
    done = threading.Event()
    engine = create_engine(url)

    def watch() -> None:
        with engine.connect() as conn:
            while not done.is_set():
                rows = conn.execute(
                    text(
                        "SELECT l.mode FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c "
                        "ON c.oid = l.relation WHERE c.relname = :t "
                        "AND l.pid <> pg_catalog.pg_backend_pid()"
                    ),
                    {"t": table},
                ).all()
                conn.rollback()
                seen.update(str(r[0]).replace("Lock", "").upper() for r in rows)
                time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = commands.run_job(
            config, "log_cleanup", job(archive_to="table:events_archive", sleep_ms=20)
        )
        assert result.status == "completed", result.error
    finally:
        done.set()
        watcher.join(10)
        engine.dispose()
    return {"ROW EXCLUSIVE" if m == "ROWEXCLUSIVE" else m for m in seen}


def test_tools_show_names_the_archive_table_lock(home: Path) -> None:
    del home
    from aishell.config.models import load_config

    shown = commands.show_tool(load_config(), "delete_old_records")
    assert "ROW EXCLUSIVE on archive table" in " ".join(
        f"{lock['lock']} on {lock['object']}" for lock in shown["locks"]["postgresql"]
    )
