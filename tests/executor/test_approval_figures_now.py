"""A step's approval shows figures read when it is asked: a VACUUM asked about after a
purge shows the rows the purge left, counted then, and what the purge did, not the
planner's statistics from before it (which only an ANALYZE or a VACUUM brings up to
date). A table no earlier step wrote keeps the catalog's figures."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import ApprovalRequest, Prompting
from aishell.render.prompt import approval_prompt
from tests.cli.test_cli import read_until
from tests.handlers.purge.test_log_cleanup import _database, fill, rows_of
from tests.helpers import run_sql, use_target
from tests.policy.test_approval_facts import at_terminal

ROWS = 3_000


def _analyzed(url: str, *tables: str) -> None:
    """The planner's statistics count every row before the purge."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in tables or ("events",):
            analyze = "ANALYZE TABLE" if engine.dialect.name == "mysql" else "ANALYZE"
            conn.execute(text(f"{analyze} {table}"))
    engine.dispose()


def _thinned(url: str, table: str) -> None:
    """Two rows of every five of `table` deleted: its pages stay more than half full
    (InnoDB merges pages under half full), each with two fifths free."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {table} WHERE MOD(id, 5) IN (1, 2)"))
    engine.dispose()


def test_the_vacuum_after_a_purge_is_asked_about_with_the_rows_left(home, edit_config) -> None:
    """`aishell run log-cleanup` at a terminal (PostgreSQL): the purge's question, then
    the VACUUM's, whose effect shows the rows left, counted as it is asked, and the
    purge's deletions; the statistics' 3,000 rows are not shown as what it acts on."""
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        _analyzed(url)
        use_target(home, url)
        edit_config(log_cleanup={"purge": {"statistics_after_rows": 100}})
        args = ("run", "log-cleanup", "--table", "events", "--retention-days", "10")
        with at_terminal(*args, "--safety-level", "strict") as (proc, terminal):
            purge = read_until(terminal["fd"], "Run this step?", timeout=60)
            assert "delete_old_records" in purge and "about 3,000 rows" in purge
            os.write(terminal["fd"], b"y\n")
            vacuum = read_until(terminal["fd"], "Run this step?", timeout=60)
            left = len(rows_of(url))
            deleted = ROWS - left
            os.write(terminal["fd"], b"n\n")
            assert proc.wait(60) == 4
    # The panel's lines as one: a terminal's width may wrap a line anywhere.
    shown = _unwrapped(vacuum[vacuum.index("optimize_table") :])
    assert f"events: {left:,} rows counted now" in shown, shown
    assert f"step_1 delete_old_records deleted {deleted:,} rows" in shown, shown
    assert "3,000 rows" not in shown, shown


_THRESHOLD = {"optimize_table": {"fragmentation_threshold": 10}}


def _unwrapped(panel: str) -> str:
    """A rendered panel's text without its borders and line breaks, spaces collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", panel).split())


def _purge_then(tool: str, dialect: str) -> Plan:
    purge = {"table": "events", "date_column": "created_at", "retention_days": 10}
    steps = (
        Step("step_0", "delete_old_records", purge),
        Step("step_1", tool, {"table": "events"}),
        # Another table, which no step of the run wrote: the catalog's figures. Two fifths
        # of it free (_thinned), well over the threshold: the step has work, and is asked.
        Step("step_2", tool, {"table": "others", **_THRESHOLD.get(tool, {})}),
    )
    return Plan("log_cleanup", "db", dialect, {}, steps)


@pytest.mark.parametrize(
    ("dialect", "tool"),
    [
        ("sqlite", "optimize_table"),
        ("postgresql", "optimize_table"),
        ("mysql", "optimize_table"),
        ("postgresql", "vacuum_full_table"),
    ],
)
def test_every_step_after_a_write_is_asked_about_with_figures_of_then(
    home: Path, dialect: str, tool: str
) -> None:
    """On each engine, the maintenance step after a purge of its table: the prompt (as
    rendered) shows the rows left and the purge's count; a table nothing wrote shows
    the catalog's estimate, with no note."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        # Two fifths of its rows deleted before the run, its statistics read after: a
        # rebuild is worth it however the server reads its pages, so the step is asked
        # about (500 rows, none deleted, were judged either way from one run to the next).
        fill(url, table="others", rows=ROWS)
        _thinned(url, "others")
        if dialect != "sqlite":
            _analyzed(url, "events", "others")
        config = use_target(home, url)
        asked: list[tuple[ApprovalRequest, str]] = []

        def ask(request: ApprovalRequest) -> str:
            asked.append((request, _rendered(request)))
            return "yes"

        result = commands.apply_plan(
            config, _purge_then(tool, dialect), approver=Prompting(ask), safety_level="strict"
        )
        assert result.status == "completed", result.error
        left = len(rows_of(url))
    deleted = result.steps[0].output["rows_deleted"]
    assert deleted == ROWS - left > 0
    by_step = {request.step_id: (request, shown) for request, shown in asked}
    request, shown = by_step["step_1"]
    figures = request.estimate["tables"]["events"]
    assert figures["rows"] == left and figures["counted"] is True
    assert figures["changed_since"] == [f"step_0 delete_old_records deleted {deleted:,} rows"]
    assert f"events: {left:,} rows counted now" in shown
    if dialect == "sqlite" and tool == "optimize_table":
        return  # one VACUUM compacts the whole file: step_2 finds nothing to do, unasked
    others, shown = by_step["step_2"]
    assert "changed_since" not in others.estimate["tables"]["others"]
    assert "earlier in this run" not in shown and "counted now" not in shown


def _rendered(request: ApprovalRequest) -> str:
    """The prompt as a person sees it (its own answer, on empty input, is no)."""
    out = io.StringIO()
    with CliRunner().isolation(input="\n"):
        approval_prompt(Console(file=out, width=300, highlight=False), request)
    return out.getvalue()


_MANY = 120_000
# The rows of a table past the count an approval keeps (executor/covered.py: 100,000).
_FILL_MANY = {
    "postgresql": f"INSERT INTO many SELECT g, 'row' FROM generate_series(1, {_MANY}) g",
    "mysql": f"INSERT INTO many SELECT seq, 'row' FROM seq_1_to_{_MANY}",
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_table_past_the_approvals_count_is_shown_with_its_rows_counted_now(
    home: Path, dialect: str
) -> None:
    """The approval's own measure of a large table stops at 100,001 rows ("at least"):
    the question counts it then, and shows its rows, never that bound as a count."""
    with _database(dialect, home) as url:
        run_sql(
            url, "CREATE TABLE many (id INTEGER PRIMARY KEY, v VARCHAR(8))", _FILL_MANY[dialect]
        )
        config = use_target(home, url)
        asked: list[tuple[ApprovalRequest, str]] = []

        def ask(request: ApprovalRequest) -> str:
            asked.append((request, _rendered(request)))
            return "no"

        steps = (
            Step("step_0", "update_table_statistics", {"table": "many"}),
            Step("step_1", "optimize_table", {"table": "many", "fragmentation_threshold": 0}),
        )
        plan = Plan("maintenance", "db", dialect, {}, steps)
        commands.apply_plan(config, plan, approver=Prompting(ask), safety_level="strict")
    by_step = {request.step_id: (request, shown) for request, shown in asked}
    request, shown = by_step["step_1"]
    figures = request.estimate["tables"]["many"]
    assert figures["rows"] == _MANY and figures["counted"] is True, figures
    assert f"many: {_MANY:,} rows counted now" in shown, shown
    assert "100,001" not in shown, shown
