"""packaging/: the systemd units and the crontab line that keep the scheduler running are
valid, and run an aishell command that exists."""

from __future__ import annotations

import functools
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.resources import bundled_packaging_dir
from aishell.scheduling import serve as scheduling

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
INSTALLED = "/opt/aishell/bin/aishell"  # where the install notes put aishell
HOME = "AISHELL_HOME=/var/lib/aishell"
NOBODY = pwd.getpwnam("nobody")  # an unprivileged user standing in for `aishell`


def runs_an_aishell_command(argv: list[str]) -> None:
    """argv is aishell at the documented place, with a command line the CLI accepts."""
    assert argv[0] == INSTALLED, argv
    done = CliRunner().invoke(cli, [*argv[1:], "--help"], prog_name="aishell")
    assert done.exit_code == 0, done.output
    assert done.output.startswith(f"Usage: aishell {' '.join(argv[1:])} "), done.output


def unit(name: str) -> str:
    return (PACKAGING / name).read_text()


def test_the_service_serves_the_schedules_of_the_home_under_var_lib():
    service = unit("aishell-scheduler.service")
    [exec_start] = re.findall(r"^ExecStart=(.+)$", service, re.M)
    argv = shlex.split(exec_start)
    assert argv[1:] == ["schedule", "serve"]
    runs_an_aishell_command(argv)
    # The home it names is the state folder systemd makes for it.
    assert f"Environment={HOME}\n" in service and "StateDirectory=aishell\n" in service
    assert re.search(r"^Unit=aishell-scheduler\.service$", unit("aishell-scheduler.timer"), re.M)


def test_systemd_analyze_verifies_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the units are checked above only")
    # verify needs ExecStart's program to exist: this test's own aishell stands in for
    # the one the install notes put at /opt/aishell.
    here = Path(sys.executable).parent / "aishell"
    assert here.is_file(), f"no aishell console script beside {sys.executable}"
    for name in ("aishell-scheduler.service", "aishell-scheduler.timer"):
        (tmp_path / name).write_text(unit(name).replace(INSTALLED, str(here)))
    done = subprocess.run(
        [analyze, "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # verify exits 0 on unknown keys too, having only warned: any output is a finding.
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )


def test_the_crontab_line_parses_with_the_schedulers_own_parser():
    lines = [
        line
        for line in (PACKAGING / "aishell.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    settings = [line for line in lines if re.match(r"^[A-Z_]+=", line)]
    [entry] = [line for line in lines if line not in settings]
    assert HOME in settings
    fields = entry.split(None, 6)
    cron, user, command = " ".join(fields[:5]), fields[5], fields[6]
    # The scheduler's parser (crontab's five fields) takes them: every five minutes.
    trigger = scheduling.trigger(cron, "UTC")
    assert trigger.crontab.minutes == tuple(range(0, 60, 5))
    assert trigger.crontab.hours == tuple(range(24)) and len(trigger.crontab.days) == 31
    assert user == "aishell"
    words = shlex.split(command)
    redirect = words.index(">>/var/lib/aishell/scheduler.log")
    assert words[redirect:] == [">>/var/lib/aishell/scheduler.log", "2>&1"]
    runs_an_aishell_command(words[:redirect])


# --- the install steps, in the order written, in a scratch root ----------------------


def install_steps() -> list[str]:
    """The commands of the service file's install comment, in their order."""
    lines = unit("aishell-scheduler.service").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Install (as root)"))
    steps = []
    for line in lines[start + 1 :]:
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            steps.append(line[4:].strip())
    return steps


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A folder standing in for /, that an unprivileged user may pass through (pytest's
    own folders are their owner's alone)."""
    root = Path(tempfile.mkdtemp(prefix="aishell-root-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_service_user(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """aishell run as `sudo -u aishell AISHELL_HOME=/var/lib/aishell` would, in `root`:
    the unprivileged user nobody stands in for the aishell user useradd makes."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root / "var/lib/aishell"),
        "AISHELL_HOME": str(root / "var/lib/aishell"),
        "AISHELL_SYSTEM_DIR": str(root / "etc/aishell"),
        "NO_COLOR": "1",
    }
    # setpriv (util-linux) as sudo -u would: that user's ids, no other groups, no
    # capabilities left.
    as_nobody = ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}"]
    if not _nobody_can_import(tuple(as_nobody)):
        # A checkout in a private folder (mktemp -d is 0700): the stand-in user cannot
        # read aishell itself, which an installed /opt/aishell would let it.
        pytest.skip(f"the user nobody cannot read this checkout of aishell ({sys.prefix})")
    return subprocess.run(
        [*as_nobody, "--clear-groups", sys.executable, "-m", "aishell", *argv],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@functools.lru_cache(maxsize=1)
def _nobody_can_import(as_nobody: tuple[str, ...]) -> bool:
    done = subprocess.run(
        [*as_nobody, "--clear-groups", sys.executable, "-c", "import aishell.cli"],
        env={"PATH": "/usr/bin:/bin"},
        cwd="/",
        capture_output=True,
        timeout=120,
    )
    return done.returncode == 0


needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="running as another user needs root and setpriv (the steps run as root)",
)


@needs_root
def test_the_install_steps_in_the_order_written_make_a_home_the_service_user_owns(
    scratch_root: Path,
) -> None:
    steps = install_steps()
    made = next(i for i, s in enumerate(steps) if s.startswith("install -d"))
    init = next(i for i, s in enumerate(steps) if s.endswith("/opt/aishell/bin/aishell init"))
    user = next(i for i, s in enumerate(steps) if s.startswith("useradd"))
    assert user < made < init, steps  # the home exists before aishell init runs in it
    for step in steps:
        argv = shlex.split(step)
        if argv[0] == "install":
            # install -d -m 0700 -o aishell -g aishell /var/lib/aishell, in the scratch root
            # and for the user standing in for aishell.
            assert argv[:7] == ["install", "-d", "-m", "0700", "-o", "aishell", "-g"], argv
            home = scratch_root / argv[-1].lstrip("/")
            assert argv[-1] == "/var/lib/aishell"
            subprocess.run(
                ["install", "-d", "-m", "0700", "-o", str(NOBODY.pw_uid), "-g",
                 str(NOBODY.pw_gid), str(home)],
                check=True,
            )  # fmt: skip
        elif argv[0] == "cp":
            # The units, from where the wheel puts them (this checkout's packaging/ here).
            *sources, target = argv[1:]
            assert [Path(s).name for s in sources] == ["aishell-scheduler.*"], sources
            assert sources[0].endswith("/aishell/_bundled/packaging/aishell-scheduler.*")
            folder = scratch_root / target.lstrip("/")
            folder.mkdir(parents=True)
            for each in bundled_packaging_dir().glob("aishell-scheduler.*"):
                shutil.copy(each, folder)
        elif argv[:3] == ["sudo", "-u", "aishell"]:
            assert argv[3] == HOME and argv[4] == INSTALLED, argv
            done = as_service_user(scratch_root, *argv[5:])
            assert done.returncode == 0, done.stdout + done.stderr
    units = sorted(p.name for p in (scratch_root / "etc/systemd/system").iterdir())
    assert units == ["aishell-scheduler.service", "aishell-scheduler.timer"]
    home = scratch_root / "var/lib/aishell"
    assert (home / "config" / "aishell.yaml").is_file() and (home / "state.db").is_file()
    for path in (home, *home.rglob("*")):
        info = path.lstat()
        assert info.st_uid == NOBODY.pw_uid, path
        assert stat.S_IMODE(info.st_mode) == (0o700 if path.is_dir() else 0o600), path


@needs_root
@pytest.mark.parametrize("missing", ["home", "writable home"])
def test_init_in_a_home_the_user_cannot_write_is_one_line(scratch_root: Path, missing: str) -> None:
    lib = scratch_root / "var/lib"
    lib.mkdir(parents=True, mode=0o755)
    if missing == "writable home":  # made, but by root and for root
        (lib / "aishell").mkdir(mode=0o755)
    done = as_service_user(scratch_root, "init")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in done.stderr, done.stderr
    home = lib / "aishell"
    assert lines[0].startswith(f"Error: The home {home} cannot be written by nobody"), lines
    assert f"install -d -m 0700 -o nobody {home}" in lines[0], lines
    assert not (home / "config").exists()
