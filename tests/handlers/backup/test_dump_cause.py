"""A PostgreSQL backup that cannot be taken says why, not that pg_dump's snapshot is gone.

The rows of each table are counted in the dump's snapshot beside pg_dump; a count that
failed ended the snapshot's transaction, and pg_dump then said only "could not import
the requested snapshot ... not running anymore". Now a table the login may not read is
named before anything is written, and any other count that fails says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.helpers import use_target
from tests.services import PG_ADMIN, engine, scratch_postgresql


@contextmanager
def role_with_database(*statements: str) -> Iterator[tuple[str, str]]:
    """A login role of the test's own and a scratch database where `statements` ran as
    postgres ({role} names the role); the URL that logs in as the role, and the role."""
    role = f"fixcause_{uuid.uuid4().hex[:10]}"
    admin = engine(PG_ADMIN)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        with scratch_postgresql() as url:
            with engine(url).begin() as conn:
                for statement in statements:
                    conn.execute(text(statement.format(role=f'"{role}"')))
            yield make_url(url).set(username=role).render_as_string(False), role
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE "{role}"'))
    finally:
        admin.dispose()


def _backup(home: Path, url: str) -> commands.RunResult:
    config = use_target(home, url)
    return commands.run_job(
        config, "backup", {"type": "full"}, approver=PreApproved(up_to=RiskLevel.LOW)
    )


def test_a_table_the_login_may_not_read_is_named_before_anything_is_written(
    home: Path,
) -> None:
    with role_with_database(
        "CREATE TABLE open_t (id int)",
        "GRANT SELECT ON open_t TO {role}",
        "CREATE TABLE locked_t (id int)",
        "REVOKE ALL ON locked_t FROM PUBLIC",
        "CREATE SEQUENCE locked_s",
    ) as (url, role):
        result = _backup(home, url)
    assert result.status == "failed"
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    assert step.error == (
        f"The login {role} may not read public.locked_s, public.locked_t (no SELECT "
        "privilege): a backup reads every table and sequence; grant it (GRANT SELECT ON "
        f"... TO {role}) or back up as a role that may read them; nothing was written"
    )
    assert not list((home / "backups").rglob("*.dump")) if (home / "backups").exists() else True


def test_a_count_that_fails_in_the_snapshot_says_why(home: Path) -> None:
    """A row-security policy the table's owner is held to, whose function raises: the
    count fails (pg_dump, which reads with row security off, would have said something
    else, had the snapshot still been there)."""
    with role_with_database(
        "ALTER SCHEMA public OWNER TO {role}",
        "CREATE TABLE guarded (id int)",
        "INSERT INTO guarded VALUES (1)",
        "ALTER TABLE guarded OWNER TO {role}",
        "CREATE FUNCTION refuse() RETURNS boolean LANGUAGE plpgsql AS "
        "'BEGIN RAISE EXCEPTION ''no rows for you''; END'",
        "ALTER TABLE guarded ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE guarded FORCE ROW LEVEL SECURITY",
        "CREATE POLICY only_some ON guarded USING (refuse())",
    ) as (url, _):
        result = _backup(home, url)
    assert result.status == "failed"
    step = next(s for s in result.steps if s.tool == "backup_database_full")
    assert step.error is not None
    assert step.error.startswith("counting the rows in the dump's snapshot failed (")
    assert "no rows for you" in step.error
    assert "which ended the snapshot pg_dump reads" in step.error
