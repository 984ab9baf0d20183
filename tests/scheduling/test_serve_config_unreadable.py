"""A serving scheduler whose config files were changed and no longer load runs no
trigger on the config it read before: what those files said (the target's database,
its environment, the agents' constraints) is no longer what the DBA means. Each trigger
fails in one line, stored and notified as any failure, until the files load again."""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from aishell import commands
from aishell.config.models import load_config
from aishell.state.store import StateStore
from tests.helpers import logged
from tests.scheduling.test_schedules import add, job_store_next_run, scheduled_runs, wait_for


def _ended(config, name: str, count: int) -> bool:
    runs = scheduled_runs(config, name)
    return len(runs) >= count and runs[0]["status"] != "running"


def test_a_trigger_is_not_run_on_the_config_read_before_its_files_broke(
    demo_db: Path, home: Path
) -> None:
    config = load_config(home=home)
    add(config, "nightly", "0 3 * * *", ["maintenance", "--type", "quick"])
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
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
            # The target re-pointed to another database and made production, with a
            # slip in the same edit: the files no longer load.
            shutil.copyfile(demo_db, home / "other.db")
            target = data["targets"][data["default_target"]]
            target.update(url="sqlite:///other.db", environment="production")
            path.write_text(yaml.safe_dump({**data, "no_such_setting": 1}))
            job_store_next_run(config, "nightly", datetime.now(UTC) - timedelta(seconds=1))
            wait_for(lambda: _ended(config, "nightly", 1), "the trigger", 60)
            [refused] = scheduled_runs(config, "nightly")
            with StateStore(config.state_url) as store:
                refused = store.get_run(refused["run_id"])
            # Fixed: the next trigger reads the files again and runs.
            path.write_text(yaml.safe_dump(data))
            job_store_next_run(config, "nightly", datetime.now(UTC) - timedelta(seconds=1))
            wait_for(lambda: _ended(config, "nightly", 2), "the next trigger", 60)
            ran = scheduled_runs(config, "nightly")[0]
        finally:
            stop.set()
            serve.join(60)
    assert refused["status"] == "failed", (refused, lines)
    assert "no_such_setting" in (refused["error"] or ""), refused
    assert "config read before" in refused["error"], refused
    said = [line for line in lines if "failed before it started" in line]
    assert len(said) == 1 and "\n" not in said[0], lines
    assert ran["status"] == "completed", (ran, lines)
    assert not refused["steps"], refused  # nothing reached either database
