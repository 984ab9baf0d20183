"""`plan ... --out -` is refused in one line, before planning: no path option of aishell
takes `-` for a standard stream (`apply` reads a regular file), so it used to save the
signed plan into a file named `-` in the working folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import UsageError

REFUSED = (
    "Error: --out -: a plan is saved to a file for `aishell apply FILE`, not to standard "
    "output; give a file's name (--out plan.json)"
)


def test_out_dash_is_refused_and_no_file_named_dash_is_made(
    demo_db: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cwd-out-dash"
    folder.mkdir()
    monkeypatch.chdir(folder)
    done = CliRunner().invoke(cli, ["plan", "maintenance", "--type", "quick", "--out", "-"])
    assert done.exit_code == 2, done.output
    assert done.output.strip().splitlines() == [REFUSED]
    assert list(folder.iterdir()) == []
    # The same plan saved to a file named as a file is saved, and applies.
    saved = CliRunner().invoke(cli, ["plan", "maintenance", "--type", "quick", "--out", "p.json"])
    assert saved.exit_code == 0, saved.output
    assert [p.name for p in folder.iterdir()] == ["p.json"]


def test_the_library_refuses_it_before_planning(home: Path) -> None:
    """plan_job is what Python callers use: refused before the target is opened (a
    target that does not exist would say so otherwise)."""
    config = load_config(home=home)
    with pytest.raises(UsageError, match="^--out -: a plan is saved to a file"):
        commands.plan_job(
            config, "maintenance", {"type": "quick"}, "no_such_target_dash", out=Path("-")
        )
