"""A notify command starts with no password source in its environment: neither the
variables the config names (password_env, token_env) nor those the client libraries
read a password or a login from (PGPASSWORD, MYSQL_PWD, PGPASSFILE, ...)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from aishell.config.models import NotificationsConfig
from aishell.scheduling import notify

# Every variable through which a program could find a database password or login.
PASSWORD_SOURCES = {
    "PGPASSWORD": "pg-secret",
    "MYSQL_PWD": "my-secret",
    "PGPASSFILE": "/tmp/some-pgpass",
    "PGSERVICEFILE": "/tmp/some-services",
}

_DUMP_ENV = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"


def test_no_password_variable_reaches_a_notify_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PASSWORD_SOURCES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AISHELL_NOTIFY_KEPT", "kept")
    seen = tmp_path / "env.json"
    command = f"{sys.executable} -c {shlex.quote(_DUMP_ENV)} {seen}"
    failures = notify.deliver(
        NotificationsConfig(command=command), {"run_id": "r1", "status": "failed"}
    )
    assert failures == []
    env = json.loads(seen.read_text())
    assert env.get("AISHELL_NOTIFY_KEPT") == "kept"  # the rest of the environment stays
    reached = sorted(name for name in PASSWORD_SOURCES if name in env)
    assert reached == []
    assert not any(value in env.values() for value in PASSWORD_SOURCES.values())
