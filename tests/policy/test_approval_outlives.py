"""An approval covers the facts it was given on, and nothing else: the database the
run started on, the safety level it is judged by now. A resume that reaches another
database is refused before anything runs; a level configured stricter since the run
started holds for the steps still to run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from aishell import commands
from aishell.errors import PlanError
from aishell.policy.approvers import NonInteractive, PreApproved
from tests.handlers.purge.test_log_cleanup import _database, fill, job, rows_of
from tests.helpers import run_sql, use_target

ROWS = 600


def _waiting_purge(home: Path, url: str) -> tuple[str, object]:
    config = use_target(home, url)
    waiting = commands.run_job(
        config, "log_cleanup", job(), approver=NonInteractive(), safety_level="strict"
    )
    assert waiting.status == "waiting_approval", waiting.error
    commands.decide_steps(config, waiting.run_id, "approved")
    return waiting.run_id, config


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_resume_that_reaches_another_database_is_refused(dialect, home):
    """The target's URL now names another database with the same table: the purge
    approved for the first never runs on the second."""
    with _database(dialect, home) as first, _other(dialect, home) as second:
        fill(first, rows=ROWS)
        fill(second, rows=ROWS)
        run_id, _config = _waiting_purge(home, first)
        config = use_target(home, second)
        with pytest.raises(PlanError, match=f"Run {run_id} ran on database .* now reaches"):
            commands.resume_run(config, run_id, approver=NonInteractive())
        assert len(rows_of(first)) == ROWS and len(rows_of(second)) == ROWS


def test_a_resume_after_the_database_was_created_again_is_refused(home):
    """The same name, a new database (PostgreSQL: a new oid)."""
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        fill(url, rows=ROWS)
        run_id, config = _waiting_purge(home, url)
        _recreate(url)
        fill(url, rows=ROWS)
        with pytest.raises(PlanError, match="now reaches"):
            commands.resume_run(config, run_id, approver=NonInteractive())
        assert len(rows_of(url)) == ROWS


def test_a_sqlite_file_replaced_by_a_copy_is_another_database(home):
    url_path = home / "logs.db"
    fill(f"sqlite:///{url_path}", rows=ROWS)
    run_id, config = _waiting_purge(home, f"sqlite:///{url_path}")
    shutil.copy(url_path, home / "copy.db")
    (home / "copy.db").replace(url_path)  # a new inode under the same path
    with pytest.raises(PlanError, match="now reaches"):
        commands.resume_run(config, run_id, approver=NonInteractive())
    assert len(rows_of(f"sqlite:///{url_path}")) == ROWS


def _set_level(home: Path, agent: str, level: str) -> None:
    path = home / "config" / "agents" / f"{agent}.yaml"
    data = yaml.safe_load(path.read_text())
    data[f"{agent}_agent"]["default_config"]["safety_level"] = level
    path.write_text(yaml.safe_dump(data))


def test_a_level_configured_stricter_since_holds_on_resume(home):
    """A moderate run waits at a step (a purge of every row, over max_share); the agent
    is configured strict meanwhile: the resumed run is judged strict, and says so. A
    run whose level is the configured one is left as it is."""
    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        config = use_target(home, url)
        everything = job(retention_days=1, cutoff=None)
        everything.pop("cutoff")
        first = commands.run_job(config, "log_cleanup", everything, approver=NonInteractive())
        assert first.status == "waiting_approval", first.error
        _set_level(home, "log_cleanup", "strict")
        config = use_target(home, url)
        resumed = commands.resume_run(config, first.run_id, approver=NonInteractive())
        assert resumed.status == "waiting_approval"
        events = commands.show_run(config, first.run_id)["events"]
        tightened = [e["data"] for e in events if e["kind"] == "safety_level_tightened"]
        assert tightened == [{"from": "moderate", "to": "strict", "why": "configured since"}]
        assert len(rows_of(url)) == ROWS
        # Configured back as it was: the run's own level, nothing recorded again.
        _set_level(home, "log_cleanup", "moderate")
        config = use_target(home, url)
        commands.resume_run(config, first.run_id, approver=NonInteractive())
        events = commands.show_run(config, first.run_id)["events"]
        assert len([e for e in events if e["kind"] == "safety_level_tightened"]) == 1


def _other(dialect: str, home: Path):
    if dialect == "sqlite":
        from contextlib import nullcontext

        return nullcontext(f"sqlite:///{home / 'other.db'}")
    return _database(dialect, home)


def _recreate(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.services import PG_ADMIN

    name = make_url(url).database
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


# --- what the step acts on: the table a name reaches, its size, its code --------------


def _resumed_waits(config, run_id: str, expected: str) -> None:
    resumed = commands.resume_run(config, run_id, approver=NonInteractive())
    purge = resumed.steps[1]
    assert resumed.status == "waiting_approval", (resumed.status, purge.error)
    assert "its earlier approval no longer covers it" in str(purge.error), purge.error
    assert expected in str(purge.error), purge.error


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_table_renamed_into_the_approved_name_is_asked_about_again(dialect, home):
    """`events` approved; then `events` renamed away and `invoices` (the same shape,
    the same ages) renamed to `events`: its rows are not what was approved."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        fill(url, table="invoices", rows=ROWS)
        run_id, config = _waiting_purge(home, url)
        rename = "RENAME TABLE {} TO {}" if dialect == "mysql" else "ALTER TABLE {} RENAME TO {}"
        run_sql(url, rename.format("events", "events_kept"), rename.format("invoices", "events"))
        _resumed_waits(config, run_id, "table events is not the table it was approved for")
        assert len(rows_of(url)) == ROWS and len(rows_of(url, "events_kept")) == ROWS


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_table_that_grew_past_what_was_approved_is_asked_about_again(dialect, home):
    """A purge approved on a table of 600 rows; 60,000 more old rows arrive (and the
    statistics say so): the approval was not for them."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_id, config = _waiting_purge(home, url)
        run_sql(
            url,
            "INSERT INTO events (id, created_at, payload) SELECT e.id + 1000 * g.n, "
            "e.created_at, e.payload FROM events e CROSS JOIN ("
            + " UNION ALL ".join(f"SELECT {n} AS n" for n in range(1, 101))
            + ") g",
            "ANALYZE TABLE events" if dialect == "mysql" else "ANALYZE events",
        )
        _resumed_waits(config, run_id, "table events: rows ")


def test_a_table_grown_only_past_its_heap_is_asked_about_again(home):
    """The same rows, each given 20 kB more out of line (TOAST) after the approval: the
    heap, which bounds the rows, barely grew; the table's whole size, which the approval
    keeps, did."""
    with _database("postgresql", home) as url:
        fill(url, rows=ROWS)
        run_sql(url, "ALTER TABLE events ADD COLUMN body text")
        run_id, config = _waiting_purge(home, url)
        run_sql(
            url,
            "UPDATE events SET body = (SELECT string_agg(md5(random()::text || events.id "
            "|| g), '') FROM generate_series(1, 640) g)",
        )
        _resumed_waits(config, run_id, "table events: bytes ")
        assert len(rows_of(url)) == ROWS


CODE_CHANGES = {
    "postgresql": (
        [
            "CREATE TABLE deleted_log (id int)",
            "CREATE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO deleted_log VALUES (old.id); RETURN old; END $$",
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            "EXECUTE FUNCTION note_delete()",
        ],
        [
            "CREATE OR REPLACE FUNCTION note_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN DELETE FROM deleted_log; RETURN old; END $$"
        ],
        "note_delete() changed since it was approved",
    ),
    "mysql": (
        [
            "CREATE TABLE deleted_log (id int)",
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            "INSERT INTO deleted_log VALUES (old.id)",
        ],
        [
            "DROP TRIGGER events_gone",
            "CREATE TRIGGER events_gone AFTER DELETE ON events FOR EACH ROW "
            "DELETE FROM deleted_log",
        ],
        "trigger events_gone on events changed since it was approved",
    ),
    "sqlite": (
        [
            "CREATE TABLE deleted_log (id int)",
            "CREATE TRIGGER events_gone AFTER DELETE ON events BEGIN "
            "INSERT INTO deleted_log VALUES (old.id); END",
        ],
        [
            "DROP TRIGGER events_gone",
            "CREATE TRIGGER events_gone AFTER DELETE ON events BEGIN DELETE FROM deleted_log; END",
        ],
        "trigger events_gone on events changed since it was approved",
    ),
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_code_redefined_after_the_approval_is_asked_about_again(dialect, home):
    """A delete fires a trigger; its code is redefined after the approval: the approval
    was for the code as it was."""
    before, after, expected = CODE_CHANGES[dialect]
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_sql(url, *before)
        run_id, config = _waiting_purge(home, url)
        run_sql(url, *after)
        _resumed_waits(config, run_id, expected)
        assert len(rows_of(url)) == ROWS


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_approval_whose_facts_held_still_covers_the_step(dialect, home):
    """Nothing changed: the resume runs the purge without asking again."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        run_id, config = _waiting_purge(home, url)
        done = commands.resume_run(config, run_id, approver=NonInteractive())
        assert done.status == "completed", done.error
        assert len(rows_of(url)) < ROWS


# --- a yes given after the facts changed -----------------------------------------------


@pytest.mark.parametrize("answer", [b"y\n", b"a\n", b"ALL\n"], ids=["yes", "a", "all"])
def test_a_yes_after_the_rows_grew_while_asked_asks_again(home, answer):
    """The question shows about a third of the table; while it waits every row grows
    old. The yes (or "all", which is this step's yes too) was for the third: the step is
    measured again and asked about again, saying what changed; a no then leaves every
    row."""
    import os

    from tests.cli.test_cli import read_until
    from tests.policy.test_approval_facts import _age_every_row, _only_run, at_terminal

    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        config = use_target(home, url)
        args = ("run", "log-cleanup", "--table", "events", "--safety-level", "strict")
        with at_terminal(*args) as (proc, terminal):
            read_until(terminal["fd"], "Run this step?")
            _age_every_row(url, 60)
            os.write(terminal["fd"], answer)
            shown = read_until(terminal["fd"], "Run this step?")
            assert "changed while the question waited" in shown, shown
            os.write(terminal["fd"], b"n\n")
            read_until(terminal["fd"], "denied")
            proc.wait(timeout=60)
        assert len(rows_of(url)) == ROWS
        run = commands.show_run(config, _only_run(config))
        grown = [e for e in run["events"] if e["kind"] == "approval_outgrown"]
        assert grown and grown[0]["data"]["while"] == "asked", run["events"]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_saved_plan_whose_table_was_swapped_under_its_name_is_refused(dialect, home):
    """A purge of `events` saved as a plan; `invoices` (same shape, rows, indexes) is
    renamed to `events` since: apply refuses it before its first step."""
    with _database(dialect, home) as url:
        fill(url, rows=ROWS)
        fill(url, table="invoices", rows=ROWS)
        config = use_target(home, url)
        out = home / "purge.json"
        commands.plan_job(config, "log_cleanup", job(), out=out)
        rename = "RENAME TABLE {} TO {}" if dialect == "mysql" else "ALTER TABLE {} RENAME TO {}"
        run_sql(url, rename.format("events", "events_kept"), rename.format("invoices", "events"))
        # (MariaDB's database instance, a digest over its tables, already differs.)
        refused = "'events' is not the table the plan was made for|not the one the plan was made on"
        with pytest.raises(PlanError, match=refused):
            commands.apply_plan(config, commands.load_plan_file(out), approver=PreApproved())
        assert len(rows_of(url)) == ROWS and len(rows_of(url, "events_kept")) == ROWS
        if dialect == "mysql":
            return  # a rename is a new instance of a MariaDB database for good
        # Renamed back, the plan applies.
        run_sql(url, rename.format("events", "invoices"), rename.format("events_kept", "events"))
        done = commands.apply_plan(config, commands.load_plan_file(out), approver=PreApproved())
        assert done.status == "completed", done.error


def test_all_given_for_a_step_that_changed_while_asked_does_not_cover_it(home):
    """ "all" answered for a purge whose rows all grew old while its question waited
    (held to no share, so its growth needs no named yes): the step is asked again, not
    covered by the "all" given for what it was before; a no then leaves every row."""
    from aishell.policy.approvers import Prompting
    from tests.policy.test_approval_facts import _age_every_row

    with _database("sqlite", home) as url:
        fill(url, rows=ROWS)
        path = home / "config" / "agents" / "log_cleanup.yaml"
        data = yaml.safe_load(path.read_text())
        for constraint in data["log_cleanup_agent"]["safety_constraints"]:
            if constraint["type"] == "purge_limits":
                constraint["max_share"] = 1.0
        path.write_text(yaml.safe_dump(data))
        config = use_target(home, url)
        asked: list[str] = []

        def answer(request) -> str:
            asked.append(request.tool)
            if request.tool != "delete_old_records":
                return "yes"
            if asked.count("delete_old_records") == 1:
                _age_every_row(url, 60)
                return "all"
            return "no"

        run = commands.run_job(
            config, "log_cleanup", job(), approver=Prompting(ask=answer), safety_level="strict"
        )
        assert asked.count("delete_old_records") == 2, asked
        purge = next(s for s in run.steps if s.tool == "delete_old_records")
        assert purge.status == "denied", (purge.status, purge.error)
        assert len(rows_of(url)) == ROWS
