"""A new store is made at the newest revision at once (history.create_current), on
SQLite and PostgreSQL: what it makes is what the revisions make of an empty store,
table by table (columns in order, keys, indexes, constraints, defaults, DDL), with the
same rows in meta and alembic_version; and making it does not import Alembic."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aishell.state import history
from aishell.state.store import StateStore
from tests.state.store_shape import store_shape


@contextmanager
def _empty_database(dialect: str, folder: Path, name: str) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{folder / name}.db"
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield url


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_new_store_is_what_the_revisions_make(dialect: str, tmp_path: Path) -> None:
    with (
        _empty_database(dialect, tmp_path, "at_once") as at_once,
        _empty_database(dialect, tmp_path, "revisions") as revisions,
    ):
        with StateStore(at_once) as store:
            assert store.schema_revision == history.HEAD_REVISION
            assert store.schema_version == history.LEGACY_SCHEMA_VERSION
        history.upgraded_by_revisions(revisions, "the revisions' store")
        made, migrated = store_shape(at_once), store_shape(revisions)
        assert made["version"] == [(history.HEAD_REVISION,)]
        assert set(made) - {"ddl", "constraints", "meta", "version"}  # tables were compared
        assert made == migrated


MAKE_ONE = """
import sys
from aishell.state.store import StateStore
from tests.state.store_shape import store_shape
with StateStore(sys.argv[1]) as store:
    store.record_event("r1", 0, "made", {})
print(sorted(m for m in sys.modules if m == "alembic" or m.startswith("alembic.")))
"""


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_new_store_is_made_without_importing_alembic(dialect: str, tmp_path: Path) -> None:
    with _empty_database(dialect, tmp_path, "state") as url:
        done = subprocess.run(
            [sys.executable, "-c", MAKE_ONE, url], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "[]"
        with StateStore(url) as store:
            assert store.schema_revision == history.HEAD_REVISION


def test_a_new_mysql_store_is_made_by_the_revisions(mysql_url: str) -> None:
    """MySQL commits each CREATE: a store cut short is left to the revisions."""
    done = subprocess.run(
        [sys.executable, "-c", MAKE_ONE, mysql_url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "alembic.command" in done.stdout
