"""A step's second session (a validation's scratch database, a dump's snapshot, ending
aishell's own sessions) is the step's: what it sends is audited with the step, and it
may write only what it declares. Before, such sessions were opened on the engine and
sent CREATE DATABASE, DROP DATABASE ... WITH (FORCE) and pg_terminate_backend unseen."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.helpers import use_target
from tests.services import engine


def test_a_validation_s_scratch_database_is_made_and_dropped_in_the_step_s_audit(
    home: Path, pg_url: str
) -> None:
    config = use_target(home, pg_url)
    result = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    validate = next(s for s in result.steps if s.tool == "validate_backup")
    with StateStore(config.state_url) as store:
        every = store.list_statements(result.run_id)
    sent = [s["sql"] for s in every if s["step_index"] == validate.index]
    made = [s for s in sent if s.startswith('CREATE DATABASE "aishell_verify_')]
    dropped = [s for s in sent if s.startswith('DROP DATABASE IF EXISTS "aishell_verify_')]
    assert len(made) == 1 and " TEMPLATE template0" in made[0], sent
    assert len(dropped) == 1 and dropped[0].endswith(" WITH (FORCE)"), sent
    assert made[0].split()[2] == dropped[0].split()[4]  # the one it made


def test_a_dump_s_snapshot_and_a_copy_s_measuring_are_in_the_audit(home: Path, pg_url: str) -> None:
    """The reads of the session holding the dump's snapshot (its export, the counts made
    beside pg_dump on a thread of their own) and of the session measuring the restored
    copy are the steps' statements too."""
    made = engine(pg_url)
    with made.begin() as conn:
        conn.execute(text("CREATE TABLE side_t (id int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO side_t SELECT g FROM generate_series(1, 10) g"))
    made.dispose()
    config = use_target(home, pg_url)
    result = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    assert result.status == "completed", result.error
    steps = {s.tool: s.index for s in result.steps}
    with StateStore(config.state_url) as store:
        every = store.list_statements(result.run_id)
    dump = [s["sql"] for s in every if s["step_index"] == steps["backup_database_full"]]
    assert "SELECT pg_catalog.pg_export_snapshot()" in dump, dump
    assert any('FROM ONLY "public"."side_t"' in sql for sql in dump), dump
    copy = [s["sql"] for s in every if s["step_index"] == steps["validate_backup"]]
    assert any("side_t" in sql for sql in copy), copy
