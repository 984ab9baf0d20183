"""A fleet in a state store: several SQLite demo targets, each with a different story.

alpha ran and completed, and has a restore-proven backup and a nightly schedule; beta's
last run failed in a step; gamma's run waits for a person's approval of a high-risk
step; idle never ran. The runs are written through the StateStore API, as the executor
writes them (a real failing or waiting run would take long; tests/scheduling/
test_alerts.py builds its state so too), signed with the home's key as real runs are.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from aishell import commands
from aishell.config.models import Config
from aishell.state.schema import metadata
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.units import stamp
from tests.conftest import EditConfig
from tests.helpers import reached, stored_run

TARGETS = ("alpha", "beta", "gamma", "idle")
FAILED_ERROR = "database disk image is malformed <b>not markup</b>"
WAITING_REASON = "rebuild_fragmented_indexes is high risk: a person's yes is needed"
RUN_IDS = {"alpha": "a1completed0", "beta": "b1failed0000", "gamma": "c1waiting000"}


def fleet_config(edit_config: EditConfig, home: Path, demo_template: Path) -> Config:
    """The shipped config with four SQLite demo targets (copies of the test template)."""
    targets: dict[str, Any] = {}
    for name in TARGETS:
        shutil.copyfile(demo_template, home / f"{name}.db")
        targets[name] = {"url": f"sqlite:///{name}.db"}
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"], data["default_target"] = targets, "alpha"  # these four alone
    path.write_text(yaml.safe_dump(data))
    return edit_config()


def _run(store: StateStore, run_id: str, target: str, tools: list[str]) -> None:
    stored_run(
        store,
        run_id,
        target,
        tools,
        risk=lambda tool: "high" if tool.startswith("rebuild") else "safe",
        job_type="full",
    )


def build_fleet(config: Config) -> None:
    now = datetime.now(UTC)
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        alpha = RUN_IDS["alpha"]
        _run(store, alpha, "alpha", ["analyze_database_health", "update_table_statistics"])
        for index in (0, 1):
            store.step_started(alpha, index, {}, [], 1)
            store.step_finished(alpha, index, "succeeded", output={"ok": True})
        store.finish_run(alpha, "completed")

        beta = RUN_IDS["beta"]
        _run(store, beta, "beta", ["analyze_database_health", "check_table_corruption"])
        store.step_started(beta, 0, {}, [], 1)
        store.step_finished(beta, 0, "succeeded", output={})
        store.step_started(beta, 1, {}, [], 1)
        store.step_finished(beta, 1, "failed", error=FAILED_ERROR)
        store.finish_run(beta, "failed", f"step_1 failed: {FAILED_ERROR}")

        gamma = RUN_IDS["gamma"]
        _run(store, gamma, "gamma", ["analyze_database_health", "rebuild_fragmented_indexes"])
        store.step_started(gamma, 0, {}, [], 1)
        store.step_finished(gamma, 0, "succeeded", output={})
        store.set_step_status(gamma, 1, "waiting_approval", WAITING_REASON)
        store.finish_run(gamma, "waiting_approval", WAITING_REASON)

        proven = stamp(now - timedelta(hours=26))
        # Files on disk: a backup whose file is gone counts nowhere.
        alpha_file, beta_file = _backup_file(config, "alpha"), _backup_file(config, "beta")
        # Of the database a run reached through alpha: what its age is judged by.
        database = reached(config, store, "alpha", alpha)
        store.record_backup(
            target="alpha",
            kind="full",
            path=alpha_file,
            created_at=proven,
            verified_at=proven,
            manifest={"database_identity": database},
        )
        store.record_backup(target="beta", kind="full", path=beta_file)  # never proven
        store.add_schedule(
            name="nightly-alpha",
            cron="0 2 * * *",
            timezone="UTC",
            words=["maintenance", "--type", "quick"],
            agent="maintenance",
            job={"type": "quick"},
            target="alpha",
            options={},
        )


def row_counts(config: Config) -> dict[str, int]:
    """How many rows each table of the state store holds: what a write would change."""
    with StateStore(config.state_url) as store, store.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        }


def add_nightly_quick(config: Config, target: str) -> None:
    """A schedule `nightly`: quick maintenance of `target` at 02:00 UTC."""
    commands.add_schedule(
        config,
        "nightly",
        "0 2 * * *",
        "UTC",
        ["quick"],
        "maintenance",
        {"type": "quick"},
        target,
        {},
    )


def _backup_file(config: Config, target: str) -> str:
    folder = config.home / "backups" / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target}-1"
    path.write_bytes(b"backup")
    return str(path)
