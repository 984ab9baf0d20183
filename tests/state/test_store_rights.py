"""A state store on a server whose login lacks a right the store needs (to create its
tables, to alter them in an upgrade) is one line saying so and what to grant, with
StateError's exit code, from every command that opens it: not an internal error, and
not "check that its server is up". A login the server refuses outright (a wrong
password) is still told to check state.url and state.password_env."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.services import MYSQL_ADMIN, PG_ADMIN, admin_engine
from tests.state.store_shape import made_at
from tests.state.test_state_faults import edit_main, invoke, one_error_line

REFUSED = "refused what aishell asked of it"
GRANT = "grant the login of state.url"


@contextmanager
def pg_login_without_create() -> Iterator[str]:
    """A role of this test's own and a database it does not own, in whose schema public
    only the owner may create (PostgreSQL's default since 15)."""
    name = f"aishell_rights_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        own = make_url(PG_ADMIN).set(database=name).render_as_string(False)
        inside = admin_engine(own, "PostgreSQL")
        try:
            with inside.connect() as conn:  # as PostgreSQL before 15 did not
                conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        finally:
            inside.dispose()
        try:
            yield make_url(PG_ADMIN).set(username=name, database=name).render_as_string(False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@contextmanager
def mysql_login(grants: str, at_revision: str | None = None, password: str = "") -> Iterator[str]:
    """A MariaDB user of this test's own with `grants` on a database of its own, which
    holds a store at `at_revision` (made by the server's admin) when given."""
    name = f"aishell_rights_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(MYSQL_ADMIN, "MariaDB")
    user = f"'{name}'@'%'"
    admin_url = make_url(MYSQL_ADMIN).set(database=name).render_as_string(False)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
            conn.execute(text(f"CREATE USER {user} IDENTIFIED BY :pw"), {"pw": password})
            conn.execute(text(f"GRANT {grants} ON `{name}`.* TO {user}"))
        if at_revision is not None:
            made_at(admin_url, at_revision)
        yield make_url(MYSQL_ADMIN).set(username=name, database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(text(f"DROP USER IF EXISTS {user}"))
        admin.dispose()


def _opened_with(home: Path, url: str) -> str:
    edit_main(home, state={"url": url})
    for command in (["runs", "list"], ["run", "maintenance", "--type", "quick"]):
        line = one_error_line(invoke(*command), REFUSED, GRANT)
        assert "check that its server is up" not in line
    return line


def test_a_postgresql_store_its_login_may_not_create_in_is_one_line(
    home: Path, demo_db: Path
) -> None:
    with pg_login_without_create() as url:
        line = _opened_with(home, url)
        assert "permission denied for schema public" in line


def test_a_mysql_store_its_login_may_not_create_in_is_one_line(home: Path, demo_db: Path) -> None:
    with mysql_login("SELECT, INSERT, UPDATE, DELETE") as url:
        assert "CREATE command denied" in _opened_with(home, url)


def test_a_mysql_store_its_login_may_not_upgrade_is_one_line(home: Path, demo_db: Path) -> None:
    """Made by an older aishell (revision 0001) with a login that may create tables but
    not alter them: the upgrade's ALTER TABLE is what is refused."""
    with mysql_login(
        "SELECT, INSERT, UPDATE, DELETE, CREATE, INDEX", at_revision="0001_baseline"
    ) as url:
        assert "ALTER command denied" in _opened_with(home, url)


def test_a_wrong_password_is_still_the_urls_to_fix(home: Path, demo_db: Path) -> None:
    with mysql_login("ALL", password="right-one") as url:
        wrong = make_url(url).set(password="wrong-one").render_as_string(False)
        edit_main(home, state={"url": wrong})
        line = one_error_line(invoke("runs", "list"), "Access denied", "state.password_env")
        assert REFUSED not in line
