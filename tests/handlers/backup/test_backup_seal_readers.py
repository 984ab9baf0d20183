"""Every reader that counts a backup (as restorable, as fresh, as kept) reads only the
catalog rows the home's key signed as they are (state/backups.py: sealed): `backups
list`'s newest restorable backup, `fleet status`, the metrics' backup age, the
backup_stale alert, the web view's backups page and a plan's preview of
`backup_required`. A row written or changed outside aishell counts nowhere.

Before, restore and validation refused such a row, but these readers took it at its
word: a row stripped of its signature, or one whose creation time was written newer,
kept the backup age alert quiet and satisfied a preview's backup_required."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aishell import commands
from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.policy.approvers import Prompting
from aishell.view.pages import backups_page
from tests.conftest import EditConfig
from tests.handlers.backup.test_backup_sealed import (  # noqa: F401 (a fixture)
    _backups,
    _written,
    store_config,
)

YES = Prompting(ask=lambda _request: "yes")
NEEDS = "update_table_statistics needs a verified backup of 'db'"


def _changed(config: Config, backup: dict[str, Any], change: str) -> None:
    if change == "unsealed":  # as a row recorded before backups were signed
        _written(config, backup, "seal", None)
    else:  # an old backup made to look fresh
        _written(config, backup, "created_at", datetime.now(UTC).isoformat())


def _readings(config: Config) -> dict[str, Any]:
    """What each reader says of target db's newest restorable backup."""
    preview = commands.plan_job(config, "maintenance", {"type": "quick", "tables": ["orders"]})
    step = next(s for s in preview.steps if s.tool == "update_table_statistics")
    (page,) = [r for r in backups_page(config)["backups"] if r["target"] == "db"]
    (fleet,) = [r for r in commands.fleet_status(config)["targets"] if r["target"] == "db"]
    return {
        "listed": commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"],
        "fleet": fleet["backup"]["proven_at"],
        "metrics": 'aishell_backup_age_seconds{target="db"}' in commands.metrics(config),
        "alert": [a["subject"] for a in commands.check_alerts(config)["firing"]],
        "page": (page["proven_at"], page["newest_at"], page["recorded"]),
        "preview": any(r.startswith(NEEDS) for r in step.reasons),
    }


@pytest.mark.parametrize("change", ["unsealed", "created_at"])
def test_a_backup_row_changed_in_the_store_counts_as_no_backup_anywhere(
    store_config: Config,  # noqa: F811
    edit_config: EditConfig,
    change: str,
) -> None:
    required = {"type": "backup_required", "before_operations": ["update_table_statistics"]}
    stale = {"condition": "backup_age_hours > 24", "targets": ["db"]}
    config = edit_config(
        {"monitoring": {"enabled": True, "alerts": [stale]}},
        maintenance={
            "default_config": {"safety_level": "permissive"},
            "safety_constraints": [required],
        },
    )
    older, newer = _backups(config, 2)
    # The newer one is deleted: the older is the only backup that could count.
    _written(config, newer, "deleted_at", (datetime.now(UTC) - timedelta(hours=1)).isoformat())
    sound = _readings(config)
    assert sound["listed"] == older["id"] and sound["fleet"] == older["created_at"]
    assert sound["metrics"] and sound["alert"] == []
    assert sound["page"] == (older["created_at"], older["created_at"], 1)
    assert not sound["preview"]

    _changed(config, older, change)
    after = _readings(config)
    assert after["listed"] is None and after["fleet"] is None
    assert not after["metrics"] and after["alert"] == ["db"]
    # Still a row the catalog keeps, counted as one; as a backup, counted nowhere.
    assert after["page"] == (None, None, 1) and after["preview"]


def test_a_home_without_its_key_vouches_for_no_backup(store_config: Config) -> None:  # noqa: F811
    """The key file gone (another home pointed at the same store, or a key deleted): no
    row can be checked, so none is restored or counted. Before, a store opened without
    the key checked nothing, and `aishell restore` trusted whatever a row said."""
    config = store_config
    (backup,) = _backups(config, 1)
    (config.home / "plan-signing.key").unlink()
    with pytest.raises(StateTampered) as refused:
        commands.restore(config, backup["id"], "restored", approver=YES)
    assert str(refused.value).startswith(
        f"state.db: backup {backup['id']} cannot be checked: this aishell home has no signing key"
    )
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"] is None
