"""A schedule's own --safety-level is a decision made against the agent's safety level
of that day. When the agent's level is tightened later, each trigger runs at the
tighter level: the schedule's loosening does not grow into one nobody decided (as a
resumed run holds a level tightened since it started). A loosening that a production
target refuses without --force is refused when the schedule is added, not every night."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import UsageError
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from tests.conftest import EditConfig
from tests.helpers import logged
from tests.scheduling.test_schedules import add

PERMISSIVE = ["maintenance", "--type", "quick", "--safety-level", "permissive"]


def _run_level(config: Config, name: str) -> tuple[str, str]:
    result = commands.run_schedule(config, name, "run-now")
    assert result is not None
    with StateStore(config.state_url) as store:
        run = store.get_run(result.run_id)
    return run["safety_level"], run["status"]


def test_a_level_tightened_since_the_schedule_was_added_holds(
    demo_db: Path, config: Config, edit_config: EditConfig
) -> None:
    assert config.agent("maintenance").defaults.safety_level == "moderate"
    add(config, "loose", "0 3 * * *", PERMISSIVE)
    assert _run_level(config, "loose")[0] == "permissive"  # as decided, while nothing changed

    tightened = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    with logged() as lines:
        level, status = _run_level(tightened, "loose")
    assert level == "strict", lines
    assert status != "failed", lines
    said = [line for line in lines if "--safety-level permissive" in line]
    assert said == [
        "schedule loose: its --safety-level permissive was given against the agent's "
        "moderate safety level, and the agent's level is strict now, which holds: add the "
        "schedule again to run it at permissive"
    ], lines

    # Added again under the tighter level: the DBA's new decision holds.
    commands.remove_schedule(tightened, "loose")
    add(tightened, "loose", "0 3 * * *", PERMISSIVE)
    assert _run_level(tightened, "loose")[0] == "permissive"


def test_a_stored_level_with_no_recorded_agent_level_is_no_loosening_of_a_tighter_one(
    demo_db: Path, edit_config: EditConfig
) -> None:
    """A schedule stored without the agent's level it was given against (added before it
    was recorded): where the agent's level is stricter, that one holds."""
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    with StateStore(config.state_url, key=load_key(config.home)) as store:
        store.add_schedule(
            name="old",
            cron="0 3 * * *",
            timezone="UTC",
            words=PERMISSIVE,
            agent="maintenance",
            job={"type": "quick", "tables": None, "rebuild_indexes": True, "update_stats": True},
            target="demo",
            options={"safety_level": "permissive"},
        )
    assert _run_level(config, "old")[0] == "strict"


def test_loosening_a_production_target_without_force_is_refused_when_added(
    demo_db: Path, edit_config: EditConfig
) -> None:
    config = edit_config({"targets": {"demo": {"environment": "production"}}})
    with pytest.raises(UsageError) as refused:
        add(config, "loose", "0 3 * * *", PERMISSIVE)
    assert str(refused.value) == (
        "Target 'demo' is production: loosening the safety level from moderate to "
        "permissive needs --force"
    )
    assert commands.list_schedules(config) == []
    add(config, "forced", "0 3 * * *", [*PERMISSIVE, "--force"])
    add(config, "tighter", "0 3 * * *", [*PERMISSIVE[:-1], "strict"])
