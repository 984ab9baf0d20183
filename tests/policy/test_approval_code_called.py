"""A trigger's function calls code that is not a function's body: an aggregate's state
function, an operator's, a cast's. Each may be pointed at other code after the approval
with the trigger and every function body unchanged: the approval was for the code as it
was, so the resumed run asks again."""

from __future__ import annotations

import pytest

from tests.handlers.purge.test_log_cleanup import _database, fill, rows_of
from tests.helpers import run_sql
from tests.policy.test_approval_outlives import ROWS, _resumed_waits, _waiting_purge

# Two functions of each shape: the code the approval saw, and the code swapped in.
FUNCTIONS = [
    "CREATE TABLE deleted_log (n int)",
    "CREATE FUNCTION kept_sum(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + $2'",
    "CREATE FUNCTION other_sum(int, int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 - $2'",
]


def _trigger(expression: str) -> list[str]:
    return [
        "CREATE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO deleted_log SELECT {expression}; RETURN old; END $$",
        "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
        "EXECUTE FUNCTION note_delete()",
    ]


CALLED = {
    "aggregate": (
        [
            "CREATE AGGREGATE tally(int) (SFUNC = kept_sum, STYPE = int, INITCOND = '0')",
            *_trigger("tally(x) FROM (VALUES (old.id)) v(x)"),
        ],
        ["CREATE OR REPLACE AGGREGATE tally(int) (SFUNC = other_sum, STYPE = int, INITCOND = '0')"],
        "aggregate tally(integer) changed since it was approved",
    ),
    "operator": (
        [
            "CREATE OPERATOR %%% (LEFTARG = int, RIGHTARG = int, FUNCTION = kept_sum)",
            *_trigger("old.id %%% 1"),
        ],
        [
            "DROP OPERATOR %%% (int, int)",
            "CREATE OPERATOR %%% (LEFTARG = int, RIGHTARG = int, FUNCTION = other_sum)",
        ],
        "operator %%%(integer,integer) changed since it was approved",
    ),
    "cast": (
        [
            "CREATE TYPE tally_box AS (n int)",
            "CREATE FUNCTION kept_box(int) RETURNS tally_box LANGUAGE sql IMMUTABLE "
            "AS 'SELECT ROW($1)::tally_box'",
            "CREATE FUNCTION other_box(int) RETURNS tally_box LANGUAGE sql IMMUTABLE "
            "AS 'SELECT ROW(-$1)::tally_box'",
            "CREATE CAST (int AS tally_box) WITH FUNCTION kept_box(int)",
            *_trigger("(old.id::tally_box).n"),
        ],
        [
            "DROP CAST (int AS tally_box)",
            "CREATE CAST (int AS tally_box) WITH FUNCTION other_box(int)",
        ],
        "cast integer as tally_box changed since it was approved",
    ),
}


@pytest.mark.parametrize("called", sorted(CALLED))
def test_code_a_trigger_calls_pointed_elsewhere_is_asked_about_again(called, home):
    before, after, expected = CALLED[called]
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *FUNCTIONS, *before)
        run_id, config = _waiting_purge(home, url)
        run_sql(url, *after)
        _resumed_waits(config, run_id, expected)
        assert len(rows_of(url)) == ROWS


# -- the code of the tables a trigger writes to -------------------------------------------

CHAINED = {
    "postgresql": (
        [
            "CREATE TABLE audit (n int)",
            "CREATE TABLE audit2 (n int)",
            "CREATE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit VALUES (old.id); RETURN old; END $$",
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            "EXECUTE FUNCTION note_delete()",
            "CREATE FUNCTION forward() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit2 VALUES (new.n); RETURN new; END $$",
            "CREATE TRIGGER audit_fwd AFTER INSERT ON audit FOR EACH ROW "
            "EXECUTE FUNCTION forward()",
        ],
        ["ALTER TABLE audit DISABLE TRIGGER audit_fwd"],
    ),
    "mysql": (
        [
            "CREATE TABLE audit (n int)",
            "CREATE TABLE audit2 (n int)",
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            "INSERT INTO audit VALUES (old.id)",
            "CREATE TRIGGER audit_fwd AFTER INSERT ON audit FOR EACH ROW "
            "INSERT INTO audit2 VALUES (new.n)",
        ],
        [
            "DROP TRIGGER audit_fwd",
            "CREATE TRIGGER audit_fwd AFTER INSERT ON audit FOR EACH ROW DELETE FROM audit2",
        ],
    ),
    "sqlite": (
        [
            "CREATE TABLE audit (n int)",
            "CREATE TABLE audit2 (n int)",
            "CREATE TRIGGER events_gone AFTER DELETE ON events BEGIN "
            "INSERT INTO audit VALUES (old.id); END",
            "CREATE TRIGGER audit_fwd AFTER INSERT ON audit BEGIN "
            "INSERT INTO audit2 VALUES (new.n); END",
        ],
        [
            "DROP TRIGGER audit_fwd",
            "CREATE TRIGGER audit_fwd AFTER INSERT ON audit BEGIN DELETE FROM audit2; END",
        ],
    ),
}


@pytest.mark.parametrize("dialect", sorted(CHAINED))
def test_a_trigger_on_a_table_the_approved_trigger_writes_is_covered(dialect, home):
    """The purged table's trigger writes to `audit`, whose own trigger is redefined after
    the approval: that is code the purge runs, asked about again."""
    before, after = CHAINED[dialect]
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *before)
        run_id, config = _waiting_purge(home, url)
        run_sql(url, *after)
        _resumed_waits(config, run_id, "trigger audit_fwd on audit changed since it was approved")
        assert len(rows_of(url)) == ROWS


def test_a_mariadb_routine_of_another_database_a_trigger_calls_is_covered(home):
    from sqlalchemy.engine import make_url

    from tests.services import scratch_mysql

    with _database("mysql", home) as url, scratch_mysql() as other_url:
        other = make_url(other_url).database
        fill(url, rows=ROWS)
        run_sql(
            other_url,
            "CREATE FUNCTION tally(x int) RETURNS int DETERMINISTIC RETURN x",
        )
        run_sql(
            url,
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            f"SET @n = `{other}`.tally(old.id)",
        )
        run_id, config = _waiting_purge(home, url)
        run_sql(
            other_url,
            "CREATE OR REPLACE FUNCTION tally(x int) RETURNS int DETERMINISTIC RETURN x + 1",
        )
        _resumed_waits(config, run_id, f"FUNCTION {other}.tally changed since it was approved")
        assert len(rows_of(url)) == ROWS
