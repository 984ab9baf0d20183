"""`aishell doctor` lists each schedule serve refuses, its row not being what the home's
key signed (a field written into the store since, a row stored before schedules were
signed, a key since rotated or gone): one problem each, naming the field where it is
known, with the commands that make it anew; doctor exits 1 and its --json says it.

Before, doctor opened the store without the key: such a schedule passed as healthy
while serve ran none of its triggers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.state.signing import key_path
from aishell.state.store import StateStore
from tests.scheduling.test_schedule_sealed import QUICK, written
from tests.scheduling.test_schedules import add


def _schedule_problems(name: str) -> tuple[int, list[dict[str, str]], str]:
    doctor = CliRunner().invoke(cli, ["doctor", "--json"])
    problems = json.loads(doctor.stdout)["problems"]
    shown = CliRunner().invoke(cli, ["doctor"], env={"COLUMNS": "300"})
    assert shown.exit_code == doctor.exit_code
    return (
        doctor.exit_code,
        [p for p in problems if f"schedule {name}" in p["problem"]],
        shown.output,
    )


def test_doctor_names_the_field_written_into_a_schedule(demo_db: Path, config: Config) -> None:
    add(config, "fine", "0 4 * * *", QUICK)
    words = ["schedule", "add", "nightly", "--cron", "30 2 * * *", "--max-run-time", "90m"]
    added = CliRunner().invoke(cli, [*words, "--", *QUICK])
    assert added.exit_code == 0, added.output
    assert _schedule_problems("nightly")[:2] == (0, [])
    written(config, "nightly", "job", json.dumps({"type": "full"}))

    code, (problem,), shown = _schedule_problems("nightly")
    assert code == 1
    assert "schedule nightly's job does not match its signature" in problem["problem"]
    assert "serve runs none of its triggers" in problem["problem"]
    assert "\n" not in problem["problem"] and "\n" not in problem["fix"]
    assert problem["fix"].startswith("aishell schedule remove nightly, then")
    assert problem["fix"].endswith(
        "aishell schedule add nightly --cron '30 2 * * *' --timezone UTC "
        "--max-run-time 5400s -- maintenance --type quick"
    )
    assert "job does not match its signature" in shown and "fix: aishell schedule" in shown
    assert _schedule_problems("fine")[1] == []


def test_doctor_lists_a_schedule_stored_unsigned_with_the_command_that_adds_it(
    demo_db: Path, config: Config
) -> None:
    with StateStore(config.state_url) as store:  # no key: as an older aishell stored it
        store.add_schedule(
            name="old",
            cron="0 2 * * *",
            timezone="Europe/Berlin",
            words=QUICK,
            agent="maintenance",
            job={"type": "quick"},
            target="demo",
            options={},
        )
    commands.list_schedules(config)  # the key exists, as any signed run makes it
    add(config, "fine", "0 4 * * *", QUICK)
    code, (problem,), _ = _schedule_problems("old")
    assert code == 1 and "schedule old carries no signature" in problem["problem"]
    readd = problem["fix"].split(", then, if it is what you meant, ")[1]
    assert shlex.split(readd)[1:] == [
        "schedule", "add", "old", "--cron", "0 2 * * *", "--timezone", "Europe/Berlin",
        "--", *QUICK,
    ]  # fmt: skip
    # The fix it gives makes a schedule doctor no longer lists.
    commands.remove_schedule(config, "old")
    added = CliRunner().invoke(cli, shlex.split(readd)[1:])
    assert added.exit_code == 0, added.output
    assert _schedule_problems("old")[1] == []


def test_doctor_lists_each_schedule_once_the_home_key_is_gone(
    demo_db: Path, config: Config
) -> None:
    add(config, "nightly", "0 2 * * *", QUICK)
    key_path(config.home).unlink()  # serve would make a new key, which signed none
    code, (problem,), _ = _schedule_problems("nightly")
    assert code == 1 and "a key this home no longer has" in problem["problem"]
    assert not key_path(config.home).exists()  # doctor makes no key
