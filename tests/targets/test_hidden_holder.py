"""A login without pg_read_all_stats sees another role's session in pg_stat_activity
with its state, times and statement hidden: the holder of a lock is then named by its
pid, user and program, and said to be hidden, not described as 'no state for Nones'."""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell.targets.lockholders import blocking_sessions
from tests.helpers import run_sql
from tests.services import PG_ADMIN, admin_engine, scratch_postgresql
from tests.targets.test_lock_holders_named import _held


def test_a_holder_hidden_from_the_login_is_named_and_said_hidden() -> None:
    role = f"aishell_unseeing_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        with scratch_postgresql() as url:
            run_sql(url, "CREATE TABLE t (id int)")
            login = create_engine(make_url(url).set(username=role))
            try:
                with _held(url, "t", "the holder") as holder, login.connect() as conn:
                    named = blocking_sessions(conn, ["t"])
            finally:
                login.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()

    assert named == [
        f"pid {holder} (postgres, the holder; its state and statement are hidden from this "
        "login: grant it pg_read_all_stats to see them)"
    ]
