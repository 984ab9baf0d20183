"""A running `schedule serve` reads the config again when its files change: a schedule
on a target added after serve started runs at its trigger, instead of failing every
trigger with "Unknown target" while `targets list` shows it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from aishell import commands
from aishell.config.models import load_config
from tests.helpers import logged
from tests.scheduling.test_schedules import add, job_store_next_run, scheduled_runs, wait_for


def test_a_target_added_while_serve_runs_is_served(demo_db: Path, home: Path) -> None:
    config = load_config(home=home)
    stop = threading.Event()
    with logged() as lines:
        serve = threading.Thread(
            target=commands.serve_schedules,
            args=(config, stop),
            kwargs={"reload": lambda: load_config(home=home)},
        )
        serve.start()
        try:
            wait_for(lambda: any(line.startswith("serving") for line in lines), "serve")
            path = home / "config" / "aishell.yaml"
            data = yaml.safe_load(path.read_text())
            data["targets"]["later"] = dict(data["targets"][data["default_target"]])
            path.write_text(yaml.safe_dump(data))
            added = load_config(home=home)
            add(
                added, "later", "0 3 * * *", ["maintenance", "--type", "quick", "--target", "later"]
            )
            wait_for(lambda: any("later: added" in line for line in lines), "the schedule")
            job_store_next_run(added, "later", datetime.now(UTC) - timedelta(seconds=1))
            wait_for(lambda: scheduled_runs(added, "later"), "its run", 60)
            wait_for(
                lambda: scheduled_runs(added, "later")[0]["status"] != "running", "its end", 60
            )
        finally:
            stop.set()
            serve.join(60)
    [run] = scheduled_runs(added, "later")
    assert run["status"] == "completed", (run, lines)
    assert not [line for line in lines if "Unknown target" in line], lines
