"""packaging/: the systemd units and the crontab line that keep the scheduler running are
valid, and run an aishell command that exists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import scheduling
from aishell.cli import cli

PACKAGING = Path(__file__).resolve().parent.parent / "packaging"
INSTALLED = "/opt/aishell/bin/aishell"  # where the install notes put aishell
HOME = "AISHELL_HOME=/var/lib/aishell"


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
