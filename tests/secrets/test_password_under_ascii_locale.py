"""A password beyond ASCII logs in whatever the locale: under an ASCII one (LC_ALL=C
with Python's UTF-8 mode off, as a service may start aishell) os.environ held the
variable's UTF-8 bytes as surrogates, which no driver can send ("internal error"), and
the private login file a backup's client program gets could not be written at all. Now
a variable's value is read as UTF-8, the login files are written as UTF-8, and MariaDB
(which checks the password) lets aishell and mariadb-dump in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.secrets.test_password_audit import ENV_NAME, TIMEOUT, my_login, set_targets


def _ascii_locale(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", **extra}
    return subprocess.run(
        [sys.executable, "-m", "aishell", *argv, "--json"],
        capture_output=True,
        timeout=TIMEOUT,
        env=env,
        text=True,
        encoding="utf-8",
    )


def test_a_password_beyond_ascii_logs_in_under_an_ascii_locale(home: Path) -> None:
    password = "pässwörd-☃-Zq8"
    with my_login(password) as url:
        set_targets(home, {"db": {"url": url, "password_env": ENV_NAME}})
        checked = _ascii_locale("targets", "check", "db", **{ENV_NAME: password})
        assert checked.returncode == 0, checked.stdout + checked.stderr
        ran = _ascii_locale("run", "backup", "--yes", **{ENV_NAME: password})
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert json.loads(ran.stdout)["status"] == "completed"
        set_targets(home, {"db": {"url": url}})  # the client's own variable
        checked = _ascii_locale("targets", "check", "db", MYSQL_PWD=password)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert password not in checked.stdout + checked.stderr + ran.stdout + ran.stderr
