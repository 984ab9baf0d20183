"""A restore that fails part way: on PostgreSQL it leaves the target as it was (pg_restore
in one transaction), and what the validation's proof did not cover is shown with the
backup; a resumed restore that finds what its earlier attempt left says so, with the
command that restores over it; a login that may not make databases is told the privilege, for a
validation and for `restore --create`, in one line."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved, Prompting
from aishell.risk import RiskLevel
from tests.handlers.backup.test_backup_lock_wait import verified_full_backup
from tests.handlers.backup.test_restore_cut_short import (
    NUMBERS,
    _ending_its_session,
    _once_loading,
)
from tests.helpers import fill_table, run_sql, use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine, scratch_mysql, scratch_postgresql

YES = Prompting(ask=lambda request: "yes")


def _objects(url: str) -> list[str]:
    """The tables and functions of the database's public schema."""
    with engine(url).connect() as conn:
        return [
            str(name)
            for (name,) in conn.execute(
                text(
                    "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = relnamespace "
                    "WHERE nspname = 'public' UNION ALL SELECT proname FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = pronamespace WHERE nspname = 'public'"
                )
            )
        ]


def test_a_postgresql_restore_that_fails_part_way_leaves_the_target_as_it_was(
    home: Path, pg_url: str
) -> None:
    # An index on a function whose body calls another unqualified: pg_restore's empty
    # search_path fails it after every table is made and loaded. The validation leaves
    # it out (it runs the database's code), so the backup is proven all the same.
    run_sql(
        pg_url,
        "CREATE FUNCTION g(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT x + 1'",
        "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT g(x)'",
        "CREATE TABLE u (id int PRIMARY KEY)",
        "INSERT INTO u SELECT generate_series(1, 50)",
        "CREATE INDEX u_f ON u (f(id))",
    )
    with scratch_postgresql() as into:
        config = use_target(home, pg_url, into=into)
        done = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
        assert done.status == "completed", done.error
        [backup] = commands.list_backups(config, "db")
        shown = CliRunner().invoke(cli, ["backups", "show", str(backup["id"])])
        assert "not covered by the proof" in shown.output and "index u_f" in shown.output

        restored = commands.restore(config, backup["id"], "into", approver=YES)
        assert restored.status == "failed"
        assert _objects(into) == []
        assert "CREATE INDEX u_f" in str(restored.error)
        assert "Nothing of it was restored (one transaction, rolled back)" in str(restored.error)


def test_a_resumed_restore_names_what_its_earlier_attempt_left(home: Path, mysql_url: str) -> None:
    # A backup holding a view cannot be swapped in (RENAME TABLE moves no view between
    # databases): the mariadb client loads the target itself, committing table by
    # table, so its session ended while it loads z_big leaves a_small restored. The
    # resumed step finds it, and says whose it is.
    config = use_target(home, mysql_url)
    run_sql(
        mysql_url,
        "CREATE TABLE a_small (id INTEGER PRIMARY KEY)",
        "INSERT INTO a_small VALUES (1)",
        "CREATE TABLE z_big (id INTEGER PRIMARY KEY, v VARCHAR(100))",
        "CREATE TABLE zz_after (id INTEGER PRIMARY KEY)",
        "CREATE VIEW zz_view AS SELECT id FROM zz_after",
        f"INSERT INTO z_big SELECT i, REPEAT('x', 100) FROM {NUMBERS['mysql']}",
    )
    taken = verified_full_backup(config)
    with scratch_mysql() as into:
        config = use_target(home, mysql_url, into=into)
        ended: list[int] = []
        loaded = threading.Event()
        killer = threading.Thread(
            target=_once_loading,
            args=(into, "mysql", _ending_its_session("mysql", config), ended, loaded),
            daemon=True,
        )
        killer.start()
        cut = commands.restore(config, taken["id"], "into", approver=YES)
        loaded.set()
        killer.join(60)
        assert ended and cut.status == "failed", cut.error
        again = commands.resume_run(config, cut.run_id, approver=YES)
    assert again.status == "failed"
    assert "what an earlier attempt of this restore left when it stopped part way" in str(
        again.error
    )
    assert "aishell restore BACKUP_ID --to into --replace" in str(again.error)


@contextmanager
def _role_without_createdb() -> Iterator[tuple[str, str, str]]:
    """A login role of the test's own without CREATEDB, that may read a scratch database
    holding one table; the database's URL, the URL that logs in to it as the role, and
    the role's name."""
    role = f"fixnocreate_{uuid.uuid4().hex[:10]}"
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN NOCREATEDB'))
    try:
        with scratch_postgresql() as url:
            fill_table(url, "kept", 5)
            run_sql(url, f'GRANT SELECT ON kept TO "{role}"')
            yield url, make_url(url).set(username=role).render_as_string(False), role
    finally:
        # Its scratch database (and the grant in it) is gone: the role goes whatever
        # the test found.
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_a_login_without_createdb_is_told_so(home: Path) -> None:
    with _role_without_createdb() as (url, as_role, role):
        missing = make_url(as_role).set(database=f"fixnocreate_{uuid.uuid4().hex[:8]}")
        config = use_target(home, url, role=as_role, into=missing.render_as_string(False))
        low = PreApproved(up_to=RiskLevel.LOW)
        done = commands.run_job(config, "backup", {"type": "full"}, "role", approver=low)
        step = next(s for s in done.steps if s.tool == "validate_backup")
        assert step.status == "failed"
        assert f"role {role} lacks CREATEDB" in str(step.error)
        assert f'ALTER ROLE "{role}" CREATEDB' in str(step.error)
        assert "\n" not in str(step.error)
        # A backup proven by a login that may: its restore --create as the role.
        done = commands.run_job(config, "backup", {"type": "full"}, approver=low)
        assert done.status == "completed", done.error
        [backup] = commands.list_backups(config, "db")
        with pytest.raises(UsageError, match="needs CREATEDB") as refused:
            commands.restore(config, backup["id"], "into", create=True)
        assert "\n" not in str(refused.value)


def test_a_restore_into_a_target_that_names_no_database_is_refused(
    home: Path, demo_db: Path
) -> None:
    # Its login would reach the server's default database, which nobody chose.
    bare = make_url(PG_ADMIN)._replace(database=None).render_as_string(False)
    config = use_target(home, f"sqlite:///{demo_db}", bare=bare)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    with pytest.raises(UsageError, match="^Target 'bare' names no database, and a restore"):
        commands.restore(config, backup["id"], "bare", create=True)


def test_a_mariadb_login_that_may_not_make_the_scratch_database_is_told_so(
    home: Path, mysql_url: str
) -> None:
    user = f"fixnocreate_{uuid.uuid4().hex[:8]}"
    database = make_url(mysql_url).database
    fill_table(mysql_url, "kept", 5)
    admin = engine(MYSQL_ADMIN)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'%'"))
            conn.execute(
                text(
                    "GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT ON "
                    f"`{database}`.* TO '{user}'@'%'"
                )
            )
        as_user = make_url(mysql_url).set(username=user).render_as_string(False)
        config = use_target(home, as_user)
        low = PreApproved(up_to=RiskLevel.LOW)
        done = commands.run_job(config, "backup", {"type": "full"}, approver=low)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()
    step = next(s for s in done.steps if s.tool == "validate_backup")
    assert step.status == "failed"
    assert "may not create databases aishell\\_verify\\_%" in str(step.error)
    assert "GRANT CREATE, DROP ON `aishell\\_verify\\_%`.* TO it" in str(step.error)


def test_a_backup_of_a_target_that_names_no_database_is_refused(home: Path) -> None:
    bare = make_url(PG_ADMIN)._replace(database=None).render_as_string(False)
    config = use_target(home, bare)
    done = commands.run_job(config, "backup", {"type": "full"}, approver=PreApproved())
    step = next(s for s in done.steps if s.tool == "backup_database_full")
    assert step.status == "failed"
    assert step.error == (
        "Target 'db' names no database, and its backup must name the one it works on; "
        "give its URL a database (.../NAME) or its service a dbname"
    )
