"""`aishell doctor` names the home's own files when they are more open than they may be:
a home or config folder others may write to (they could put a config or a signing key of
their own in its place), a state store or plan-signing key others may read (the runs'
records; a key that signs plans `apply` takes). A home as aishell makes it is none."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli


def _doctor() -> tuple[int, list[dict[str, str]]]:
    done = CliRunner().invoke(cli, ["doctor", "--json"])
    return done.exit_code, json.loads(done.stdout)["problems"]


def test_the_homes_own_files_opened_up_are_named_with_the_chmod_that_closes_them(
    home: Path, demo_db: Path
) -> None:
    assert (
        CliRunner().invoke(cli, ["plan", "maintenance", "--out", str(home / "p.json")]).exit_code
        == 0
    )
    code, problems = _doctor()
    assert code == 0 and problems == [], problems  # as aishell made them
    state, key = home / "state.db", home / "plan-signing.key"
    assert state.is_file() and key.is_file()
    home.chmod(0o777)
    state.chmod(0o644)
    key.chmod(0o640)
    try:
        code, problems = _doctor()
    finally:
        home.chmod(0o700)
    assert code != 0
    named = {p["problem"].split(" is mode ")[0]: p for p in problems}
    assert named[str(home)]["fix"] == f"chmod go-w {home}"
    assert "others may replace what it holds" in named[str(home)]["problem"]
    assert named[str(state)]["fix"] == f"chmod 600 {state}"
    assert "mode 0644: another user may read the runs' records" in named[str(state)]["problem"]
    assert named[str(key)]["fix"] == f"chmod 600 {key}"
    assert "sign a plan `aishell apply` takes" in named[str(key)]["problem"]
