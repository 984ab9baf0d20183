"""A model's draft of a maintenance job is held to what the job says, as the rule-based
plan is: no statistics refreshed with --no-update-stats (no update_table_statistics, and
optimize_table given update_stats false), no index rebuilt with --no-rebuild-indexes,
nothing changed that the job's type does not change, no table the job does not name (a
partitioned table named with its partitions). A draft that breaks one is rejected with
the reason, sent back to the model, and, every draft rejected, the rules plan instead;
nothing of it runs. Against a local server speaking the Ollama API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.agents.test_update_stats_honoured import _pg_counts
from tests.fake_ollama import Script
from tests.helpers import query, run_sql, use_target
from tests.planners.conftest import planner_settings

TRIES = 2


def _settings(host: str) -> dict[str, Any]:
    return planner_settings(host, TRIES)


def _step(tool: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"tool": tool, "params": params, "rationale": f"{tool} as asked"}


def _answer(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"summary": "as asked", "steps": list(steps)}


def _run(config: Config, job: dict[str, Any]) -> Any:
    result = commands.run_job(config, "maintenance", job, planner="llm", approver=PreApproved())
    assert result.status == "completed", result.error
    return result


def _drafted(config: Config, result: Any) -> dict[str, Any]:
    """Who drafted the run's plan, and the reasons its rejected drafts were given."""
    with StateStore(config.state_url) as store:
        return dict(store.get_plan(result.run_id)["drafted_by"])


def _stat1(path: Path) -> list[tuple] | None:
    """SQLite's statistics as they stand (None: never gathered)."""
    if not query(path, "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1'"):
        return None
    return query(path, "SELECT * FROM sqlite_stat1 ORDER BY 1, 2")


@pytest.fixture
def pg_config(edit_config: Any, home: Path, pg_url: str, ollama_host: str) -> Config:
    run_sql(
        pg_url,
        "CREATE TABLE orders (id int PRIMARY KEY, total int)",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 2000) g",
        "DELETE FROM orders WHERE id % 2 = 0",
    )
    use_target(home, pg_url)
    return edit_config(_settings(ollama_host))


def test_a_draft_that_refreshes_statistics_against_no_update_stats_is_rejected(
    pg_config: Config, pg_url: str, script: Script
) -> None:
    """The model's VACUUM (ANALYZE) and ANALYZE ran, though the job said not to."""
    stats = _step("update_table_statistics", {"table": "orders"})
    vacuum = _step("optimize_table", {"table": "orders"})
    good = _step("optimize_table", {"table": "orders", "update_stats": False})
    script.answers = [_answer(stats, vacuum), _answer(good)]
    before = _pg_counts(pg_url, "orders")
    result = _run(pg_config, {"type": "full", "tables": ["orders"], "update_stats": False})
    after = _pg_counts(pg_url, "orders")
    assert after[1] == before[1]  # no ANALYZE
    assert after[0] == before[0] + 1
    assert [s.tool for s in result.steps] == ["optimize_table"]
    said = script.chats[1]["messages"][-1]["content"]
    assert "step_0 (update_table_statistics): the job says --no-update-stats" in said
    assert "step_1 (optimize_table): the job says --no-update-stats: give optimize_table" in said


def test_every_draft_rejected_falls_back_to_the_rules_with_the_reason(
    pg_config: Config, pg_url: str, script: Script
) -> None:
    script.answers = [_answer(_step("update_table_statistics", {"table": "orders"}))] * TRIES
    before = _pg_counts(pg_url, "orders")
    shown = CliRunner().invoke(
        cli,
        ["run", "maintenance", "--type", "standard", "--no-update-stats", "--planner", "llm"],
    )
    assert shown.exit_code == 0, shown.output
    assert "the job says --no-update-stats: no step may refresh planner statistics" in " ".join(
        shown.output.split()
    )
    assert "rule-based plan instead" in shown.output
    assert _pg_counts(pg_url, "orders")[1] == before[1]


@pytest.mark.parametrize(
    ("job", "draft", "said"),
    [
        (
            {"type": "full", "rebuild_indexes": False},
            _step("rebuild_fragmented_indexes", {"table": "orders"}),
            "step_0 (rebuild_fragmented_indexes): the job says --no-rebuild-indexes",
        ),
        (
            {"type": "quick"},
            _step("optimize_table", {"table": "orders"}),
            "step_0 (optimize_table): not part of the job: quick maintenance changes the "
            "database only by update_table_statistics",
        ),
        (
            {"type": "standard"},
            _step("vacuum_full_table", {"table": "orders"}),
            "step_0 (vacuum_full_table): not part of the job: standard maintenance",
        ),
        (
            {"type": "emergency"},
            _step("update_table_statistics", {"table": "orders"}),
            "step_0 (update_table_statistics): not part of the job: emergency maintenance "
            "changes the database only by repair_corrupted_tables",
        ),
    ],
)
def test_a_draft_outside_the_job_s_keys_is_rejected_and_never_runs(
    pg_config: Config, pg_url: str, script: Script, job: dict, draft: dict, said: str
) -> None:
    script.answers = [_answer(draft)] * TRIES
    before = _pg_counts(pg_url, "orders")
    result = _run(pg_config, job)
    assert _drafted(pg_config, result)["fallback_from"] == "llm"
    rejected = _drafted(pg_config, result)["rejected"]
    assert said in " ".join(rejected[0]), rejected
    if job["type"] in ("quick", "emergency"):  # the rules' plan compacts nothing
        assert _pg_counts(pg_url, "orders")[0] == before[0]


def test_a_partition_of_a_partitioned_table_named_is_in_the_draft_s_scope(
    pg_config: Config, pg_url: str, script: Script
) -> None:
    run_sql(
        pg_url,
        "CREATE TABLE ev (id int) PARTITION BY RANGE (id)",
        "CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (100)",
    )
    script.answers = [
        _answer(_step("update_table_statistics", {"tables": ["ev_1", "ev"]})),
        _answer(_step("update_table_statistics", {"table": "orders"})),
    ]
    result = _run(pg_config, {"type": "quick", "tables": ["ev"]})
    drafted = _drafted(pg_config, result)
    assert "fallback_from" not in drafted and drafted["drafts"] == 1, drafted
    request = script.chats[0]["messages"][1]["content"]
    assert "tables ev_1, ev" in request
    script.answers = [_answer(_step("update_table_statistics", {"table": "orders"}))] * TRIES
    other = _run(pg_config, {"type": "standard", "tables": ["ev"]})
    assert "table 'orders' is not one the job names (ev, ev_1)" in " ".join(
        _drafted(pg_config, other)["rejected"][0]
    )


def test_on_mariadb_a_rebuild_against_no_update_stats_is_rejected(
    edit_config: Any, home: Path, mysql_url: str, ollama_host: str, script: Script
) -> None:
    """ALTER TABLE ... FORCE recalculates the table's statistics there."""
    run_sql(mysql_url, "CREATE TABLE orders (id int PRIMARY KEY, total int)")
    use_target(home, mysql_url)
    config = edit_config(_settings(ollama_host))
    script.answers = [_answer(_step("rebuild_fragmented_indexes", {"table": "orders"}))] * TRIES
    result = _run(config, {"type": "standard", "update_stats": False})
    rejected = _drafted(config, result)["rejected"][0]
    assert any("--no-update-stats" in r and "MySQL/MariaDB" in r for r in rejected), rejected
    assert "rebuild_fragmented_indexes" not in [s.tool for s in result.steps]


def test_on_sqlite_a_statistics_step_against_no_update_stats_is_rejected(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    config = edit_config(_settings(ollama_host))
    before = _stat1(demo_db)
    script.answers = [_answer(_step("update_table_statistics", {"table": "users"}))] * TRIES
    result = _run(config, {"type": "standard", "tables": ["users"], "update_stats": False})
    assert _drafted(config, result)["fallback_from"] == "llm"
    assert _stat1(demo_db) == before


def test_an_emergency_draft_that_repairs_without_its_copy_is_rejected(
    edit_config: Any, demo_db: Path, ollama_host: str, script: Script
) -> None:
    """The rules copy the database aside before any repair: a draft may not drop it."""
    config = edit_config(_settings(ollama_host))
    check = _step("check_table_corruption", {"tables": ["users"]})
    repair = _step(
        "repair_corrupted_tables",
        {"tables": "${step_0.output.corrupted_tables}", "create_backup": False},
    )
    script.answers = [_answer(check, repair)] * TRIES
    result = _run(config, {"type": "emergency", "tables": ["users"]})
    drafted = _drafted(config, result)
    assert drafted["fallback_from"] == "llm", drafted
    assert any("create_backup" in r for r in drafted["rejected"][0]), drafted
    repairs = [s.params for s in result.steps if s.tool == "repair_corrupted_tables"]
    assert all(p.get("create_backup", True) is True for p in repairs), repairs
