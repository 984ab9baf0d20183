"""A purge whose table's trigger writes another table (`events` -> `audit`) is judged with
what writing `audit` sets off, and every batch holds to it: a trigger created on `audit`
from another session while the purge runs stops it at the batch that would run it, that
batch rolled back, the batches before done and their audit rows kept. The step fails
resumably; with the new trigger gone the resume ends with exactly the old rows gone.

Time bound: as test_purge_reach_changed.py, a few seconds a purge.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.policy.approvers import PreApproved
from aishell.state.store import StateStore
from tests.handlers.purge.test_log_cleanup import _database, expected_after, fill, job, rows_of
from tests.handlers.purge.test_purge_reach_changed import (
    ROWS,
    SLOW,
    _approved,
    _assert_stopped,
    _count,
    _execute,
    _meanwhile,
)
from tests.helpers import use_target

_MADE = {
    "postgresql": (
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE ledger (id integer)",
        "CREATE FUNCTION events_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
        "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION events_gone()",
        "CREATE FUNCTION audit_in() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO ledger VALUES (NEW.id); RETURN NEW; END$$",
    ),
    "mysql": (
        "CREATE TABLE audit (id integer) ENGINE=InnoDB",
        "CREATE TABLE ledger (id integer) ENGINE=InnoDB",
        "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
        "INSERT INTO audit VALUES (OLD.id)",
    ),
    "sqlite": (
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE ledger (id integer)",
        "CREATE TRIGGER events_gone AFTER DELETE ON events "
        "BEGIN INSERT INTO audit VALUES (OLD.id); END",
    ),
}
_ADDED = {
    "postgresql": "CREATE TRIGGER audit_in AFTER INSERT ON audit FOR EACH ROW "
    "EXECUTE FUNCTION audit_in()",
    "mysql": "CREATE TRIGGER audit_in AFTER INSERT ON audit FOR EACH ROW "
    "INSERT INTO ledger VALUES (NEW.id)",
    "sqlite": "CREATE TRIGGER audit_in AFTER INSERT ON audit "
    "BEGIN INSERT INTO ledger VALUES (NEW.id); END",
}


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def events(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    with _database(request.param, home) as url:
        fill(url, rows=ROWS)
        yield use_target(home, url), url


def _audited(url: str) -> list[int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = sorted(int(i) for (i,) in conn.execute(text("SELECT id FROM audit")))
    engine.dispose()
    return found


def test_a_trigger_added_on_a_table_a_trigger_writes_stops_the_purge(events, home: Path):
    config, url = events
    dialect = create_engine(url).dialect.name
    _execute(url, *_MADE[dialect])
    before = rows_of(url)

    result = _meanwhile(home, _approved(home, job(**SLOW)), url, _ADDED[dialect])

    _assert_stopped(result, "audit_in on audit")
    assert _count(url, "ledger") == 0, "the batch that set the trigger off was rolled back"
    gone = set(before) - set(rows_of(url))
    with StateStore(f"sqlite:///{home / 'state.db'}") as store:
        progress = store.get_progress(result.run_id, 1) or {}
    assert gone and len(gone) == progress["rows_deleted"] and not progress["pending"]
    assert _audited(url) == sorted(gone), "each row gone audited once"

    _execute(url, "DROP TRIGGER audit_in" + (" ON audit" if dialect == "postgresql" else ""))
    finished = commands.resume_run(config, result.run_id, approver=PreApproved())
    if finished.status == "waiting_approval":  # judged again: the events trigger's yes
        commands.decide_steps(config, result.run_id, "approved", step=1)
        finished = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert finished.status == "completed", finished.error
    cutoff = finished.steps[0].output["cutoff"]
    assert set(rows_of(url)) == expected_after(before, cutoff)
    assert _audited(url) == sorted(set(before) - set(rows_of(url)))
    assert _count(url, "ledger") == 0
