"""Honest statuses: work the server skipped ends `skipped` with the reason, never
`succeeded`; `targets check` names the privileges each agent lacks; full maintenance
really checks for corruption and says per table what it could not check; reclaimed
bytes are measured the same way before and after; a REINDEX CONCURRENTLY that hits its
lock timeout leaves no pile of invalid copies and says what happened."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config
from aishell.errors import StepSkipped
from aishell.handlers.mysql import privileges as mysql_privileges
from aishell.handlers.postgresql import privileges as postgresql_privileges
from aishell.handlers.sqlite import privileges as sqlite_privileges
from aishell.policy.approvers import PreApproved
from aishell.targets.engines import open_target
from tests.helpers import corrupt_index, one_step_plan, use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine, scratch_mysql, scratch_postgresql


def as_user(url: str, user: str) -> str:
    return make_url(url).set(username=user).render_as_string(hide_password=False)


def one_step(config: Config, dialect: str, tool: str, params: dict):
    plan = one_step_plan("maintenance", "db", dialect, tool, params)
    return commands.apply_plan(config, plan, approver=PreApproved())


def by_table(result) -> dict[tuple[str, str | None], object]:
    return {(s.tool, s.params.get("table")): s for s in result.steps}


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_role() -> Iterator[tuple[str, str]]:
    """A scratch database and a login role that may connect and owns nothing:
    (the database's admin URL, the role)."""
    role = f"r_{uuid.uuid4().hex[:12]}"
    with scratch_postgresql() as url:
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{make_url(url).database}" TO {role}'))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        admin.dispose()
        yield url, role
    # After the database is gone, nothing in it depends on the role any more.
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


def pg_tables(url: str, role: str, *names: str, rows: int = 2000) -> None:
    """Tables owned by postgres, readable by `role`, half their rows deleted; autovacuum
    off so that only aishell vacuums them."""
    admin = engine(url)
    with admin.connect() as conn:
        for name in names:
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id int PRIMARY KEY, k int NOT NULL, pad text) "
                    "WITH (autovacuum_enabled = false)"
                )
            )
            conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
            conn.execute(
                text(
                    f"INSERT INTO {name} SELECT g, -g, repeat('x', 100) "
                    f"FROM generate_series(1, {rows}) g"
                )
            )
            conn.execute(text(f"DELETE FROM {name} WHERE id % 2 = 0"))
            conn.execute(text(f"GRANT SELECT ON {name} TO {role}"))
    admin.dispose()


def pg_last_maintenance(url: str) -> dict[str, tuple]:
    admin = engine(url)
    with admin.connect() as conn:
        rows = conn.execute(
            text("SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables")
        ).all()
    admin.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_postgresql_work_on_a_table_the_role_does_not_own_is_skipped(home, pg_role):
    url, role = pg_role
    pg_tables(url, role, "theirs", "mine")
    with engine(url).connect() as conn:
        conn.execute(text(f"ALTER TABLE mine OWNER TO {role}"))
    config = use_target(home, as_user(url, role))

    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())

    assert result.status == "completed", result.error
    # The two small tables share the step: mine is done, theirs named as skipped.
    optimize = next(s for s in result.steps if s.tool == "optimize_table")
    assert optimize.status == "succeeded"
    assert optimize.output["tables_done"] == ["mine"]
    [skipped] = optimize.output["skipped_tables"]
    assert skipped["table"] == "theirs"
    assert skipped["reason"].startswith(
        f"VACUUM of theirs skipped: role {role} owns neither it nor the database (owner: postgres)"
    )
    # Alone, the table's step ends skipped.
    alone = one_step(config, "postgresql", "optimize_table", {"table": "theirs"})
    assert alone.steps[0].status == "skipped"
    assert alone.steps[0].error == skipped["reason"]
    # VACUUM (ANALYZE) refreshed the statistics: no ANALYZE step follows it.
    assert "update_table_statistics" not in {s.tool for s in result.steps}
    # The server really left theirs alone, and really did mine.
    last = pg_last_maintenance(url)
    assert last["theirs"] == (None, None)
    assert None not in last["mine"]
    report = result.report
    assert report["statistics_updated"] == 1 and report["tables_optimized"] == 1
    assert {(s["tool"], s["table"]) for s in report["skipped"]} == {("optimize_table", "theirs")}
    assert "1 skipped by the server (" in report["summary"]
    # Without amcheck nothing was checked for corruption, and the report does not say false.
    assert report["corruption_found"] is None
    assert report["corruption_check"] == "not checked"
    assert {t["table"] for t in report["corruption_not_checked"]} == {"theirs", "mine"}
    assert report["corruption_not_checked"][0]["reason"].startswith("amcheck is not installed")
    assert "corruption not checked in 2 table(s)" in report["summary"]
    # The database measured the same way before and after: never a negative reclaim.
    assert report["reclaimed_bytes"] == max(report["size_before"] - report["size_after"], 0)
    if report["size_after"] > report["size_before"]:
        assert "grew by" in report["size_note"]
    # An ANALYZE of its own is skipped the same way, and counts no statistics.
    analyze = one_step(config, "postgresql", "update_table_statistics", {"table": "theirs"})
    assert analyze.steps[0].status == "skipped"
    assert analyze.steps[0].error.startswith(
        f"ANALYZE of theirs skipped: role {role} owns neither it nor the database"
    )
    assert pg_last_maintenance(url)["theirs"] == (None, None)
    # A check step of its own that could check no table is skipped, with the reason.
    check = one_step(config, "postgresql", "check_table_corruption", {"tables": ["mine"]})
    assert check.steps[0].status == "skipped"
    assert "No table could be checked for corruption: amcheck is not installed" in (
        check.steps[0].error
    )


def test_postgresql_one_statistics_step_of_many_tables_skips_only_those_it_may_not(home, pg_role):
    url, role = pg_role
    pg_tables(url, role, "theirs", "mine", "ours", rows=50)
    with engine(url).connect() as conn:
        conn.execute(text(f"ALTER TABLE mine OWNER TO {role}"))
        conn.execute(text(f"ALTER TABLE ours OWNER TO {role}"))
    config = use_target(home, as_user(url, role))

    result = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())

    assert result.status == "completed", result.error
    (step,) = [s for s in result.steps if s.tool == "update_table_statistics"]
    assert step.params == {"tables": ["mine", "ours", "theirs"]}
    # What the preview showed is what was sent: the refusal as a comment, one ANALYZE
    # of the two the role may maintain.
    assert step.sql == [
        f"-- ANALYZE of theirs skipped: role {role} owns neither it nor the database "
        f"(owner: postgres); run it as postgres, or ALTER TABLE theirs OWNER TO {role}",
        'ANALYZE "mine", "ours"',
    ]
    sent = [r["sql"] for r in commands.run_statements(config, result.run_id)]
    assert sent.count('ANALYZE "mine", "ours"') == 1 and not any("theirs" in s for s in sent)
    assert step.status == "succeeded"
    assert step.output["tables_analyzed"] == 2
    assert step.output["row_estimates"] == {"mine": 25, "ours": 25}
    assert [t["table"] for t in step.output["skipped_tables"]] == ["theirs"]
    last = pg_last_maintenance(url)
    assert last["theirs"][1] is None and last["mine"][1] and last["ours"][1]
    report = result.report
    assert report["statistics_updated"] == 2
    assert [(s["tool"], s["table"]) for s in report["skipped"]] == [
        ("update_table_statistics", "theirs")
    ]


def test_postgresql_a_skip_warning_among_many_tables_names_its_table():
    warnings = ['skipping "b" --- only table or database owner can analyze it', "other"]
    found = postgresql_privileges.skipped_by_warnings(["a", "b"], "ANALYZE", warnings)
    assert list(found) == ["b"] and found["b"].startswith("ANALYZE of b skipped by the server")
    # A skip that names none of them leaves none counted as done.
    unnamed = postgresql_privileges.skipped_by_warnings(["a", "b"], "ANALYZE", ["skipping it"])
    assert list(unnamed) == ["a", "b"]


def test_postgresql_the_servers_own_skip_warning_is_heard(pg_role):
    url, role = pg_role
    pg_tables(url, role, "theirs", rows=10)
    own = create_engine(as_user(url, role), isolation_level="AUTOCOMMIT")
    try:
        with own.connect() as conn:
            # No ownership check first: VACUUM itself succeeds, having only warned.
            with postgresql_privileges.server_warnings(conn) as warnings:
                conn.execute(text("VACUUM theirs"))
            with pytest.raises(StepSkipped, match='skipped by the server: skipping "theirs"'):
                postgresql_privileges.raise_if_skipped("theirs", "VACUUM", warnings, {})
    finally:
        own.dispose()


def test_postgresql_targets_check_names_what_the_role_lacks(home, pg_role):
    url, role = pg_role
    pg_tables(url, role, "theirs", "mine", rows=10)
    with engine(url).connect() as conn:
        conn.execute(text(f"ALTER TABLE mine OWNER TO {role}"))
    config = use_target(home, as_user(url, role))

    info = commands.check_target(config)

    def missing(agent: str, needed_for: str) -> str | None:
        found = [
            n
            for n in info["needs"]
            if n["agent"] == agent and n["needed_for"].startswith(needed_for)
        ]
        assert len(found) == 1, (agent, needed_for, info["needs"])
        return found[0]["missing"]

    assert missing("maintenance", "VACUUM and ANALYZE") == "not on theirs"
    assert missing("maintenance", "REINDEX") == "not on theirs"
    assert missing("maintenance", "the corruption check").startswith("amcheck is not installed")
    assert missing("backup", "pg_dump") is None
    assert missing("backup", "validate_backup") == f"role {role} may not create databases"
    assert missing("log_cleanup", "delete_old_records") == "not on theirs"
    assert any(
        w.startswith("maintenance lacks owner of each table") and w.endswith("not on theirs")
        for w in info["warnings"]
    )
    shown = CliRunner().invoke(cli, ["targets", "check"])
    assert shown.exit_code == 0, shown.output
    words = " ".join(shown.output.split())  # as printed, whatever the line width
    assert "maintenance needs:" in words
    assert "missing: not on theirs" in words
    assert "warning: maintenance lacks owner of each table" in words


def test_postgresql_full_maintenance_finds_a_damaged_index_with_amcheck(home, pg_role):
    url, role = pg_role
    pg_tables(url, role, "sound", "damaged")
    admin = engine(url)
    with admin.connect() as conn:
        conn.execute(text("CREATE EXTENSION amcheck"))
        conn.execute(
            text(
                "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean), "
                f"verify_heapam(regclass, boolean, boolean, text, bigint, bigint) TO {role}"
            )
        )
        for table in ("sound", "damaged"):
            conn.execute(text(f"ALTER TABLE {table} OWNER TO {role}"))
        # The catalog now says damaged_k indexes id, while its entries hold k (= -id): the
        # index disagrees with every row of its table, as after a botched restore.
        conn.execute(
            text("UPDATE pg_index SET indkey = '1' WHERE indexrelid = 'damaged_k'::regclass")
        )
    admin.dispose()
    config = use_target(home, as_user(url, role))

    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())

    assert result.status == "completed", result.error
    health = result.steps[0].output
    assert health["integrity"] == "corrupted: damaged"
    assert any("damaged_k" in i["message"] for i in health["corruption_check"]["issues"])
    report = result.report
    assert report["corruption_found"] is True
    assert report["corruption_check"] == "checked"
    assert report["corruption_by_table"] == {"sound": "ok", "damaged": "corrupted"}
    assert report["corrupted_tables"] == ["damaged"]
    assert report["corruption_methods"] == ["amcheck"]
    assert "corruption in damaged" in report["summary"]


def test_postgresql_vacuum_never_reclaims_a_negative_number_of_bytes(home, pg_url):
    pg_tables(pg_url, "postgres", "events")
    config = use_target(home, pg_url)

    def total() -> int:
        with engine(pg_url).connect() as conn:
            return conn.execute(text("SELECT pg_total_relation_size('events')")).scalar()

    before = total()
    out = one_step(config, "postgresql", "optimize_table", {"table": "events"}).steps[0].output
    after = total()

    # VACUUM writes the visibility map: the files grow, and nothing was given back.
    assert (out["size_before"], out["size_after"]) == (before, after)
    assert after > before
    assert out["reclaimed_bytes"] == 0
    assert "visibility map" in out["size_note"]


def test_postgresql_reindex_lock_timeout_leaves_one_leftover_then_drops_it(
    home, pg_url, edit_config
):
    admin = engine(pg_url)
    with admin.connect() as conn:
        conn.execute(text("CREATE EXTENSION pgstattuple"))
        conn.execute(text("CREATE TABLE events (id int PRIMARY KEY, k int, pad text)"))
        conn.execute(text("CREATE INDEX events_k ON events (k)"))
        conn.execute(
            text(
                "INSERT INTO events SELECT g, (g * 7919) % 997, repeat('p', 50) "
                "FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(text("DELETE FROM events WHERE id % 3 <> 0"))
        conn.execute(text("VACUUM events"))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": pg_url, "lock_timeout_ms": 100}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    config = edit_config(
        maintenance={"default_config": {"max_retries": 2, "retry_backoff_seconds": 0.05}}
    )
    params = {"table": "events", "fragmentation_threshold": 30}
    # A writer's open transaction: REINDEX CONCURRENTLY makes its new copy, then waits
    # for the writer and gives up; the copy cannot be dropped while the writer holds on.
    writer = admin.connect()
    writer.execute(text("SET application_name = 'long-writer'"))
    writer.execute(text("BEGIN"))
    writer.execute(text("INSERT INTO events VALUES (100001, 1, 'x')"))
    try:
        failed = one_step(config, "postgresql", "rebuild_fragmented_indexes", params)
    finally:
        writer.execute(text("ROLLBACK"))
        writer.close()

    def indexes() -> dict[str, bool]:
        with admin.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
                    "WHERE indrelid = 'events'::regclass"
                )
            ).all()
        return dict(rows)

    step = failed.steps[0]
    # The table held throughout: the step ends skipped with the table, why and who
    # held it named (a maintenance run goes on with its other tables), not failed.
    assert step.status == "skipped" and step.attempts == 3, step.error
    assert failed.status == "completed"
    assert step.error.startswith(
        "rebuild_fragmented_indexes of events skipped: its lock was not granted within the "
        "lock wait (tried 3 times: canceling statement due to lock timeout; REINDEX INDEX "
        "CONCURRENTLY events_k timed out waiting for a lock on table events; its invalid "
        "leftover(s) events_k_ccnew cannot be dropped while the lock is held, and are "
        "dropped first when events is rebuilt again), held by pid"
    )
    assert "long-writer" in step.error
    assert step.output["skipped_tables"][0]["cause"] == "locked"
    # One invalid copy, not one per attempt.
    assert indexes() == {"events_pkey": True, "events_k": True, "events_k_ccnew": False}

    again = one_step(config, "postgresql", "rebuild_fragmented_indexes", params)

    assert again.status == "completed", again.error
    out = again.steps[0].output
    assert out["leftovers_dropped"] == ["events_k_ccnew"]
    assert "events_k" in [r["index"] for r in out["rebuilt"]]
    assert indexes() == {"events_pkey": True, "events_k": True}
    sent = [s["sql"] for s in commands.run_statements(config, again.run_id)]
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "events_k_ccnew"' in sent
    admin.dispose()


# --- MariaDB ------------------------------------------------------------------------------


@pytest.fixture
def my_user() -> Iterator[tuple[str, str]]:
    """A scratch database and an account with only SELECT on it: (admin URL, user)."""
    user = f"u_{uuid.uuid4().hex[:12]}"
    with scratch_mysql() as url:
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'127.0.0.1'"))
            conn.execute(
                text(f"GRANT SELECT ON `{make_url(url).database}`.* TO '{user}'@'127.0.0.1'")
            )
        admin.dispose()
        yield url, user
    admin = engine(MYSQL_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'"))
    admin.dispose()


def lower_threshold(home) -> None:
    """A fragmentation threshold my_table's table is well over: InnoDB counts only its
    free extents as free (DATA_FREE), a third of this table's space or a little less,
    as its purge of the deleted rows has gone."""
    path = home / "config" / "agents" / "maintenance.yaml"
    path.write_text(
        path.read_text().replace("fragmentation_threshold: 30", "fragmentation_threshold: 20")
    )


def my_table(url: str, name: str = "t1", rows: int = 40000) -> None:
    admin = engine(url)
    with admin.connect() as conn:
        conn.execute(text("SET SESSION max_recursive_iterations = 10000000"))
        conn.execute(
            text(f"CREATE TABLE {name} (id int PRIMARY KEY, k int, pad varchar(200)) ENGINE=InnoDB")
        )
        conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
        conn.execute(
            text(
                f"INSERT INTO {name} WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL "
                f"SELECT n + 1 FROM g WHERE n < {rows}) SELECT n, n % 97, REPEAT('x', 200) FROM g"
            )
        )
        conn.execute(text(f"DELETE FROM {name} WHERE id % 4 <> 0"))
        # The statistics as of now: a third of the table's space free.
        conn.execute(text(f"ANALYZE TABLE {name}"))
    admin.dispose()


def test_mariadb_work_without_the_privilege_is_skipped(home, my_user):
    url, user = my_user
    my_table(url)  # 3/4 of its rows deleted: a rebuild and OPTIMIZE have work to do
    lower_threshold(home)
    config = use_target(home, as_user(url, user))

    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())

    assert result.status == "completed", result.error
    steps = by_table(result)
    for tool, action, lacks in (
        ("rebuild_fragmented_indexes", "Rebuild", "ALTER"),
        ("optimize_table", "OPTIMIZE TABLE", "INSERT"),
        ("update_table_statistics", "ANALYZE TABLE", "INSERT"),
    ):
        step = steps[(tool, "t1")]
        assert step.status == "skipped"
        assert step.error.startswith(f"{action} of t1 skipped: {user}@127.0.0.1 lacks {lacks}")
    health = result.steps[0].output
    # Without PROCESS the long transactions are unknown, not "none".
    assert health["long_running_transactions"] is None
    assert any("PROCESS" in r for r in health["recommendations"])
    report = result.report
    assert report["statistics_updated"] == 0 and report["tables_optimized"] == 0
    assert len(report["skipped"]) == 3
    # CHECK TABLE needs only SELECT: the table was checked, and found sound.
    assert report["corruption_by_table"] == {"t1": "ok"}
    assert report["corruption_found"] is False and report["corruption_check"] == "checked"

    # And when the server refuses what the grants did not warn of, it is a skip too.
    own = create_engine(as_user(url, user), isolation_level="AUTOCOMMIT")
    try:
        with own.connect() as conn, pytest.raises(StepSkipped, match="refused by the server"):
            mysql_privileges.run_checked(conn, "ANALYZE TABLE `t1`", "t1", "ANALYZE TABLE")
    finally:
        own.dispose()


def test_mariadb_a_result_row_among_many_tables_names_its_table():
    from aishell.handlers.mysql.optimize import _named

    tables = ["b", "a.b", "Logs"]
    assert _named("shop.a.b", tables) == ["a.b"]
    assert _named("shop.logs", tables) == ["Logs"]  # the server's case of the name
    # A row naming none of them counts against them all.
    assert _named("other", tables) == tables


def test_mariadb_targets_check_names_what_the_account_lacks(home, my_user):
    url, user = my_user
    my_table(url, rows=10)
    with engine(url).connect() as conn:
        conn.execute(text(f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY 'Check-pw-1'"))
        digest = conn.execute(text("SELECT PASSWORD('Check-pw-1')")).scalar()
    config = use_target(
        home, make_url(as_user(url, user)).set(password="Check-pw-1").render_as_string(False)
    )

    info = commands.check_target(config)

    # SHOW GRANTS names the password's hash; the check never repeats it.
    assert digest.startswith("*") and digest not in json.dumps(info)
    assert info["privileges"]["grants"]

    needs = {(n["agent"], n["privilege"]): n["missing"] for n in info["needs"]}
    assert needs[("maintenance", "SELECT, INSERT")] == "INSERT on the database"
    assert needs[("maintenance", "SELECT")] is None
    assert needs[("maintenance", "PROCESS (global)")] == "PROCESS globally"
    assert needs[("log_cleanup", "SELECT, DELETE")] == "DELETE on the database"
    assert any(w.startswith("maintenance lacks SELECT, INSERT") for w in info["warnings"])
    # PROCESS only sharpens figures: listed, not warned about.
    assert not any(w.startswith("maintenance lacks PROCESS") for w in info["warnings"])


def test_mariadb_reclaimed_bytes_are_the_files_shrinking(home, mysql_url):
    my_table(mysql_url)
    lower_threshold(home)
    database = make_url(mysql_url).database

    def file_size() -> int:
        with engine(mysql_url).connect() as conn:
            return conn.execute(
                text(
                    "SELECT FILE_SIZE FROM information_schema.INNODB_SYS_TABLESPACES "
                    "WHERE NAME = :n"
                ),
                {"n": f"{database}/t1"},
            ).scalar()

    before = file_size()
    config = use_target(home, mysql_url)
    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())
    after = file_size()

    assert result.status == "completed", result.error
    report = result.report
    assert report["size_method"] == "tablespace file size"
    assert (report["size_before"], report["size_after"]) == (before, after)
    assert report["reclaimed_bytes"] == before - after > 0


# --- SQLite -------------------------------------------------------------------------------


@contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """A database file this process cannot write: mode 0444, and immutable for root,
    whom file modes do not stop."""
    os.chmod(path, 0o444)
    immutable = os.geteuid() == 0
    if immutable:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, 0o644)


def test_sqlite_statistics_of_a_read_only_file_are_skipped(config, demo_db):
    with read_only_file(demo_db):
        result = commands.run_job(config, "maintenance", {"type": "quick"})
        info = commands.check_target(config)
        handle = open_target(config, None)
        conn = handle.connect()
        try:
            # Past the check, SQLite's own refusal is a skip as well.
            with pytest.raises(StepSkipped, match="refused by SQLite: .*readonly"):
                sqlite_privileges.write(conn, 'ANALYZE "users"', "users", "ANALYZE")
        finally:
            conn.close()
            handle.close()

    assert result.status == "completed", result.error
    # Quick maintenance analyzes the demo's four small tables in one step: it ends
    # skipped, each table listed with why.
    (step,) = [s for s in result.steps if s.tool == "update_table_statistics"]
    why = f"the database file {demo_db.resolve()} is read-only for this process"
    assert step.status == "skipped"
    assert step.error == f"ANALYZE of app_logs skipped: {why}"
    assert step.output["skipped_tables"] == [
        {"table": t, "reason": f"ANALYZE of {t} skipped: {why}"} for t in step.params["tables"]
    ]
    assert step.output["tables_analyzed"] == 0 and step.output["statistics_updated"] is False
    report = result.report
    assert report["statistics_updated"] == 0 and len(report["skipped"]) == 4
    # Quick maintenance checks nothing for corruption, and says so rather than "false".
    assert report["corruption_found"] is None
    assert report["corruption_check"] == "not part of quick maintenance"
    assert any(w.startswith("maintenance lacks write access") for w in info["warnings"])


def test_sqlite_full_maintenance_finds_an_index_that_disagrees_with_its_table(config, demo_db):
    corrupt_index(demo_db)

    result = commands.run_job(config, "maintenance", {"type": "full"}, approver=PreApproved())

    assert result.status == "completed", result.error
    assert result.steps[0].output["integrity"] == "corrupted: ledger"
    report = result.report
    assert report["corruption_found"] is True and report["corrupted_tables"] == ["ledger"]
    assert report["corruption_by_table"]["ledger"] == "corrupted"
    assert {s for t, s in report["corruption_by_table"].items() if t != "ledger"} == {"ok"}
    assert report["corruption_methods"] == ["integrity_check"]
