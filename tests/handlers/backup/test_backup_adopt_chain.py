"""`aishell backups adopt` of an incremental backup: restore takes its chain link by link
and refuses a parent the home's key did not sign as it is, or whose file changed. So
adopt signs an incremental only when each parent is signed as it is with its file
unchanged, or is adopted in the same command; it refuses any other, naming the parent
and the command that adopts them together.

Before, adopt signed the incremental alone, and restore then refused it at its parent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import StateTampered
from aishell.policy.approvers import PreApproved, Prompting
from tests.handlers.backup.test_backup_sealed import (  # noqa: F401 (a fixture)
    _backups,
    _written,
    store_config,
)

YES = Prompting(ask=lambda _request: "yes")
WIDE = {"COLUMNS": "250"}


def _chain(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """A full backup of `db`, proven by a restore, and an incremental built on it."""
    (full,) = _backups(config, 1)
    done = commands.run_job(config, "backup", {"type": "incremental"}, approver=PreApproved())
    assert done.status == "completed", done.error
    (inc,) = [b for b in commands.list_backups(config, "db") if b["id"] != full["id"]]
    assert inc["kind"] == "incremental" and inc["manifest"]["parent"] == full["path"]
    return full, inc


def _adopt(*args: str) -> Any:
    return CliRunner().invoke(cli, ["backups", "adopt", *args], env=WIDE)


def _said(output: str) -> str:
    return " ".join(output.split())


def test_an_incremental_is_adopted_with_its_unsigned_parent(
    store_config: Config,  # noqa: F811
) -> None:
    config = store_config
    full, inc = _chain(config)
    _written(config, full, "seal", None)
    _written(config, inc, "seal", None)

    alone = _adopt(str(inc["id"]), "--yes")
    assert alone.exit_code == 1, alone.output
    together = f"`aishell backups adopt {full['id']} {inc['id']}`"
    said = _said(alone.output)
    assert f"Backup {inc['id']} builds on backup {full['id']}, which this home's key" in said
    assert together in said
    with pytest.raises(StateTampered):
        commands.restore(config, inc["id"], "restored", approver=YES)

    done = _adopt(str(inc["id"]), str(full["id"]), "--yes", "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["adopted"] == [full["id"], inc["id"]] and result["refused"] == []
    assert [c["builds_on"] for c in result["checked"]] == [None, full["id"]]
    restored = commands.restore(config, inc["id"], "restored", approver=YES)
    assert restored.status == "completed", restored.error


@pytest.mark.parametrize("parent", ["file changed", "row deleted", "not adoptable"])
def test_adopt_refuses_an_incremental_whose_parent_restore_would_refuse(
    store_config: Config,  # noqa: F811
    parent: str,
) -> None:
    config = store_config
    full, inc = _chain(config)
    _written(config, inc, "seal", None)
    path = Path(full["path"])
    args = [str(inc["id"])]
    if parent == "file changed":  # signed, its file's bytes changed since
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        expected = f"builds on backup {full['id']}, whose file is not what its row records"
    elif parent == "row deleted":
        _written(config, full, "deleted_at", "2020-01-01T00:00:00+00:00")
        expected = f"builds on {path}, which no kept backup row records"
    else:  # unsigned, its file gone: --all-unsigned refuses it, and so its incremental
        _written(config, full, "seal", None)
        path.unlink()
        args = ["--all-unsigned"]
        expected = f"builds on backup {full['id']}, which is not adopted"

    done = _adopt(*args, "--yes", "--json")
    assert done.exit_code == 1, done.output
    result = json.loads(done.output)
    assert result["adopted"] == []
    (why,) = [r["why"] for r in result["refused"] if r["id"] == inc["id"]]
    assert why.startswith(f"Backup {inc['id']} {expected}") and why.endswith("not adopted")
    with pytest.raises(StateTampered):
        commands.restore(config, inc["id"], "restored", approver=YES)
