"""One scheduler per state store across machines: on a state store on PostgreSQL the
scheduler's lock is the server's advisory lock, so a second `schedule serve` refuses to
start, a `--standby` one takes over when the serving one is killed (even when its lease
row names another host, whose processes cannot be seen), a serve whose lock session
ends stops, and no trigger ever makes two runs. On SQLite the lease row is the lock,
and a standby waits for it too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.scheduling.leadership import LEASE
from aishell.state.scheduler_lock import lock_key
from aishell.state.store import StateStore
from tests.helpers import logged
from tests.scheduling.test_schedules import add, job_store_next_run, serving, wait_for

# Never due by itself within a test: the test makes it due, each time once.
RARELY = "0 3 29 2 *"
ANOTHER_HOST = "another-host.invalid"


class Serve:
    """`aishell schedule serve` as a process of its own, its lines collected as they come."""

    def __init__(self, home: Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aishell", "schedule", "serve", *options],
            env={**os.environ, "AISHELL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, words: str) -> bool:
        return any(words in line for line in self.lines)

    def wait_to_say(self, words: str) -> None:
        wait_for(lambda: self.said(words), f"serve to say {words!r}: {self.lines}")

    def ended(self) -> int:
        """How it exited by itself."""
        code = self.process.wait(timeout=30)
        self._reader.join(10)
        return code

    def end(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=40)
        self._reader.join(10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def scheduled(url: str) -> list[dict[str, Any]]:
    """Each run a trigger started, with the process that ran it."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT r.run_id, r.pid, r.status, s.how FROM schedule_runs s "
                    "JOIN runs r ON r.run_id = s.run_id ORDER BY s.at"
                )
            ).all()
    finally:
        engine.dispose()
    return [dict(row._mapping) for row in rows]


def on_state_store(url: str, statement: str, **values: Any) -> list[Any]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(text(statement), values)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def fire_once(config: Config, url: str, runs_before: int) -> dict[str, Any]:
    """Make the schedule due now, once; the run its trigger made, once it ended."""
    job_store_next_run(config, "tick", datetime.now(UTC) - timedelta(seconds=1))
    wanted = runs_before + 1
    wait_for(lambda: len(scheduled(url)) >= wanted, "the trigger's run")
    wait_for(lambda: scheduled(url)[-1]["status"] != "running", "the run to end")
    return scheduled(url)[-1]


def test_a_standby_takes_over_when_the_serving_scheduler_dies(demo_db, home, edit_config, pg_url):
    """Bound: three serve processes and two quick runs; about 15 s."""
    config = edit_config({"state": {"url": pg_url}})
    add(config, "tick", RARELY, ["maintenance", "--type", "quick"])
    main = Serve(home)
    standby: Serve | None = None
    try:
        main.wait_to_say("serving 1 schedule(s)")
        second = Serve(home)
        assert second.ended() == 5, second.output
        assert f"A scheduler already serves this state store: pid {main.process.pid} on " in (
            second.output
        )
        assert "--standby" in second.output
        standby = Serve(home, "--standby")
        standby.wait_to_say("standby: a scheduler serves this state store")
        first = fire_once(config, pg_url, 0)
        assert first["pid"] == main.process.pid and first["status"] == "completed", first
        # The holder as if it served from another machine: its pid cannot be looked at
        # from here, and yet its death frees the lock.
        on_state_store(
            pg_url,
            "UPDATE target_locks SET hostname = :host WHERE target = :lease",
            host=ANOTHER_HOST,
            lease=LEASE,
        )
        assert main.end(signal.SIGKILL) == -signal.SIGKILL
        standby.wait_to_say("serving 1 schedule(s)")
        assert standby.said(
            f"taking over from the scheduler pid {main.process.pid} on {ANOTHER_HOST}"
        )
        assert sum("standby:" in line for line in standby.lines) == 1  # said once
        (holder,) = on_state_store(
            pg_url, "SELECT pid, hostname FROM target_locks WHERE target = :lease", lease=LEASE
        )
        assert tuple(holder) == (standby.process.pid, socket.gethostname())
        then = fire_once(config, pg_url, 1)
        assert then["pid"] == standby.process.pid and then["status"] == "completed", then
    finally:
        main.end(signal.SIGKILL)
        code = standby.end() if standby is not None else 0
    assert code == 0, standby.output if standby else ""
    # Every trigger made one run, and only the scheduler holding the lock made it.
    runs = scheduled(pg_url)
    assert [run["pid"] for run in runs] == [main.process.pid, standby.process.pid], runs
    assert [run["how"] for run in runs] == ["cron", "cron"]
    assert on_state_store(pg_url, "SELECT * FROM target_locks WHERE target = :l", l=LEASE) == []


def test_a_scheduler_whose_lock_session_ends_stops_serving(demo_db, home, edit_config, pg_url):
    """Bound: one serve process, stopped within CHECK_SECONDS of the cut; about 5 s."""
    config = edit_config({"state": {"url": pg_url}})
    add(config, "tick", RARELY, ["maintenance", "--type", "quick"])
    serve = Serve(home)
    try:
        serve.wait_to_say("serving 1 schedule(s)")
        key = lock_key()
        held = on_state_store(
            pg_url,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = CAST(:key AS bigint)",
            key=key,
        )
        assert len(held) == 1, held
        # The lock's session is cut, as a network or a server restart would cut it.
        on_state_store(pg_url, "SELECT pg_terminate_backend(:pid)", pid=held[0][0])
        code = serve.ended()
    finally:
        serve.end(signal.SIGKILL)
    assert code == 2, serve.output
    assert serve.said("the scheduler's lock on the state store was lost"), serve.output
    assert "Error: The scheduler's lock on the state store was lost while serving" in serve.output


def test_on_sqlite_a_standby_serves_once_the_serving_scheduler_ends(demo_db, config):
    """Bound: two schedulers on threads, one after the other; about 3 s."""
    add(config, "tick", RARELY, ["maintenance", "--type", "quick"])
    stop = threading.Event()
    standby = threading.Thread(
        target=commands.serve_schedules, args=(config, stop), kwargs={"standby": True}
    )
    with logged() as lines:
        try:
            with serving(config):
                standby.start()
                wait_for(lambda: any("standby:" in line for line in lines), "the standby")
                assert sum(line.startswith("serving") for line in lines) == 1
            wait_for(lambda: sum(line.startswith("serving") for line in lines) == 2, "it to serve")
            with StateStore(config.state_url) as store:
                holder = store.lock_holder(LEASE)
            assert holder is not None and holder["pid"] == os.getpid()
        finally:
            stop.set()
            standby.join(30)
    assert not standby.is_alive()
    assert sum("standby:" in line for line in lines) == 1, lines
