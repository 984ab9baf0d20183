"""A MariaDB login without the PROCESS privilege sees only its own sessions: when a lock
it waited for is held by another, the message says the holder is a session it cannot
see, and why, never that the holder "has since gone" while it still holds the lock.

The lock is held by a session the test opens (LOCK TABLES ... WRITE) on a scratch
database of its own, for a user of its own without PROCESS."""

from __future__ import annotations

import uuid
from pathlib import Path

import pymysql
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell.cli import cli
from tests.helpers import use_target
from tests.services import MYSQL_ADMIN, admin_engine, scratch_mysql


def test_a_holder_the_login_cannot_see_is_named_so(home: Path) -> None:
    user = f"aishell_np_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    with scratch_mysql() as url:
        database = make_url(url).database
        with admin.connect() as conn:
            conn.execute(text(f"USE `{database}`"))
            conn.execute(text("CREATE TABLE app_logs (id INT PRIMARY KEY, created_at DATETIME)"))
            conn.execute(
                text("INSERT INTO app_logs SELECT seq, NOW() - INTERVAL seq DAY FROM seq_1_to_100")
            )
            conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
        a = make_url(url)
        holder = pymysql.connect(
            host=a.host, port=a.port or 3306, user=a.username, password=a.password or "",
            database=database, autocommit=True,
        )  # fmt: skip
        try:
            with holder.cursor() as cur:
                cur.execute("LOCK TABLES app_logs WRITE")
            login = a.set(username=user, password=password).render_as_string(False)
            config = home / "config" / "aishell.yaml"
            use_target(home, login)
            config.write_text(
                config.read_text().replace(
                    "environment: test", "environment: test\n    lock_timeout_ms: 300"
                )
            )
            result = CliRunner().invoke(
                cli, ["plan", "log-cleanup", "--table", "app_logs", "--retention-days", "30"]
            )
        finally:
            holder.close()
            with admin.connect() as conn:
                conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
            admin.dispose()
    assert result.exit_code == 1, result.output
    assert "since gone" not in result.output, result.output
    assert "a session this login cannot see" in result.output, result.output
    assert "PROCESS privilege" in result.output, result.output
    assert password not in result.output
