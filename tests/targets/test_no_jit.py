"""aishell's PostgreSQL sessions never JIT-compile a statement: its own statements are
catalog reads and maintenance, which a compile only slows. Under the server's default
settings the guard's catalog read (run before every write step's estimate) cost 0.86 s
on a database with one partitioned and one inherited table, 25 ms without the compile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from aishell.guard.pgtablecode import PG_TABLE_CODE
from aishell.guard.sidefunctions import PG_CODE_OF_ITS_OWN
from aishell.targets.engines import open_target
from tests.helpers import use_target
from tests.services import engine

# The read's one parameter: the catalog's functions it counts as code of their own.
_OWN = {"own": sorted(PG_CODE_OF_ITS_OWN)}


def _tables_that_cost_a_compile(url: str) -> None:
    own = engine(url)
    try:
        with own.begin() as conn:
            conn.execute(text("CREATE TABLE parted (id int) PARTITION BY LIST (id)"))
            conn.execute(text("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1)"))
            conn.execute(text("CREATE TABLE parent (id int)"))
            conn.execute(text("CREATE TABLE child () INHERITS (parent)"))
            # The server would compile the catalog read in the test's own session.
            plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + PG_TABLE_CODE), _OWN).scalar()
            assert "JIT" in plan[0], "the server compiles nothing: the test would prove nothing"
    finally:
        own.dispose()


def _compiled(conn: Any) -> bool:
    plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + PG_TABLE_CODE), _OWN).scalar()
    return "JIT" in plan[0]


def test_no_session_of_aishell_compiles_the_guards_catalog_read(home: Path, pg_url: str) -> None:
    _tables_that_cost_a_compile(pg_url)
    config = use_target(home, pg_url)
    for read_only in (False, True):
        target = open_target(config, "db", read_only=read_only)
        try:
            with target.connect() as conn:
                assert conn.execute(text("SHOW jit")).scalar() == "off"
                assert not _compiled(conn), read_only
        finally:
            target.close()
