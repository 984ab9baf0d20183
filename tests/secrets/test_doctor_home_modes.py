"""`aishell doctor` names the home's own files when they are more open than they may be:
a home or config folder others may write to (they could put a config or a signing key of
their own in its place), a state store or plan-signing key others may read (the runs'
records; a key that signs plans `apply` takes). A home as aishell makes it is none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_the_state_stores_copies_opened_up_are_named_as_the_store_is(
    home: Path, demo_db: Path
) -> None:
    # A copy holds every run the store held: `doctor --backup-state` writes one, an
    # upgrade another (state.db.before-<revision>); a copy moved about and back loses
    # its mode as easily as the store does.
    made = CliRunner().invoke(cli, ["doctor", "--backup-state"])
    assert made.exit_code == 0, made.output
    (copy,) = home.glob("state.db.backup-*")
    assert copy.stat().st_mode & 0o777 == 0o600
    code, problems = _doctor()
    assert code == 0 and problems == [], problems
    copy.chmod(0o644)
    code, problems = _doctor()
    assert code != 0
    named = {p["problem"].split(" is mode ")[0]: p for p in problems}
    assert named[str(copy)]["fix"] == f"chmod 600 {copy}", problems
    assert "mode 0644: another user may read the runs' records" in named[str(copy)]["problem"]


def test_in_the_users_folders_the_config_and_state_folders_opened_up_are_named(
    tmp_path: Path,
) -> None:
    # Without a home of its own, the config, the agents' files and the state store each
    # have a folder apart from the data folder: whoever may write in them may put a
    # config of their own (a file they own, at 0644, is read), an agent's file, or a
    # store of their own in place.
    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AISHELL_", "XDG_"))}
    env |= {"HOME": str(user)}

    def doctor() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "aishell", "doctor", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        return [p["fix"] for p in json.loads(done.stdout)["problems"]]

    made = subprocess.run([sys.executable, "-m", "aishell", "init"], env=env, capture_output=True)
    assert made.returncode == 0, made.stderr
    config, state = user / ".config" / "aishell", user / ".local" / "state" / "aishell"
    assert (config / "aishell.yaml").is_file() and (state / "state.db").is_file()
    assert not [fix for fix in doctor() if fix.startswith("chmod")]
    folders = (config, config / "agents", state)
    for folder in folders:
        folder.chmod(0o777)
    try:
        fixes = doctor()
    finally:
        for folder in folders:
            folder.chmod(0o700)
    for folder in folders:
        assert f"chmod go-w {folder}" in fixes, fixes
