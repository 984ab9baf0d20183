"""validate_backup restores each MariaDB backup into a scratch database named
aishell_verify_<id> and dumps it again: `targets check` says what the login lacks there
and the one GRANT that gives it, and with that grant alone a backup validates (its
views, triggers, routines and events restored). Before, the check said "ok" and the
backup failed validation with error 1044."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import run_sql, use_target
from tests.services import MYSQL_ADMIN, engine


@pytest.fixture
def own_login(mysql_url: str) -> Iterator[tuple[str, str]]:
    """A user with every right on the scratch database and none elsewhere; (its URL
    without the password, the environment variable that holds it)."""
    user = f"aishell_s{uuid.uuid4().hex[:8]}"
    database = make_url(mysql_url).database
    admin = engine(MYSQL_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'scratch-pw'"))
        conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
    try:
        yield make_url(mysql_url).set(username=user, password=None).render_as_string(False), user
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def _scratch_need(home: Path) -> dict[str, Any]:
    done = CliRunner().invoke(cli, ["targets", "check", "db", "--json"])
    assert done.exit_code == 0, done.output
    needs = json.loads(done.stdout)["needs"]
    return next(n for n in needs if "aishell\\_verify\\_%" in n["privilege"])


def test_the_scratch_databases_grant_is_asked_for_and_is_enough(
    home: Path, own_login: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, user = own_login
    monkeypatch.setenv("AISHELL_SCRATCH_PW", "scratch-pw")
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["password_env"] = "AISHELL_SCRATCH_PW"
    path.write_text(yaml.safe_dump(data))
    owned = make_url(url).set(password="scratch-pw").render_as_string(False)
    run_sql(
        owned,
        "CREATE TABLE t (id int PRIMARY KEY, v text)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "CREATE TABLE u (id int)",
        "CREATE VIEW v AS SELECT id FROM t",
        "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW INSERT INTO u VALUES (NEW.id)",
        "CREATE PROCEDURE pr() SELECT 1",
        "CREATE EVENT ev ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1",
    )

    need = _scratch_need(home)
    assert need["agent"] == "backup" and need["missing"].startswith("it has no SELECT, INSERT")
    assert need["fix"] == (
        "GRANT SELECT, INSERT, CREATE, DROP, ALTER, LOCK TABLES, CREATE VIEW, SHOW VIEW, "
        f"TRIGGER, EVENT, CREATE ROUTINE, ALTER ROUTINE ON `aishell\\_verify\\_%`.* TO '{user}'@'%'"
    )
    run_sql(MYSQL_ADMIN, need["fix"])

    assert _scratch_need(home)["missing"] is None
    done = CliRunner().invoke(cli, ["run", "backup", "--yes"])
    assert done.exit_code == 0, done.output
    assert "proven by restore" in done.output
