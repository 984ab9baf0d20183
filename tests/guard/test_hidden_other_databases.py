"""MariaDB: a view that may write is read where a statement names it, in its own database.

The guard looks up, once per run, the views of every database of the server whose
reading may write. It matched them by bare name: a view `locked` taking a lock in one
database made every read of a plain table `locked` in any other refused. A name alone
reads the session's database (where a USE moved it, asked when it matters); a name with
its database reads that one, and a view over such a view, in any database, is one too.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from aishell.handlers import Handler
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    Cases,
    execute,
    fingerprint,
    handler_tool,
    handlers,
    make_tables,
    refill,
    run_one,
    scalar,
)
from tests.guard.test_guard_unseen import _params, _tool
from tests.services import scratch_mysql

__all__ = ["handlers"]  # the fixture, found by pytest in this module

LOCK = "aishell-test-other-database-lock"


def _send_in(database: str) -> Any:
    def send(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        """The declared DELETE, then into `database` and the statement there."""
        from sqlalchemy import text

        conn = ctx.connection
        conn.execute(text(f"DELETE FROM {ctx.quote(params['table'])} WHERE id < :n"), {"n": 2})
        conn.execute(text(f"USE {ctx.quote(database)}"))
        conn.execute(text(params["statement"])).all()
        return {}

    return send


def test_a_view_of_another_database_is_read_only_where_named_with_it(
    home: Path, handlers: types.ModuleType
) -> None:
    with scratch_mysql() as here, scratch_mysql() as there, Cases() as case:
        elsewhere = make_url(there).database
        make_tables(here)
        execute(here, "CREATE TABLE locked (id INT)", "INSERT INTO locked VALUES (1)")
        execute(there, f"CREATE VIEW locked AS SELECT GET_LOCK('{LOCK}', 0) AS l")
        execute(
            here,
            f"CREATE VIEW over_there AS SELECT l FROM `{elsewhere}`.locked",
            "CREATE VIEW over_here AS SELECT id FROM locked",
        )
        config = _tool(home, here, handlers, read_only_step=False)
        reads = {
            "plain-table-of-the-same-name": ("SELECT count(*) FROM locked", None),
            "view-over-the-plain-table": ("SELECT count(*) FROM over_here", None),
            "named-with-its-database": (
                f"SELECT count(*) FROM `{elsewhere}`.locked",
                f"{elsewhere}.locked",
            ),
            "view-over-it": (
                "SELECT count(*) FROM over_there",
                f"{make_url(here).database}.over_there",
            ),
        }
        for name, (sql, refused) in reads.items():
            with case(name):
                refill(here)
                run = run_one(config, here, "caller", _params(sql))
                step = run.steps[0]
                if refused is None:
                    assert step.status == "succeeded", step.error
                    continue
                assert step.status == "failed"
                assert f"statement refused: it writes (it reads {refused}: view " in (
                    step.error or ""
                )
                assert fingerprint(here, "other") == (5, 15)
                assert scalar(here, f"SELECT IS_USED_LOCK('{LOCK}')") is None


def test_a_name_alone_reads_the_database_a_use_moved_the_session_to(
    home: Path, handlers: types.ModuleType
) -> None:
    with scratch_mysql() as here, scratch_mysql() as there:
        elsewhere = make_url(there).database
        make_tables(here)
        execute(here, "CREATE TABLE locked (id INT)")
        execute(there, f"CREATE VIEW locked AS SELECT GET_LOCK('{LOCK}-use', 0) AS l")
        handler = Handler(
            sql_templates=("DELETE FROM {table} WHERE id < :n", "USE {database}"),
            run_fn=_send_in(elsewhere),
            risk=RiskLevel.HIGH,
        )
        config = handler_tool(home, here, handlers, "elsewhere", handler, "high")
        run = run_one(config, here, "elsewhere", _params("SELECT count(*) FROM locked"))
        step = run.steps[0]
        assert step.status == "failed", step
        assert f"it reads {elsewhere}.locked: view " in (step.error or ""), step.error
        assert scalar(here, f"SELECT IS_USED_LOCK('{LOCK}-use')") is None
