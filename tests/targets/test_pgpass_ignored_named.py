"""A password file libpq ignores for its mode (others may read or write it): aishell
ignores it too, and `doctor` said only "password from none", as if there were no file.
Now the login names the file, its mode and the chmod that makes it read, as it does for
a world-writable ~/.my.cnf."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import use_target


def _login(home: Path) -> str:
    done = CliRunner().invoke(cli, ["doctor", "--target", "db", "--json"])
    [target] = json.loads(done.stdout)["targets"]
    return str(target["login"]["password_from"])


@pytest.mark.parametrize("how", ["~/.pgpass", "PGPASSFILE"])
def test_a_password_file_others_may_read_is_named_as_ignored(
    how: str, pg_url: str, home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(pg_url)
    passfile = user_home / (".pgpass" if how == "~/.pgpass" else "passwords")
    passfile.write_text(f"{url.host}:*:*:{url.username}:Kx4-ignored-pw\n")
    if how == "PGPASSFILE":
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    use_target(home, pg_url)
    passfile.chmod(0o640)
    named = how if how == "~/.pgpass" else f"PGPASSFILE {passfile}"
    assert _login(home) == (
        f"none ({named} is mode 0640, which others may use: ignored, as libpq ignores it; "
        f"chmod 600 {passfile})"
    )
    passfile.chmod(0o600)
    assert _login(home) == named
