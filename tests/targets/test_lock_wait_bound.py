"""The lock waits and statement limits aishell sets on a session: never shorter than
asked (MySQL/MariaDB count whole seconds, so a fraction is rounded up), and sent with
their values bound, not written into the statement's text."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from aishell.config.models import load_config
from aishell.dialects import mysql_lock_wait_seconds
from aishell.handlers.backup.apply import _wait_at_most
from aishell.targets.access import session_access
from aishell.targets.engines import Target, open_target
from aishell.targets.limits import Limits, inherit_step_limit


@pytest.mark.parametrize(
    "ms, seconds", [(10, 1), (999, 1), (1000, 1), (1001, 2), (2500, 3), (3500, 4), (60000, 60)]
)
def test_a_mysql_lock_wait_is_rounded_up_to_whole_seconds(ms, seconds):
    assert mysql_lock_wait_seconds(ms) == seconds


def target(home: Path, url: str, **keys: Any) -> Target:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url, "environment": "test", **keys}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return open_target(load_config(home=home), "db")


@pytest.mark.parametrize("ms, seconds", [(10, 1), (2500, 3)])
def test_a_mysql_session_never_waits_less_than_lock_timeout_ms(home, mysql_url, ms, seconds):
    handle = target(home, mysql_url, lock_timeout_ms=ms)
    try:
        with handle.connect() as conn:
            waits = conn.execute(
                text("SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout")
            ).one()
    finally:
        handle.close()
    assert tuple(waits) == (seconds, seconds)


@contextmanager
def sent(conn: Connection) -> Iterator[list[str]]:
    """The statements' text as the driver is given it, meanwhile."""
    said: list[str] = []

    def before(_c: Any, _cursor: Any, statement: str, *_: Any) -> None:
        said.append(statement)

    event.listen(conn, "before_cursor_execute", before)
    try:
        yield said
    finally:
        event.remove(conn, "before_cursor_execute", before)


def statement_limit_of(conn: Connection) -> float:
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SHOW statement_timeout")).scalar_one().rstrip("ms"))
    return float(conn.execute(text("SELECT @@SESSION.max_statement_time")).scalar_one()) * 1000


def test_a_steps_limit_is_sent_bound(home, server_url):
    handle = target(home, server_url)
    try:
        with handle.connect() as conn, sent(conn) as said:
            # Read-only and the limit together, then the limit alone.
            session_access(conn, read_only=True, target_read_only=False, limit_seconds=2.5)
            assert statement_limit_of(conn) == 2500
            session_access(conn, read_only=True, target_read_only=False, limit_seconds=7.25)
            assert statement_limit_of(conn) == 7250
    finally:
        handle.close()
    setting = [s for s in said if s.startswith("SET") or "set_config" in s]
    assert len(setting) == 2, said
    assert not [s for s in setting if "2.5" in s or "2500" in s or "7.25" in s or "7250" in s]


def test_a_connection_opened_during_a_step_inherits_its_limit_bound(home, server_url):
    handle = target(home, server_url)
    try:
        with handle.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            limits = Limits("db", 60.0)
            limits.step_ends = time.monotonic() + 100
            record = SimpleNamespace(info={})
            family = "postgresql" if conn.dialect.name == "postgresql" else "mysql"
            inherit_step_limit(dbapi, record, limits, family)
            left = statement_limit_of(conn)
    finally:
        handle.close()
    assert 90_000 < left <= 100_000
    assert record.info  # the limit it has, kept for the next step to compare


def test_a_restores_lock_wait_is_bound_and_rounded_up(home, server_url):
    handle = target(home, server_url)
    try:
        with handle.connect() as conn, sent(conn) as said:
            _wait_at_most(conn, 1.5)
            if conn.dialect.name == "postgresql":
                wait = conn.execute(text("SHOW lock_timeout")).scalar_one()
                assert wait == "1500ms"
            else:
                wait = conn.execute(text("SELECT @@SESSION.lock_wait_timeout")).scalar_one()
                assert wait == 2
    finally:
        handle.close()
    assert not [s for s in said if "1500" in s or "= 2" in s], said


@pytest.mark.parametrize(("ms", "shown"), [(10, "1 s"), (2500, "3 s"), (3000, "3 s")])
def test_the_preview_shows_the_mysql_wait_the_session_gets(ms, shown):
    """The plan's and the prompt's lock wait is the one the session is given."""
    from types import SimpleNamespace

    from aishell.config.resources import bundled_catalog_dir
    from aishell.registry import load_registry

    tool = load_registry([bundled_catalog_dir()]).get("optimize_table")
    config = SimpleNamespace(lock_timeout_ms=ms, busy_timeout_ms=5000)
    locks = tool.step_locks({"table": "t"}, "db", config, "mysql")
    assert locks.waits and locks.waits[0][0] == shown, locks.waits
