"""A fleet run interrupted on a PostgreSQL target whose server then stops answering (a
restart, a failover): the next delivery's resume cannot connect, and its task comes
back later, as a task at its server's limit does, while the target's circuit breaker
lets it; once the server answers again the run is resumed and completes. A server that
stays away past the breaker (more failed connections in a row than
`circuit_breaker.failures`, the last after its cool-down) leaves the run interrupted,
its last delivery refused in `fleet show` and `fleet status`, for `fleet resend`.

Before, the first resume that could not connect ended the task on its error: nothing
delivered it again, and the target stayed interrupted with nothing said of why.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.commands.fleet import run_fleet_target, watch_fleet
from aishell.config.models import Config
from aishell.errors import TargetUnreachable
from aishell.fleet.worker import TryLater
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.faultproxy import Proxy, server_port, through
from tests.fleet.queues import delete_queue, running_worker
from tests.fleet.test_broker_faults import BROKERS, broker_at, fleet_home
from tests.fleet.test_refused_before_resume import carried, interrupted_fleet_run


def _pg_fleet(
    edit_config: EditConfig,
    home: Path,
    demo_db: Path,
    pg_url: str,
    failures: int,
    cool_down: float = 1,
) -> tuple[Config, Proxy]:
    """The fleet's home with target `pg`, the scratch PostgreSQL database reached through
    a proxy the test can silence; its breaker opens after `failures`, for `cool_down`
    seconds."""
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, note text)"))
        conn.execute(text("INSERT INTO orders SELECT g, 'x' FROM generate_series(1, 50) g"))
    engine.dispose()
    fleet_home(edit_config, home, demo_db, broker_at("redis", BROKERS["redis"][1]))
    proxy = Proxy(server_port(pg_url))
    target = {"url": through(proxy.port, pg_url), "connect_timeout_seconds": 1}
    config = edit_config(
        {
            "targets": {"pg": target},
            "circuit_breaker": {"failures": failures, "cool_down_seconds": cool_down},
        }
    )
    return config, proxy


def test_a_resume_that_cannot_reach_its_server_comes_back_until_the_breaker_says_no(
    edit_config: EditConfig, home: Path, demo_db: Path, pg_url: str
) -> None:
    config, proxy = _pg_fleet(edit_config, home, demo_db, pg_url, failures=1)
    try:
        fleet_id, run_id = interrupted_fleet_run(config, "pg")
        proxy.freeze()  # the server accepts connections and answers none
        _refused_past_the_breaker(config, fleet_id, run_id)
    finally:
        proxy.close()


def test_past_the_breakers_count_a_resume_is_refused_though_its_cool_down_is_over(
    edit_config: EditConfig, home: Path, demo_db: Path, pg_url: str
) -> None:
    """A connection attempt that outlasts the cool-down (a timeout of a second against
    a cool-down of a hundredth): the failures in a row decide, not whether the breaker
    is still open when the resume's error is judged."""
    config, proxy = _pg_fleet(edit_config, home, demo_db, pg_url, failures=1, cool_down=0.01)
    try:
        fleet_id, run_id = interrupted_fleet_run(config, "pg")
        proxy.freeze()
        sent = carried(config)
        with pytest.raises(TryLater):
            run_fleet_target(config, fleet_id, "pg", sent)
        with pytest.raises(TargetUnreachable) as refused:
            run_fleet_target(config, fleet_id, "pg", sent)
        assert f"run {run_id} stays interrupted" in str(refused.value), refused.value
    finally:
        proxy.close()


def _refused_past_the_breaker(config: Config, fleet_id: str, run_id: str) -> None:
    sent = carried(config)
    # Its first failed connection opens the breaker (failures: 1): back when it closes.
    with pytest.raises(TryLater) as later:
        run_fleet_target(config, fleet_id, "pg", sent)
    assert f"run {run_id} waits for its server: " in str(later.value), later.value
    assert 0.2 <= later.value.seconds <= 2.5, later.value.seconds
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted" and row["delivery_refused"] is None, row
    assert commands.fleet_summary(config, fleet_id)["going_on"] == 1  # its task comes back
    time.sleep(later.value.seconds)
    # Past the breaker: the delivery is refused, said where the run is shown.
    with pytest.raises(TargetUnreachable) as refused:
        run_fleet_target(config, fleet_id, "pg", sent)
    assert f"`aishell fleet resend {fleet_id}` once the server answers" in str(refused.value)
    (row,) = commands.fleet_summary(config, fleet_id)["runs"]
    assert row["status"] == "interrupted" and row["run_id"] == run_id, row
    assert row["delivery_refused"]["error"] == str(refused.value), row
    with StateStore(config.state_url) as store:
        assert store.fleet_runs(fleet_id)["pg"]["status"] == "interrupted"


def test_a_worker_resumes_the_run_once_its_server_answers_again(
    edit_config: EditConfig, home: Path, demo_db: Path, pg_url: str
) -> None:
    config, proxy = _pg_fleet(edit_config, home, demo_db, pg_url, failures=50)
    try:
        fleet_id, run_id = interrupted_fleet_run(config, "pg")
        proxy.freeze()  # accepts connections, answers none
        commands.fleet_resend(config, fleet_id)
        log = home / "worker.log"
        with running_worker(home):
            deadline = time.monotonic() + 30
            while f"run {run_id} waits for its server" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            proxy.silent.clear()  # the server answers again
            (row,) = watch_fleet(config, fleet_id, 30, None)["runs"]
    finally:
        delete_queue(config)
        proxy.close()
    assert row["status"] == "completed" and row["run_id"] == run_id, (row, log.read_text())
    assert row["delivery_refused"] is None
