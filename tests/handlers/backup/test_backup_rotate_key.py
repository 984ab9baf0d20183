"""`aishell plan rotate-key` leaves every kept backup row signed with the old key, which
then counts nowhere (restore refuses it, no backup age counts it) until a person adopts
it; so rotate-key says how many rows that is and the command that adopts them, in its
text and its --json, and `backups adopt --all-unsigned` adopts a row the old key signed.

Before, rotate-key said nothing of backups: the newest restorable backup of each target
was gone from every listing, the view and the alerts, with no word why."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.policy.approvers import Prompting
from tests.handlers.backup.test_backup_sealed import (  # noqa: F401 (a fixture)
    _backups,
    store_config,
)

YES = Prompting(ask=lambda _request: "yes")
WIDE = {"COLUMNS": "250"}
ADOPT = "aishell backups adopt --all-unsigned"


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=WIDE)


def test_rotate_key_names_the_backup_rows_to_adopt(store_config: Config) -> None:  # noqa: F811
    config = store_config
    backups = _backups(config, 2)
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"]

    rotated = _run("plan", "rotate-key", "--json")
    assert rotated.exit_code == 0, rotated.output
    said = json.loads(rotated.output)
    assert said["backups_to_adopt"] == 2 and said["adopt_command"] == ADOPT
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"] is None

    # Signed with a key the home no longer has, the rows are adopted as unsigned ones are.
    adopted = _run("backups", "adopt", "--all-unsigned", "--yes", "--json")
    assert adopted.exit_code == 0, adopted.output
    assert json.loads(adopted.output)["adopted"] == [b["id"] for b in backups]
    newest = commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"]
    assert newest == backups[-1]["id"]
    done = commands.restore(config, backups[-1]["id"], "restored", approver=YES)
    assert done.status == "completed", done.error

    again = _run("plan", "rotate-key")
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "2 kept backup row(s) are not signed with the new key" in text
    assert f"until `{ADOPT}` signs those whose files still match" in text
