"""MariaDB shows information_schema's times (a table's CREATE_TIME, a routine's CREATED
and LAST_ALTERED, a trigger's CREATED) in the session's time_zone. The identity of a
database and the fingerprints of its tables and code are read as the instants those
times name: the same database reads alike from sessions in any zone, and a table
created again still reads otherwise."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from aishell.targets.fingerprints import code_digests, table_identities
from aishell.targets.identity import plan_identity
from tests.helpers import one_step_plan, run_sql, use_target
from tests.services import scratch_mysql

ZONES = ("+00:00", "+05:30")


def _zoned(url: str, zone: str) -> str:
    """The URL with every session's time_zone set to `zone`."""
    command = quote(f"SET time_zone = '{zone}'")
    return f"{url}?init_command={command}"


def _read(url: str) -> dict[str, Any]:
    """What a plan and an approval record of the database at url: its identity and
    instance, its table's identity and its code's digests; and the zone it was read in."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "zone": conn.execute(text("SELECT @@session.time_zone")).scalar(),
                "identity": plan_identity(conn),
                "tables": table_identities(conn, ["events"]),
                "code": code_digests(conn),
            }
    finally:
        engine.dispose()


def _schema(url: str, elsewhere: str) -> None:
    """A table with a trigger, a procedure and a function, and a trigger that calls a
    function of another database: every time the fingerprints read."""
    other = make_url(elsewhere).database
    run_sql(elsewhere, "CREATE FUNCTION stamp(x integer) RETURNS integer DETERMINISTIC RETURN x")
    run_sql(
        url,
        "CREATE TABLE events (id integer PRIMARY KEY, n integer NOT NULL)",
        "CREATE TABLE audit (id integer PRIMARY KEY)",
        "CREATE FUNCTION twice(x integer) RETURNS integer DETERMINISTIC RETURN 2 * x",
        "CREATE PROCEDURE clear_audit() DELETE FROM audit",
        f"CREATE TRIGGER events_n BEFORE INSERT ON events FOR EACH ROW "
        f"SET NEW.n = `{other}`.stamp(NEW.n)",
    )


@contextmanager
def _login_without_process(url: str) -> Iterator[str]:
    """The database's URL for an account of its own without PROCESS: its tables are told
    apart by their creation times alone (no InnoDB table ids)."""
    database = str(make_url(url).database)
    user = f"tz{uuid.uuid4().hex[:12]}"
    run_sql(
        url,
        f"CREATE USER '{user}'@'%'",
        f"GRANT ALL ON `{database}`.* TO '{user}'@'%'",
    )
    try:
        yield make_url(url).set(username=user).render_as_string(False)
    finally:
        run_sql(url, f"DROP USER '{user}'@'%'")


def test_every_session_zone_reads_the_same_database(mysql_url: str) -> None:
    with scratch_mysql() as elsewhere:
        _schema(mysql_url, elsewhere)
        first, second = (_read(_zoned(mysql_url, zone)) for zone in ZONES)
    assert (first.pop("zone"), second.pop("zone")) == ZONES
    assert first["tables"] and len(first["code"]) == 4, first
    assert any("." in name for name in first["code"]), first  # the other database's
    assert first == second


def test_without_process_the_creation_times_read_alike_and_change(mysql_url: str) -> None:
    """Without PROCESS a table's identity is its creation time: the same from either
    zone; created again a second later, another, whichever zone reads it."""
    with scratch_mysql() as elsewhere:
        _schema(mysql_url, elsewhere)
        with _login_without_process(mysql_url) as login:
            first, second = (_read(_zoned(login, zone)) for zone in ZONES)
            del first["zone"], second["zone"]
            assert first["identity"].split("#")[1].startswith("created:"), first
            assert first["tables"]["events"].startswith("created "), first
            assert first == second
            time.sleep(1.1)  # CREATE_TIME counts whole seconds
            run_sql(
                mysql_url,
                "DROP TABLE events",
                "CREATE TABLE events (id integer PRIMARY KEY, n integer NOT NULL)",
            )
            for zone in ZONES:
                again = _read(_zoned(login, zone))
                assert again["identity"] != first["identity"], zone
                assert again["tables"] != first["tables"], zone


def test_a_replaced_routine_still_changes_its_digest(mysql_url: str) -> None:
    """The same definition made again a second later: its creation time is the change."""
    with scratch_mysql() as elsewhere:
        _schema(mysql_url, elsewhere)
        before = _read(_zoned(mysql_url, ZONES[0]))["code"]
        time.sleep(1.1)
        run_sql(
            mysql_url,
            "DROP PROCEDURE clear_audit",
            "CREATE PROCEDURE clear_audit() DELETE FROM audit",
        )
        after = _read(_zoned(mysql_url, ZONES[1]))["code"]
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed == {"PROCEDURE clear_audit"}, (before, after)


def test_a_plan_saved_in_one_zone_applies_from_another(home: Path, mysql_url: str) -> None:
    """The target's URL sets the session zone; the plan is saved with one and applied
    with the other: the same database, not refused."""
    with scratch_mysql() as elsewhere:
        _schema(mysql_url, elsewhere)
        run_sql(mysql_url, "INSERT INTO events VALUES (1, 1), (2, 2)")
        out = home / "plan.json"
        saved = use_target(home, _zoned(mysql_url, ZONES[0]))
        commands.plan_job(saved, "maintenance", {"type": "quick"}, out=out)
        applied = use_target(home, _zoned(mysql_url, ZONES[1]))
        result = commands.apply_plan(applied, out, approver=PreApproved())
    assert result.status == "completed", result.error
    assert [s.status for s in result.steps] == ["succeeded"] * len(result.steps)


def test_an_approval_given_in_one_zone_holds_in_another(
    home: Path, mysql_url: str, edit_config: Any
) -> None:
    """A step asked about from sessions in one zone, approved, and resumed from sessions
    in another: the tables and code it was approved for are the ones it finds."""
    # The table is over the size limit: a step that changes it waits for a yes.
    edit_config(maintenance={"safety_constraints": [{"type": "max_table_size", "max_rows": 1}]})
    with scratch_mysql() as elsewhere:
        _schema(mysql_url, elsewhere)
        rows = ", ".join(f"({i}, {i})" for i in range(1, 21))
        run_sql(mysql_url, f"INSERT INTO events VALUES {rows}", "ANALYZE TABLE events")
        asked = use_target(home, _zoned(mysql_url, ZONES[0]))
        plan = one_step_plan(
            "maintenance", "db", "mysql", "update_table_statistics", {"tables": ["events"]}
        )
        waiting = commands.apply_plan(asked, plan)
        assert waiting.status == "waiting_approval", waiting.error
        commands.decide_steps(asked, waiting.run_id, "approved", step=0)
        resumed = use_target(home, _zoned(mysql_url, ZONES[1]))
        result = commands.resume_run(resumed, waiting.run_id)
    assert result.status == "completed", (result.error, result.steps[0].error)
