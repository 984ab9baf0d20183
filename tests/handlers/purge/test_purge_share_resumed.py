"""A purge stopped part way holds max_share on the table as it is when it goes on: where
another session deleted rows meanwhile, the rows counted at the start would let the
resume take nearly all that is left, so the resume counts the table again and the share
is of the rows now with the purge's own deleted rows added back (a table that grew keeps
the first count). The stop names both counts."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from aishell.errors import NamedApprovalNeeded, StepInterrupted
from aishell.targets.engines import open_target
from aishell.tool import params as schema
from tests.handlers.purge.test_purge_share_property import RETENTION, _registry, _Step, build
from tests.helpers import run_sql, use_target

# 100 rows: keys 1-40 old, 41-100 young; half of the table may go.
DATA = {
    "keys": list(range(1, 101)),
    "ages": [60] * 40 + [0] * 60,
    "text_key": False,
    "max_share": 0.5,
}
PARAMS = {
    "table": "t",
    "date_column": "created_at",
    "retention_days": RETENTION,
    "batch_size": 5,
    "max_batch_size": 5,
}


def _purge(target: Any, step: _Step, stop_after: int | None = None) -> dict[str, Any]:
    """The purge handler on the step's checkpoint; asked to stop (as a signal asks) once
    it has looked `stop_after` times whether to."""
    tool = _registry().get("delete_old_records")
    looked = itertools.count(1)
    with target.connect() as conn:
        ctx = step.context(target, conn)
        if stop_after is not None:
            ctx.should_stop = lambda: next(looked) > stop_after
        return tool.implementation("sqlite").run(schema.with_defaults(PARAMS, tool.params), ctx)  # type: ignore[no-any-return]


def _rows(url: str) -> tuple[int, int]:
    """(old, young) rows left."""
    from tests.handlers.purge.test_purge_share_property import ids_in

    left = ids_in(url, "t")
    return sum(1 for k in left if k <= 40), sum(1 for k in left if k > 40)


@pytest.fixture
def stopped(home: Path) -> tuple[Any, _Step, str]:
    """The purge stopped by a signal after four batches: 20 old rows gone."""
    url = f"sqlite:///{home / 'share_resumed.db'}"
    build(url, "t", DATA)
    target = open_target(use_target(home, url), None)
    step = _Step(DATA["max_share"])
    with pytest.raises(StepInterrupted):
        _purge(target, step, stop_after=4)
    assert _rows(url) == (20, 60)
    yield target, step, url
    target.close()


def test_a_table_shrunk_while_the_purge_waited_lowers_what_it_may_delete(
    stopped: tuple[Any, _Step, str],
) -> None:
    target, step, url = stopped
    # Another session deletes 55 of the young rows: 20 old and 5 young are left.
    run_sql(url, "DELETE FROM t WHERE id > 40 AND id <= 95")

    with pytest.raises(NamedApprovalNeeded) as stop:
        _purge(target, step)

    # Half of the 25 rows there are with the 20 it deleted: 22 in all, 2 more.
    assert _rows(url) == (18, 5)
    assert stop.value.details["rows_deleted"] == 22
    assert (
        "it deleted 22 of the 45 rows t held when the purge resumed, its own deleted rows "
        "added back (100 when it started)" in stop.value.reasons[0]
    )
    assert step.progress is not None and step.progress["rows_at_start"] == 45
    # A person's yes by name lets it finish.
    step.approvals.append({"decision": "approved", "how": "aishell approve"})
    assert _purge(target, step)["complete"]
    assert _rows(url) == (0, 5)


def test_a_table_grown_while_the_purge_waited_keeps_the_first_count(
    stopped: tuple[Any, _Step, str],
) -> None:
    target, step, url = stopped
    run_sql(
        url,
        "INSERT INTO t (id, created_at, payload) WITH RECURSIVE g(i) AS (SELECT 101 UNION ALL "
        "SELECT i + 1 FROM g WHERE i < 400) SELECT i, datetime('now'), 'new' FROM g",
    )

    output = _purge(target, step)

    assert output["complete"] and output["rows_deleted"] == 40
    assert step.progress is not None and step.progress["rows_at_start"] == 100
    assert _rows(url) == (0, 360)
