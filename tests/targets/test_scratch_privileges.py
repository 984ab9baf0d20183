"""validate_backup restores each MariaDB backup into a scratch database named
aishell_verify_<id> and dumps it again: `targets check` says what the login lacks there
and the one GRANT that gives it, and with that grant alone a backup validates (its
views, triggers, routines and events restored). Before, the check said "ok" and the
backup failed validation with error 1044."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import run_sql, use_target
from tests.services import MYSQL_ADMIN


def _scratch_need(home: Path) -> dict[str, Any]:
    done = CliRunner().invoke(cli, ["targets", "check", "db", "--json"])
    assert done.exit_code == 0, done.output
    needs = json.loads(done.stdout)["needs"]
    return next(n for n in needs if "aishell\\_verify\\_%" in n["privilege"])


def test_the_scratch_databases_grant_is_asked_for_and_is_enough(
    home: Path, mysql_user: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password, url = mysql_user
    # Every right on its own database, none on the scratch ones.
    run_sql(MYSQL_ADMIN, f"REVOKE ALL ON `aishell\\_verify\\_%`.* FROM '{user}'@'%'")
    monkeypatch.setenv("AISHELL_SCRATCH_PW", password)
    use_target(home, url)
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["password_env"] = "AISHELL_SCRATCH_PW"
    path.write_text(yaml.safe_dump(data))
    owned = make_url(url).set(password=password).render_as_string(False)
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
