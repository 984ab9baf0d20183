"""`aishell backups adopt`: a backup an older aishell recorded (its row unsigned, as
revision 0011_backup_seal leaves every row it finds) is refused by restore, validation
and retention; a person adopts it, and it is restored again. Adopting reads the file
again and signs the row only when the file is what the row records, the person
confirmed (or gave --yes), and the row is still as it was checked.

Before, nothing could sign such a row: after an upgrade every older backup was refused
for good, however sound its file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.policy.approvers import Prompting
from tests.handlers.backup.test_backup_sealed import (  # noqa: F401 (a fixture)
    _backups,
    _written,
    store_config,
)

YES = Prompting(ask=lambda _request: "yes")
WIDE = {"COLUMNS": "250"}


def _legacy(config: Config, backup: dict[str, Any]) -> None:
    """The row as an aishell before 0011_backup_seal left it: no signature."""
    _written(config, backup, "seal", None)


def _adopt(*args: str) -> Any:
    return CliRunner().invoke(cli, ["backups", "adopt", *args], env=WIDE)


def _events(config: Config) -> list[dict[str, Any]]:
    engine = create_engine(config.state_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT run_id, data FROM events WHERE kind = 'backup_adopted'")
            ).all()
    finally:
        engine.dispose()
    return [{"run_id": run_id, **json.loads(data)} for run_id, data in found]


def test_a_legacy_backup_is_adopted_and_then_restored(store_config: Config) -> None:  # noqa: F811
    config = store_config
    (backup,) = _backups(config, 1)
    _legacy(config, backup)
    adopt = f"aishell backups adopt {backup['id']}"

    with pytest.raises(StateTampered) as refused:
        commands.restore(config, backup["id"], "restored", approver=YES)
    assert "carries no signature" in str(refused.value) and adopt in str(refused.value)
    listed = CliRunner().invoke(cli, ["backups", "list"], env=WIDE)
    assert listed.exit_code == 0 and adopt in " ".join(listed.output.split())
    (problem,) = [
        p for p in commands.doctor(config, targets=["db"])["problems"] if adopt in p["problem"]
    ]
    assert problem["fix"].startswith(f"`{adopt}` reads its file again")

    # Nobody at a terminal to confirm, and no --yes: what would be signed is shown,
    # nothing is signed.
    asked = _adopt(str(backup["id"]))
    assert asked.exit_code == 2 and "pass --yes" in asked.output
    assert backup["sha256"] in asked.output and _events(config) == []
    with pytest.raises(StateTampered):
        commands.restore(config, backup["id"], "restored", approver=YES)

    done = _adopt(str(backup["id"]), "--yes", "--json")
    assert done.exit_code == 0, done.output
    said = json.loads(done.output)
    assert said["adopted"] == [backup["id"]] and said["refused"] == []
    assert said["checked"][0]["sha256"] == backup["sha256"]
    (event,) = _events(config)
    assert event["backup_id"] == backup["id"] and event["sha256"] == backup["sha256"]
    assert event["run_id"] == "-" and event["by"]

    restored = commands.restore(config, backup["id"], "restored", approver=YES)
    assert restored.status == "completed", restored.error
    assert commands.backup_catalog(config)["newest_restorable"]["db"]["backup_id"] == backup["id"]
    again = _adopt(str(backup["id"]), "--yes", "--json")
    assert again.exit_code == 0 and json.loads(again.output)["already_signed"] == [backup["id"]]


@pytest.mark.parametrize("change", ["bytes", "cut short", "gone", "manifest"])
def test_adopt_refuses_a_backup_whose_file_is_not_what_its_row_records(
    store_config: Config,  # noqa: F811
    change: str,
) -> None:
    config = store_config
    (backup,) = _backups(config, 1)
    _legacy(config, backup)
    path = Path(backup["path"])
    if change == "bytes":  # the same size, other bytes
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    elif change == "cut short":
        path.write_bytes(path.read_bytes()[:-10])
    elif change == "gone":
        path.unlink()
    else:
        manifest = path.with_name(path.name + ".manifest.json")
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "tables": {}}))
    expected = {
        "bytes": "its file's sha256",
        "cut short": "bytes, the row records",
        "gone": "its file is missing; not adopted",
        "manifest": "the manifest beside its file is not the one its row records",
    }[change]

    done = _adopt(str(backup["id"]), "--yes")
    assert done.exit_code == 1
    lines = [line for line in done.output.splitlines() if expected in line]
    assert len(lines) == 1 and lines[0].startswith(f"Backup {backup['id']} ({path})")
    assert _events(config) == []
    with pytest.raises(StateTampered):
        commands.restore(config, backup["id"], "restored", approver=YES)


def test_adopt_signs_only_rows_never_signed_and_only_as_they_were_checked(
    store_config: Config,  # noqa: F811
) -> None:
    config = store_config
    changed, legacy, gone = _backups(config, 3)
    # Signed, then its path pointed elsewhere: a change, not a row from before signing.
    _written(config, changed, "created_at", "2020-01-01T00:00:00+00:00")
    _legacy(config, legacy)
    _legacy(config, gone)
    Path(gone["path"]).unlink()

    checked = commands.check_adoption(config, (), all_unsigned=True)
    assert [r["id"] for r in checked["ready"]] == [legacy["id"]]
    assert [r["id"] for r in checked["refused"]] == [gone["id"]]
    refused = commands.check_adoption(config, (changed["id"],))["refused"]
    assert "does not match its signature" in refused[0]["why"]
    assert refused[0]["why"].endswith("; it is not adopted")

    # The row changed after it was checked: what was shown is not what would be signed.
    _written(config, legacy, "verified_at", "2020-01-01T00:00:00+00:00")
    done = commands.adopt_backups(config, checked["ready"])
    assert done["adopted"] == [] and "changed since it was checked" in done["refused"][0]["why"]
    with pytest.raises(StateTampered):
        commands.restore(config, legacy["id"], "restored", approver=YES)
