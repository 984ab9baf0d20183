"""A password written by hand into a target's URL, in a config file others may read: doctor
said nothing, and every local user had the login. It names the file, its mode and the
keys whose password it holds (never the password), with the chmod that closes it; a
file only its owner reads is no problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import use_target

PASSWORD = "Vq3-open-config-Pw"


def _problems() -> tuple[str, list[dict[str, str]]]:
    done = CliRunner().invoke(cli, ["doctor", "--json"])
    return done.stdout, json.loads(done.stdout)["problems"]


@pytest.mark.parametrize("where", ["user part", "query"])
def test_doctor_names_a_readable_config_holding_a_password(
    home: Path, pg_url: str, where: str
) -> None:
    url = make_url(pg_url)
    if where == "user part":
        with_password = url.set(password=PASSWORD).render_as_string(hide_password=False)
    else:
        with_password = f"{pg_url}?password={PASSWORD}"
    use_target(home, with_password)
    path = home / "config" / "aishell.yaml"
    path.chmod(0o644)
    out, problems = _problems()
    assert PASSWORD not in out
    said = f"{path} is mode 0644 and holds the password of targets.db.url: another user may read it"
    [found] = [p for p in problems if p["problem"] == said]
    assert found["fix"].startswith(f"chmod 600 {path}, and move the password to password_env")
    path.chmod(0o600)
    out, problems = _problems()
    assert [p for p in problems if "holds the password" in p["problem"]] == [], problems
