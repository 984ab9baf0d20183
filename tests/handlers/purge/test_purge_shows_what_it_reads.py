"""Every statement a purge step sends of its table, at its start and in its batches, is
one its preview showed: `plan`'s and the run's own. Before, the count its max_share is
held against (a full read of the table) and, on PostgreSQL, each batch's read of its
transaction's id ran unshown."""

from __future__ import annotations

import re
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from tests.handlers.purge.test_archive_durability import logs  # noqa: F401  (fixture)
from tests.handlers.purge.test_log_cleanup import SMALL, job

# A statement that reads or writes the purged table itself (the catalog's reads name it
# only as a bound value).
_OF_EVENTS = re.compile(r"""\b(FROM|INTO|UPDATE)\s+[`"]?events[`"]?(\s|$|\))""", re.IGNORECASE)
# Values and placeholders, as a preview shows them (:name) and as the server received
# them ($1, ?, or inline on MariaDB): each is one value.
_VALUE = re.compile(r"""\$\d+|(?<!:):\w+|\?|'(?:[^'\\]|\\.)*'|\b\d+(?:\.\d+)?\b""")


def _shape(sql: str) -> str:
    return " ".join(_VALUE.sub("?", sql).split())


def _purge_index(steps: list[dict[str, Any]]) -> int:
    (index,) = [s["index"] for s in steps if s["tool"] == "delete_old_records"]
    return int(index)


@pytest.mark.parametrize("walk", ["pages", "keys"])
def test_every_statement_a_purge_sends_of_its_table_was_shown(
    logs: tuple[Config, str],  # noqa: F811
    walk: str,
) -> None:
    """Walking pages (PostgreSQL; key ranges elsewhere) and walking key ranges."""
    config, _url = logs
    given = job(**SMALL, walk=walk)
    planned = commands.plan_job(config, "log_cleanup", given).to_dict()["steps"]
    shown_in_plan = {_shape(sql) for sql in planned[_purge_index(planned)]["sql"]}
    result = commands.run_job(config, "log_cleanup", given)
    assert result.status == "completed", result.error
    steps = commands.show_run(config, result.run_id)["steps"]
    index = _purge_index(steps)
    assert steps[index]["output"]["rows_deleted"] > 0, steps[index]["output"]
    shown_in_run = {_shape(sql) for sql in steps[index]["sql"]}
    # Its table's statements, and PostgreSQL's read of each batch's transaction id.
    sent = [
        s["sql"]
        for s in commands.run_statements(config, result.run_id)
        if s["step_index"] == index
        and s["attempt"] >= 1
        and (_OF_EVENTS.search(s["sql"]) or "pg_current_xact_id" in s["sql"])
    ]
    assert any("count(" in sql.lower() for sql in sent), sent  # held to max_share (0.5)
    unshown = [sql for sql in sent if _shape(sql) not in shown_in_run]
    assert not unshown, (unshown, sorted(shown_in_run))
    unplanned = [sql for sql in sent if _shape(sql) not in shown_in_plan]
    assert not unplanned, (unplanned, sorted(shown_in_plan))
