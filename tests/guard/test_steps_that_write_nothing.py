"""A step whose rendered SQL only reads (a rebuild that found nothing over the
threshold, an OPTIMIZE of a table under it) writes nothing: it asks nobody and waits
for no window, the plan's preview says so, and it runs as a read, so a write it did
not render is refused, never sent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

import aishell.handlers.sqlite.optimize as sqlite_optimize
from aishell import commands
from aishell.config.models import Config, load_config
from aishell.guard.connection import Guard
from aishell.guard.statements import classify, driver_to_text
from tests.guard.test_guard import site_config, tool_yaml, write_tool
from tests.helpers import one_step_plan, use_target
from tests.services import engine


def production(home: Path, url: str, site_tools: Path | None = None) -> Config:
    """`url` as the default target `db`, in production: medium risk needs a yes."""
    if site_tools is None:
        use_target(home, url)
    else:
        site_config(home, url, site_tools)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["environment"] = "production"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def small_tables(url: str) -> None:
    with engine(url).begin() as conn:
        for name in ("orders", "users"):
            conn.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, note VARCHAR(40))"))
            conn.execute(text(f"CREATE INDEX {name}_note ON {name} (note)"))
            for i in range(100):
                conn.execute(text(f"INSERT INTO {name} VALUES (:i, :n)"), {"i": i, "n": f"n{i}"})


def test_on_a_server_in_production_only_the_steps_that_write_wait(home, server_url):
    small_tables(server_url)
    config = production(home, server_url)
    job = {"type": "full", "tables": ["orders", "users"]}
    preview = commands.plan_job(config, "maintenance", job)
    result = commands.run_job(config, "maintenance", job)  # nobody to ask
    dialect = dialect_of(server_url)
    writes_nothing = {
        s.step_id
        for s in result.steps
        if s.risk_level != "safe" and not any(classify(q, dialect).writes for q in s.sql or [])
    }
    # Small tables: nothing to rebuild on either server (PostgreSQL has no pgstattuple
    # here), and nothing under MariaDB's OPTIMIZE threshold; PostgreSQL's VACUUM writes.
    rebuilds = {s.step_id for s in result.steps if s.tool == "rebuild_fragmented_indexes"}
    assert rebuilds and rebuilds <= writes_nothing
    for step, previewed in zip(result.steps, preview.steps, strict=True):
        if step.step_id in writes_nothing:
            assert step.status == "succeeded", step
            assert not previewed.requires_approval and previewed.confirmation == "none"
        elif step.risk_level == "medium":
            assert step.status == "waiting_approval", step
            assert previewed.requires_approval
    statements = commands.run_statements(config, result.run_id)
    indexes = {s.index for s in result.steps if s.step_id in writes_nothing}
    sent = [s["sql"] for s in statements if s["step_index"] in indexes]
    # (Their measuring may have been the fragmentation step's, sent before them.)
    assert not [q for q in sent if classify(driver_to_text(q, "pyformat"), dialect).writes]
    if server_url.startswith("postgresql"):
        assert result.status == "waiting_approval"
    else:
        assert result.status == "completed"  # nothing at all to approve


def dialect_of(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "mysql"


def test_a_write_the_step_did_not_render_is_refused(demo_db, config, monkeypatch):
    """optimize_table's render and run disagreeing (its render found nothing to do, its
    run a VACUUM): the step was judged a read, and the VACUUM never reaches SQLite."""
    with sqlite3.connect(demo_db) as conn:  # free pages: a VACUUM would give them back
        conn.execute("CREATE TABLE filler AS SELECT zeroblob(200000) AS b")
        conn.execute("DROP TABLE filler")
        free_before = conn.execute("PRAGMA freelist_count").fetchone()[0]
    answers = iter([sqlite_optimize._Why(None, None, [])])
    found = sqlite_optimize._Why("orders", "free pages in the file", [])
    monkeypatch.setattr(sqlite_optimize, "_reason", lambda _p, _c: next(answers, found))
    plan = one_step_plan("maintenance", "demo", "sqlite", "optimize_table", {"table": "orders"})
    result = commands.apply_plan(config, plan)  # nobody to ask: a write would wait
    [step] = result.steps
    assert step.sql == ["-- nothing to do: no free pages and the table is not fragmented"]
    assert step.status == "failed"
    assert "only reads, and this statement writes (VACUUM" in (step.error or "")
    with sqlite3.connect(demo_db) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == free_before
    refused = [s for s in commands.run_statements(config, result.run_id) if s["error"]]
    assert [s["sql"] for s in refused] == ["VACUUM"]
    assert "refused by the guard" in refused[0]["error"]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
@pytest.mark.parametrize(
    "sql",
    [
        'SELECT "unterminated',
        '-- no index of "line\nbreak" is over the threshold',
        "SELECT 'also unterminated",
    ],
)
def test_sql_the_parser_cannot_even_tokenize_counts_as_a_write(dialect, sql):
    found = classify(sql, dialect)
    assert found.writes
    # The server's own reading finds the literal open before the parser is asked.
    assert "that is not closed" in found.reason or "could not read it" in found.reason
    why = Guard(writes=False, label="step_0 (x)").check(sql, None, dialect, "named")
    assert why is not None and "only reads, and this statement writes" in why


def test_a_tool_of_fixed_sql_keeps_its_declared_risk(home, demo_db):
    """A site tool whose SQL only reads, tagged medium by its author (its load, say):
    in production it still asks. Only a handler that found nothing to do runs as a read."""
    folder = home / "site_tools"
    sql = {"sqlite": {"sql": "SELECT count(*) AS n FROM {table}", "result": "one"}}
    write_tool(folder, tool_yaml("heavy_read", "medium", sql))
    config = production(home, f"sqlite:///{demo_db}", folder)
    plan = one_step_plan("maintenance", "db", "sqlite", "heavy_read", {"table": "orders"})
    [step] = commands.apply_plan(config, plan).steps
    assert step.status == "waiting_approval"
    assert step.reasons == ["target 'db' is production: medium risk and above need approval"]
