"""APScheduler keeps each schedule's job in the state store as a pickle, and reading a
pickle runs the code it names. A job is read only once its HMAC, made with the home's key
over its id and bytes, is checked: a row written by anyone who can write to the store
(a fleet's shared PostgreSQL store; a SQLite state.db another user can write) runs no
code in `schedule serve`, `schedule list`, the fleet view, or an upgrade of the store.
serve removes such a row, says so in its log, and makes the job again from its schedule.

Before, each of them unpickled the row as it stood: code run on every machine that
served or listed the schedules. Each test writes its payload into its own store only."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.commands.fleetview import fleet_status
from aishell.config.models import Config
from aishell.scheduling.serve import JOB_TABLE
from aishell.state.history import HEAD_REVISION
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.scheduling.test_schedules import add, serving, wait_for

QUICK = ["maintenance", "--type", "quick"]


class _Payload:
    """What unpickling it does: make the marker file (open(path, "w"))."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: pytest.FixtureRequest, edit_config: EditConfig) -> Iterator[Config]:
    if request.param == "sqlite":
        yield edit_config()
        return
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield edit_config({"state": {"url": url}})


def _job_table(url: str) -> None:
    """APScheduler's job table, made as APScheduler makes it (serve once ran here)."""
    jobs = SQLAlchemyJobStore(url=url, tablename=JOB_TABLE)
    jobs.start(BackgroundScheduler(timezone=UTC), "default")
    jobs.shutdown()


def _planted(url: str, name: str, state: bytes) -> None:
    """A job row whose state is `state`, written straight into the store's job table."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {JOB_TABLE} WHERE id = :i"), {"i": name})
        conn.execute(
            text(f"INSERT INTO {JOB_TABLE} (id, next_run_time, job_state) VALUES (:i, :t, :s)"),
            {"i": name, "t": datetime.now(UTC).timestamp() + 3600, "s": state},
        )
    engine.dispose()


def _rows(url: str) -> list[str]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = [r[0] for r in conn.execute(text(f"SELECT id FROM {JOB_TABLE}"))]
    engine.dispose()
    return found


def test_a_pickle_written_into_the_job_table_runs_no_code_when_listed_or_served(
    demo_db: Path, store_config: Config, tmp_path: Path
) -> None:
    config = store_config
    marker = tmp_path / "code-ran"
    add(config, "nightly", "0 2 * * *", QUICK)
    _job_table(config.state_url)
    _planted(config.state_url, "nightly", pickle.dumps(_Payload(marker)))

    listed = commands.list_schedules(config)  # schedule list, doctor
    fleet_status(config)  # the fleet view's page, read per request
    assert not marker.exists()
    assert [s["name"] for s in listed] == ["nightly"] and listed[0]["next_run"] is not None
    assert _rows(config.state_url) == ["nightly"]  # a listing writes nothing

    with serving(config) as lines:
        wait_for(lambda: any("nightly: added" in line for line in lines), "the job made again")
    assert not marker.exists()
    said = [line for line in lines if "its job in the state store" in line]
    assert said and "carries no signature" in said[0] and "removed" in said[0], lines
    # Made again from its schedule, signed: the next serve reads it without a word.
    with serving(config) as lines:
        pass
    assert not any("its job in the state store" in line for line in lines), lines


def test_a_signed_job_copied_or_changed_is_not_read(
    demo_db: Path, config: Config, tmp_path: Path
) -> None:
    add(config, "nightly", "0 2 * * *", QUICK)
    add(config, "weekly", "0 3 * * 0", QUICK)
    with serving(config):
        pass
    engine = create_engine(config.state_url)
    with engine.connect() as conn:
        states = dict(conn.execute(text(f"SELECT id, job_state FROM {JOB_TABLE}")).all())
    engine.dispose()
    # Nightly's signed row under weekly's name; nightly's signature over other bytes.
    _planted(config.state_url, "weekly", bytes(states["nightly"]))
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Payload(marker))
    head = bytes(states["nightly"]).split(b"\n", 1)[0]
    _planted(config.state_url, "nightly", head + b"\n" + payload)
    commands.list_schedules(config)
    with serving(config) as lines:
        wait_for(lambda: sum("its job in the state store" in ln for ln in lines) == 2, "both")
    assert not marker.exists()
    said = [line for line in lines if "its job in the state store" in line]
    assert all("does not match its signature" in line for line in said), said


def test_an_upgrade_of_the_store_unpickles_no_job(home: Path, tmp_path: Path) -> None:
    """Revision 0004 once read every job's pickle to rename its paths: a store set back
    to 0003 (alembic_version is a row anyone who can write to the store can write) ran
    whatever the job table held when aishell next opened it."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    StateStore(url).close()
    _job_table(url)
    marker = tmp_path / "code-ran"
    _planted(url, "n", pickle.dumps({"func": _Payload(marker)}))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003_scheduler_owner'"))
        for later in ("alerts", "fleet_jobs", "fleet_runs"):  # a store at 0003 has none
            conn.execute(text(f"DROP TABLE {later}"))
    engine.dispose()

    with StateStore(url) as store:
        assert store.schema_revision == HEAD_REVISION
    assert not marker.exists()
