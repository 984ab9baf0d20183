"""serve's stop reaches a scheduled run that was still planning when it came.

The stop asks each run of the process to end resumably at once; a trigger still reading
the target's catalog had no run yet to ask, and once planned it ran all its steps while
serve waited for it. Now it begins, finds the scheduler stopping, and stops before its
first step, interrupted and resumed by the next trigger.
"""

from __future__ import annotations

import threading
from pathlib import Path

import yaml
from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from tests.faultproxy import Proxy, server_port, through
from tests.helpers import logged
from tests.scheduling.test_schedules import add, due_now, scheduled_runs, wait_for
from tests.services import engine


def test_a_run_still_planning_when_serve_stops_stops_before_its_first_step(
    home: Path, pg_url: str
) -> None:
    with engine(pg_url).begin() as conn:
        conn.execute(text("CREATE TABLE kept (id int PRIMARY KEY)"))
    proxy = Proxy(server_port(pg_url))
    try:
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        data["targets"]["db"] = {"url": through(proxy.port, pg_url), "environment": "test"}
        path.write_text(yaml.safe_dump(data))
        config = load_config(home=home)
        add(config, "nightly", "0 3 * * *", ["maintenance", "--type", "quick", "--target", "db"])
        due_now(config, "nightly")
        # The planning's read of the catalog is kept from the server until serve stops.
        proxy.hold(b"/* aishell catalog */")
        stop = threading.Event()
        with logged() as lines:
            serve = threading.Thread(target=commands.serve_schedules, args=(config, stop))
            serve.start()
            try:
                assert proxy.held_once.wait(60), "the scheduled run never planned"
                stop.set()
                wait_for(lambda: any("stopping: running" in line for line in lines), "the stop")
            finally:
                proxy.release()
                serve.join(60)
        assert not serve.is_alive()
        (run,) = scheduled_runs(config, "nightly")
        shown = commands.show_run(config, run["run_id"])
        assert shown["status"] == "interrupted", (shown["status"], shown["error"], lines)
        assert shown["error"].startswith("interrupted by the scheduler's stop"), shown["error"]
        assert {s["status"] for s in shown["steps"]} == {"pending"}
        # The next trigger takes it back and finishes it.
        resumed = commands.resume_run(config, run["run_id"])
        assert resumed.status == "completed", resumed.error
    finally:
        proxy.close()
