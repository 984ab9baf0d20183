"""A purge holds max_share on what it deletes, whatever the data or the statistics say:
no generated distribution of keys and dates (skewed, clustered, gaps, duplicates, NULL
dates, old rows all at the end, statistics reset or never gathered) takes it past
max_share of the rows the table held when it started without a person's yes to that
very step; it stops exactly at the limit, checkpointed, and after `aishell approve RUN
--step N` the resume finishes the job exactly once.

SQLite runs many examples through the purge's handler on a real file (the estimate is
exact there, so the policy would catch most of them before the purge starts); the
servers run fewer through the whole executor, each in a scratch table of its own."""

from __future__ import annotations

import itertools
import json
import math
from datetime import datetime, timedelta
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import NamedApprovalNeeded
from aishell.policy.approvers import PreApproved, Prompting
from aishell.registry import Registry, load_registry
from aishell.targets.engines import open_target
from aishell.tool import params as schema
from aishell.tool.context import ToolContext
from tests.handlers.purge.test_log_cleanup import SERVER_NOW
from tests.helpers import run_sql, use_target
from tests.services import scratch_server

RETENTION = 30
PURGE = 1  # the purge is the second step of a log cleanup plan
_names = itertools.count()

# Ages in days: over RETENTION is old; None is a NULL date (never old). Few values,
# so that dates repeat.
AGES = st.one_of(st.none(), st.sampled_from([0, 2, 20, 29, 45, 60, 60, 400]))
# Keys: clusters of consecutive keys, far apart or not.
KEYS = st.sets(st.integers(1, 40) | st.integers(1, 5_000_000), min_size=1, max_size=120)


@st.composite
def tables(draw: st.DrawFn, most: int = 120) -> dict[str, Any]:
    keys = sorted(draw(KEYS))[:most]
    ages = draw(st.lists(AGES, min_size=len(keys), max_size=len(keys)))
    order = draw(st.sampled_from(["drawn", "old_last", "old_first"]))
    if order != "drawn":
        # Old rows all at one end of the key (a log table's oldest rows first, or a
        # table whose ids were reused).
        ages.sort(key=lambda a: (a is not None and a > RETENTION) == (order == "old_first"))
        ages.reverse()
    return {
        "keys": keys,
        "ages": ages,
        "text_key": draw(st.booleans()),
        "max_share": draw(st.sampled_from([0.1, 0.25, 0.29, 0.5, 0.7])),
        "batch_size": draw(st.integers(1, 40)),
        "archive": draw(st.booleans()),
    }


def old_ids(data: dict[str, Any]) -> set[Any]:
    return {
        _key(data, k) for k, age in zip(data["keys"], data["ages"], strict=True) if _is_old(age)
    }


def allowance(data: dict[str, Any]) -> int:
    return math.floor(Fraction(repr(data["max_share"])) * len(data["keys"]))


def _key(data: dict[str, Any], k: int) -> Any:
    return f"k{k:08d}" if data["text_key"] else k


def _is_old(age: int | None) -> bool:
    return age is not None and age > RETENTION


def build(url: str, name: str, data: dict[str, Any], rows: str = "all") -> None:
    """The table `name` with the drawn keys and dates (ages before the server's now);
    rows "kept" creates it with the rows a purge keeps only, "old" adds the others."""
    key = Column("id", String(12) if data["text_key"] else Integer, primary_key=True)
    if not data["text_key"]:
        key.autoincrement = False
    table = Table(
        name,
        MetaData(),
        key,
        Column("created_at", DateTime, nullable=True),
        Column("payload", String(16), nullable=False),
    )
    engine = create_engine(url)
    with engine.begin() as conn:
        if rows != "old":
            table.create(conn)
        now = conn.execute(text(SERVER_NOW[engine.dialect.name])).scalar_one()
        now = datetime.fromisoformat(now) if isinstance(now, str) else now
        values = [
            {
                "id": _key(data, k),
                "created_at": None if age is None else now - timedelta(days=age, seconds=600),
                "payload": f"row {k}",
            }
            for k, age in zip(data["keys"], data["ages"], strict=True)
            if rows == "all" or (rows == "old") == _is_old(age)
        ]
        if values:
            conn.execute(table.insert(), values)
    engine.dispose()  # its session's statistics are flushed as it ends


def ids_in(url: str, name: str) -> set[Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = {r[0] for r in conn.execute(text(f"SELECT id FROM {name}"))}
    engine.dispose()
    return found


# --- SQLite: the handler itself, many examples ------------------------------------------


class _Step:
    """The parts of a run the purge handler sees: its checkpoint and its approvals."""

    def __init__(self, max_share: float) -> None:
        self.progress: dict[str, Any] | None = None
        self.approvals: list[dict[str, Any]] = []
        self.max_share = max_share

    def context(self, target: Any, conn: Any) -> ToolContext:
        ctx = ToolContext(conn, "sqlite", "db", run_id="r1", quote_identifier=target.quote)
        ctx.max_share = self.max_share
        ctx.load_progress = lambda: self.progress
        ctx.save_progress = self._save
        ctx.step_approvals = lambda: list(self.approvals)
        return ctx

    def _save(self, progress: dict[str, Any]) -> None:
        self.progress = json.loads(json.dumps(progress, default=str))


# Loaded when a test first asks, not when xdist's workers import the module to collect it.
@cache
def _registry() -> Registry:
    return load_registry([bundled_catalog_dir()])


def _purge(target: Any, step: _Step, params: dict[str, Any]) -> dict[str, Any]:
    tool = _registry().get("delete_old_records")
    full = schema.with_defaults(params, tool.params)
    with target.connect() as conn:
        return tool.implementation("sqlite").run(full, step.context(target, conn))  # type: ignore[no-any-return]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=tables())
def test_sqlite_no_distribution_passes_max_share_without_a_named_approval(home, data):
    path = home / f"share_{next(_names)}.db"
    url = f"sqlite:///{path}"
    build(url, "t", data)
    target = open_target(use_target(home, url), None)
    params = {
        "table": "t",
        "date_column": "created_at",
        "retention_days": RETENTION,
        "batch_size": data["batch_size"],
    }
    if data["archive"]:
        params["archive_file"] = str(home / f"{path.stem}.jsonl")
    step = _Step(data["max_share"])
    everything, old, most = set(ids_in(url, "t")), old_ids(data), allowance(data)
    try:
        try:
            output = _purge(target, step, params)
        except NamedApprovalNeeded as stop:
            gone = everything - ids_in(url, "t")
            # Stopped before the batch that would pass the limit: exactly at it.
            assert len(old) > most and len(gone) == most and gone <= old
            assert stop.details["rows_deleted"] == most
            assert "stopped at max_share" in stop.reasons[0]
            # Without the approval it stops again, and deletes nothing more.
            with pytest.raises(NamedApprovalNeeded):
                _purge(target, step, params)
            assert everything - ids_in(url, "t") == gone
            step.approvals.append({"decision": "approved", "how": "aishell approve"})
            output = _purge(target, step, params)
        else:
            assert len(old) <= most
        assert output["complete"] and output["rows_deleted"] == len(old)
        assert everything - ids_in(url, "t") == old
        if data["archive"]:
            archived = [
                json.loads(line)["id"]
                for line in Path(params["archive_file"]).read_text().splitlines()
            ]
            assert sorted(archived) == sorted(old)  # every deleted row once, no other
    finally:
        target.close()


# --- the servers: whole runs with --yes, each example a table of its own -------------------


def _share_config(home: Path, url: str, max_share: float) -> Config:
    use_target(home, url)
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"]["safety_constraints"] = [
        {"type": "purge_limits", "min_retention_days": 7, "max_share": max_share}
    ]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _job(table: str, **extra: Any) -> dict[str, Any]:
    return {
        "table": table,
        "date_column": "created_at",
        "retention_days": RETENTION,
        "batch_size": 20,
        "statistics_after_rows": 1_000_000,
        **extra,
    }


def with_statistics(url: str, name: str, data: dict[str, Any], how: str) -> None:
    """The table, and statistics that may no longer describe it: none gathered, gathered
    after the load, or (stale) gathered before the old rows came, with PostgreSQL's
    counter of changes since then reset (pg_stat_reset, or statistics lost in a crash)."""
    if how != "stale":
        build(url, name, data)
        if how == "analyze":
            run_sql(
                url, f"ANALYZE {name}" if url.startswith("postgresql") else f"ANALYZE TABLE {name}"
            )
        return
    build(url, name, data, rows="kept")
    if url.startswith("postgresql"):
        run_sql(url, f"ALTER TABLE {name} SET (autovacuum_enabled = false)", f"ANALYZE {name}")
        build(url, name, data, rows="old")
        run_sql(url, f"SELECT pg_stat_reset_single_table_counters('{name}'::regclass)")
    else:
        run_sql(url, f"ANALYZE TABLE {name}")
        build(url, name, data, rows="old")


@st.composite
def gapped(draw: st.DrawFn) -> dict[str, Any]:
    """Keys in 32 stretches of equal width: new rows where evenly placed key ranges
    sample, old rows in the gaps between them (what fooled MariaDB's estimate)."""
    new, old = draw(st.integers(1, 3)), draw(st.integers(0, 6))
    keys, ages = [], []
    for i in range(32):
        base = i * 10_000 + 1
        keys += [base + j for j in range(new)] + [base + 9_999 - j for j in range(old)]
        ages += [2] * new + [60] * old
    return {
        "keys": keys,
        "ages": ages,
        "text_key": False,
        "max_share": draw(st.sampled_from([0.25, 0.5])),
    }


def _run_with_yes(home: Path, url: str, name: str, data: dict[str, Any], **extra: Any) -> Any:
    config = _share_config(home, url, data["max_share"])
    return commands.run_job(config, "log_cleanup", _job(name, **extra), approver=PreApproved())


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_servers_no_distribution_passes_max_share_with_yes(dialect, home):
    with scratch_server(dialect) as url:

        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            data=tables(most=60) | gapped(),
            stats=st.sampled_from(["none", "analyze", "stale"]),
        )
        def one(data: dict[str, Any], stats: str) -> None:
            name = f"share_{next(_names)}"
            with_statistics(url, name, data, stats)
            everything = ids_in(url, name)
            run = _run_with_yes(home, url, name, data)
            purge = run.steps[PURGE]
            gone = everything - ids_in(url, name)
            assert len(gone) <= allowance(data), (purge.status, purge.output)
            assert gone <= old_ids(data)
            event(f"{stats}: {purge.status}, {'some' if gone else 'none'} deleted")
            if purge.status == "succeeded":
                assert gone == old_ids(data)
            else:
                assert purge.status == "waiting_approval", purge.error
                assert run.status == "waiting_approval"

        one()


# --- the two findings, reproduced ---------------------------------------------------------


def _skewed_for_32_samples() -> dict[str, Any]:
    """Keys in 32 stretches of 10,000: 20 new rows at the start of each (where the 32
    evenly placed key ranges read) and 43 old rows at its end (where none reads): 68% of
    the rows are old, and the sample sees none of them."""
    keys, ages = [], []
    for i in range(32):
        base = i * 10_000 + 1
        keys += [base + j for j in range(20)] + [base + 9_957 + j for j in range(43)]
        ages += [2] * 20 + [60] * 43
    return {"keys": keys, "ages": ages, "text_key": False, "max_share": 0.5}


def _approve_and_resume(home: Path, url: str, name: str, run: Any, data: dict[str, Any]) -> Any:
    config = _share_config(home, url, data["max_share"])
    commands.decide_steps(config, run.run_id, "approved", step=PURGE)
    return commands.resume_run(config, run.run_id, approver=PreApproved())


def _check_stop_and_resume(
    home: Path, url: str, name: str, data: dict[str, Any], archive: Path | None = None
) -> None:
    everything, old = ids_in(url, name), old_ids(data)
    extra = {"archive_to": f"file:{archive}"} if archive else {}
    run = _run_with_yes(home, url, name, data, **extra)
    purge = run.steps[PURGE]
    # The estimate was fooled: it said under the limit, and --yes let the purge start.
    estimate = purge.estimate or {}
    assert estimate["rows_to_delete"] < 0.5 * estimate["table_rows"], estimate
    # It stopped at the limit by its own count: half of the rows, not the 68% or 90%.
    assert run.status == "waiting_approval" and purge.status == "waiting_approval"
    gone = everything - ids_in(url, name)
    assert len(gone) == allowance(data) and gone <= old
    assert any("stopped at max_share (50%)" in r for r in purge.personal)
    # --yes on resume is no yes for it; a plain `aishell approve RUN` is refused.
    config = _share_config(home, url, data["max_share"])
    again = commands.resume_run(config, run.run_id, approver=PreApproved())
    assert again.steps[PURGE].status == "waiting_approval"
    assert everything - ids_in(url, name) == gone
    done = _approve_and_resume(home, url, name, run, data)
    assert done.status == "completed", done.error
    assert done.steps[PURGE].output["rows_deleted"] == len(old)
    assert everything - ids_in(url, name) == old
    if archive is not None:  # each deleted row archived once, across the stop
        archived = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
        assert sorted(archived) == sorted(old)


def test_mariadb_keys_skewed_past_the_32_samples_stop_at_the_limit(home, mysql_url):
    data = _skewed_for_32_samples()
    build(mysql_url, "skewed", data)
    run_sql(mysql_url, "ANALYZE TABLE skewed")
    _check_stop_and_resume(home, mysql_url, "skewed", data, home / "archive" / "skewed.jsonl")


@pytest.mark.parametrize("how", ["reset", "counter_zero"])
def test_postgresql_stale_histogram_stops_at_the_limit(home, pg_url, how):
    """ANALYZE saw only new rows; then 90% old rows came, and the counter of changes
    since ANALYZE went back to 0 (pg_stat_reset_single_table_counters, or the
    statistics lost in a crash)."""
    data = {
        "keys": list(range(1, 1001)),
        "ages": [2] * 100 + [60] * 900,
        "text_key": False,
        "max_share": 0.5,
    }
    build(pg_url, "stale", data, rows="kept")
    run_sql(pg_url, "ALTER TABLE stale SET (autovacuum_enabled = false)", "ANALYZE stale")
    build(pg_url, "stale", data, rows="old")
    if how == "reset":
        run_sql(pg_url, "SELECT pg_stat_reset_single_table_counters('stale'::regclass)")
    else:
        run_sql(pg_url, "SELECT pg_stat_reset()")
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        changed = conn.execute(
            text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'stale'")
        ).scalar()
    engine.dispose()
    assert not changed
    _check_stop_and_resume(home, pg_url, "stale", data)


# --- a prompt answered yes while old rows came in, and the archive after a resume ---------


def test_sqlite_rows_that_came_while_the_prompt_waited_are_asked_about_again(home):
    """The estimate (exact on SQLite) said 40%, and a person said yes to that; while the
    prompt waited, another session made more rows old (80%, over max_share). The yes
    was not for them: the purge is measured again and asked about again, showing 80%;
    a yes to that deletes them, each archived once."""
    url = f"sqlite:///{home / 'prompted.db'}"
    data = {
        "keys": list(range(1, 201)),
        "ages": [60] * 80 + [2] * 120,
        "text_key": False,
        "max_share": 0.5,
    }
    build(url, "events", data)
    config = _share_config(home, url, 0.5)
    archive = home / "archive" / "events.jsonl"
    asked: list[tuple[str, ...]] = []

    def answer(request: Any) -> str:
        if request.tool == "delete_old_records":
            asked.append(request.reasons)
            if len(asked) == 1:
                # Another session, meanwhile: 80 more rows are old (160 of 200).
                run_sql(url, "UPDATE events SET created_at = '2000-01-01 00:00:00' WHERE id <= 160")
        return "yes"

    everything = ids_in(url, "events")
    done = commands.run_job(
        config,
        "log_cleanup",
        _job("events", archive_to=f"file:{archive}"),
        approver=Prompting(ask=answer),
        safety_level="strict",  # so that the purge asks
    )
    assert len(asked) == 2, asked
    assert any("changed while the question waited" in r for r in asked[1]), asked[1]
    assert any("would delete 160 of 200 rows (80%)" in r for r in asked[1]), asked[1]
    assert done.status == "completed", done.error
    gone = everything - ids_in(url, "events")
    assert gone == set(range(1, 161))
    archived = [json.loads(line)["id"] for line in archive.read_text().splitlines()]
    assert sorted(archived) == sorted(gone)
    assert done.steps[PURGE].output["rows_deleted"] == 160


def test_sqlite_a_no_to_the_share_that_grew_while_asked_deletes_nothing(home):
    """The prompt showed 60%, over max_share, and a person said yes to it; while it
    waited, more rows became old (90%). Asked again with 90%, the person says no:
    nothing is deleted, though a yes to 60% was given."""
    url = f"sqlite:///{home / 'shown.db'}"
    data = {
        "keys": list(range(1, 201)),
        "ages": [60] * 120 + [2] * 80,
        "text_key": False,
        "max_share": 0.5,
    }
    build(url, "events", data)
    config = _share_config(home, url, 0.5)
    shown: list[tuple[str, ...]] = []

    def answer(request: Any) -> str:
        if request.tool != "delete_old_records":
            return "yes"
        shown.append(request.personal)
        if len(shown) == 1:
            run_sql(url, "UPDATE events SET created_at = '2000-01-01 00:00:00' WHERE id <= 180")
            return "yes"
        return "no"

    everything = ids_in(url, "events")
    run = commands.run_job(config, "log_cleanup", _job("events"), approver=Prompting(ask=answer))
    assert any("would delete 120 of 200 rows (60%)" in r for r in shown[0])
    assert any("would delete 180 of 200 rows (90%)" in r for r in shown[1]), shown
    assert run.steps[PURGE].status == "denied"
    assert ids_in(url, "events") == everything
