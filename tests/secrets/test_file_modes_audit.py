"""Private whatever the umask: a home aishell makes itself (from nothing: `--home` or
AISHELL_HOME pointing nowhere yet, or the user's own folders), and everything in it
(config `init` writes, state.db with its -wal and -shm, the plan-signing key, the cache,
backups and manifests), plus a server backup under a password-authenticated role and the
private login files its client programs get, are its owner's alone: folders 0700, files
0600 (README: "Backups are private by default"). tests/vocabularies/test_private_files.py
checks what commands make inside a home pytest made; this checks the home itself."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.secrets.test_password_audit import (
    ENV_NAME,
    awkward_password,
    pg_login,
    set_targets,
)

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

TIMEOUT = 300
# The demo's files are what is judged, not its size (200,000 logs, 5,000 users and 60,000
# orders by default).
DEMO = ("demo", "--log-rows", "1000", "--users", "100", "--orders", "500")


def aishell(env: dict[str, str], umask: int, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aishell", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        umask=umask,
        env=env,
    )
    assert done.returncode == 0, (argv, done.stdout + done.stderr)
    return done.stdout


def _walk(root: Path) -> dict[str, int]:
    """Every path under root (root too) with its whole st_mode, each looked at once."""
    found = {root: root.lstat().st_mode, **{p: p.lstat().st_mode for p in root.rglob("*")}}
    return {str(p): m for p, m in found.items()}


def _shown(found: dict[str, int]) -> dict[str, str]:
    return {p: f"{stat.S_IMODE(m):04o}" for p, m in found.items()}


def _too_open(found: dict[str, int]) -> dict[str, str]:
    wanted = {p: 0o700 if stat.S_ISDIR(m) else 0o600 for p, m in found.items()}
    return {p: m for p, m in _shown(found).items() if int(m, 8) != wanted[p]}


def modes(root: Path) -> dict[str, str]:
    return _shown(_walk(root))


def too_open(root: Path) -> dict[str, str]:
    return _too_open(_walk(root))


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_a_home_aishell_makes_is_private_from_its_first_folder(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "made" / "home"
    env = {**os.environ, "AISHELL_HOME": str(home)}
    aishell(env, umask, "init")
    aishell(env, umask, *DEMO)
    # Seen while they run too: state.db-wal and -shm exist only while it is open.
    seen: dict[str, str] = {}
    open_ones: dict[str, str] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                found = _walk(home)  # one look serves both
            except OSError:  # a file gone between listing and looking
                continue
            seen.update(_shown(found))
            open_ones.update(_too_open(found))
            time.sleep(0.01)  # a store stays open for far longer

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        aishell(env, umask, "run", "maintenance", "--type", "quick", "--yes")
        aishell(env, umask, "run", "backup", "--yes")
        aishell(env, umask, "plan", "maintenance", "--type", "quick", "--out", str(home / "p.json"))
        aishell(env, umask, "doctor")
    finally:
        stop.set()
        thread.join()
    assert not open_ones, open_ones
    names = {Path(p).name for p in seen}
    wanted = {"state.db", "state.db-wal", "state.db-shm", "plan-signing.key", "aishell.yaml"}
    assert wanted | {"cache", "backups", "p.json"} <= names, sorted(names)
    assert any(n.endswith(".manifest.json") for n in names), sorted(names)
    assert not too_open(home), too_open(home)


def test_the_users_own_folders_are_private_under_an_open_umask(tmp_path: Path) -> None:
    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if k not in ("AISHELL_HOME", "XDG_CONFIG_HOME")}
    env |= {"HOME": str(user)}
    for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env.pop(name, None)
    aishell(env, 0o000, "init")
    aishell(env, 0o000, *DEMO)
    aishell(env, 0o000, "run", "backup", "--yes")
    made = modes(user)
    assert any(p.endswith("state.db") for p in made) and any("backups" in p for p in made)
    assert not too_open(user), too_open(user)


def test_a_server_backup_under_a_password_is_private_and_so_are_its_login_files(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pg_service.conf and pgpass a client program is handed hold the password: each
    is 0600 in a folder of 0700 while it exists, under umask 000."""
    password = awkward_password()
    monkeypatch.setenv(ENV_NAME, password)
    seen: dict[str, str] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for folder in Path("/tmp").glob("aishell-login-*"):
                try:
                    for path in [folder, *folder.iterdir()]:
                        seen[str(path)] = f"{stat.S_IMODE(path.lstat().st_mode):04o}"
                except OSError:
                    continue
            time.sleep(0.005)  # a client program's folder lives for 250 ms and more

    with pg_login(password) as url:
        set_targets(home, {"db": {"url": url, "password_env": ENV_NAME}})
        before = set(modes(home))
        # Killed runs elsewhere leave folders of their own: this backup's are new.
        earlier = {str(folder) for folder in Path("/tmp").glob("aishell-login-*")}
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            aishell(os.environ.copy(), 0o000, "run", "backup", "--yes")
        finally:
            stop.set()
            thread.join()
    made = {p: m for p, m in modes(home).items() if p not in before}
    assert any(p.endswith(".manifest.json") for p in made), sorted(made)
    wrong = {p: m for p, m in made.items() if m != ("0700" if Path(p).is_dir() else "0600")}
    assert not wrong, wrong
    assert any(p.endswith("pgpass") and str(Path(p).parent) not in earlier for p in seen), seen
    wrong = {
        p: m
        for p, m in seen.items()
        if m != ("0700" if "." not in Path(p).name and not p.endswith("pgpass") else "0600")
    }
    assert not wrong, wrong
