"""The maintenance agent on live PostgreSQL and MariaDB servers."""

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from click.testing import CliRunner
from sqlalchemy import event, text
from sqlalchemy.pool import Pool

from aishell import commands
from aishell.cli import cli
from aishell.errors import TargetError
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan
from tests.services import engine

TABLES = 12


def populate(url: str, tables: int = TABLES, rows: int = 3000) -> None:
    """Tables with indexes, written in random key order, then half deleted. Their rows
    are written in one transaction (on PostgreSQL the tables made in it too): one
    commit waits for the disk, not one a statement."""
    eng = engine(url)
    pg = url.startswith("postgresql")
    names = [f"t{i:03d}" for i in range(tables)]
    columns = "id INTEGER PRIMARY KEY, k INTEGER NOT NULL, note VARCHAR(200) NOT NULL"
    with eng.connect() as conn:
        if pg:
            conn.execute(text("BEGIN"))
            for name in names:
                conn.execute(text(f"CREATE TABLE {name} ({columns})"))
                conn.execute(text(f"CREATE INDEX {name}_k ON {name} (k)"))
                conn.execute(
                    text(
                        f"INSERT INTO {name} SELECT g, (g * 7919) % {rows}, repeat('x', 150) "
                        f"FROM generate_series(1, {rows}) g"
                    )
                )
                conn.execute(text(f"DELETE FROM {name} WHERE id % 2 = 0"))
        else:
            # Each CREATE TABLE commits on its own: the index is made with the table.
            for name in names:
                conn.execute(text(f"CREATE TABLE {name} ({columns}, INDEX {name}_k (k))"))
            conn.execute(text("BEGIN"))
            for name in names:
                conn.execute(
                    text(
                        f"INSERT INTO {name} SELECT seq, (seq * 7919) % {rows}, "
                        f"REPEAT('x', 150) FROM seq_1_to_{rows}"
                    )
                )
                conn.execute(text(f"DELETE FROM {name} WHERE id % 2 = 0"))
        conn.execute(text("COMMIT"))
    eng.dispose()


def test_full_maintenance_completes_with_a_report(server_config, server_url):
    populate(server_url)
    result = commands.run_job(
        server_config, "maintenance", {"type": "full"}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    assert all(s.status == "succeeded" for s in result.steps)
    report = result.report
    assert report["statistics_updated"] == TABLES
    assert len(report["tables_processed"]) == TABLES
    assert report["size_before"] > 0 and report["size_after"] > 0
    health = result.steps[0].output
    assert [t["table"] for t in health["tables"]][:1]  # ranked by urgency
    assert set(report["fragmentation"]) == {f"t{i:03d}" for i in range(TABLES)}


def test_a_run_reads_nothing_twice_before_it_writes(server_config, server_url):
    """What a step measured to render its SQL (shown, approved) is what its first
    attempt runs on, and what a step measured of a table the next step on it starts
    from (the rebuild from the fragmentation step's readings, on MariaDB the optimize
    from the rebuild's): no read goes to the server twice before something writes, and
    the grants are read once a run, not once a table."""
    populate(server_url, tables=3, rows=20000)
    with engine(server_url).connect() as conn:
        if server_url.startswith("postgresql"):
            # pgstattuple measures the indexes, and amcheck checks them: the health
            # step reads every table's indexes with it.
            conn.execute(text("CREATE EXTENSION pgstattuple"))
            conn.execute(text("CREATE EXTENSION amcheck"))
        else:  # the catalog's sizes as of now
            conn.execute(text("ANALYZE TABLE t000, t001, t002"))
        conn.commit()
    result = commands.run_job(
        server_config, "maintenance", {"type": "full"}, approver=PreApproved()
    )
    assert result.status == "completed", result.error
    # The rebuilds wrote: the reads after them are checked too.
    assert sum(s.output["indexes_rebuilt"] for s in result.steps if "indexes_rebuilt" in s.output)
    audit = commands.run_statements(server_config, result.run_id)
    seen: set[tuple[str, str]] = set()
    for row in audit:
        sent = (row["sql"], json.dumps(row["parameters"], sort_keys=True))
        if not row["sql"].lstrip().upper().startswith(("SELECT", "SHOW")):
            seen.clear()  # a write: what is read after it is new
            continue
        tool = result.steps[row["step_index"]].tool
        assert sent not in seen, f"{tool} read again: {row['sql'][:120]}"
        seen.add(sent)
    # The health check reads the tables' oids and indexes once for them all, then
    # checks each table.
    health = Counter(r["sql"] for r in audit if r["step_index"] == 0 and "pg_class" in r["sql"])
    assert all(n == 1 for n in health.values()), health
    grants = [r for r in audit if r["sql"].strip().upper() == "SHOW GRANTS"]
    # MariaDB's health check reads them, and every step after it uses what it read.
    assert len(grants) == (0 if server_url.startswith("postgresql") else 1)


@pytest.mark.parametrize("between", ["update_table_statistics", "optimize_table"])
def test_a_step_that_writes_between_makes_the_next_measure_again(
    server_config, server_url, between
):
    """The rebuild starts from the fragmentation step's readings only while no step has
    written to the table since: an ANALYZE changes the estimates they are made from, a
    VACUUM or OPTIMIZE the pages. Another table's write leaves them as they are."""
    populate(server_url, tables=2, rows=20000)
    pg = server_url.startswith("postgresql")
    with engine(server_url).connect() as conn:
        if pg:
            conn.execute(text("CREATE EXTENSION pgstattuple"))
        else:
            conn.execute(text("ANALYZE TABLE t000, t001"))
        conn.commit()

    def run(middle: str) -> list[str]:
        steps = (
            Step("step_1", "analyze_table_fragmentation", {"table": "t000"}),
            Step("step_2", between, {"table": middle}),
            Step("step_3", "rebuild_fragmented_indexes", {"table": "t000"}),
        )
        plan = Plan("maintenance", "db", "postgresql" if pg else "mysql", {}, steps)
        result = commands.apply_plan(server_config, plan, approver=PreApproved())
        assert result.status == "completed", result.error
        audit = commands.run_statements(server_config, result.run_id)
        # A reading is what a query reads, up to its WHERE: the fragmentation step may
        # have read the table with the plan's others, the rebuild alone or with the
        # tables due a read again (a WITH of the indexes' query reads too).
        measured = {reading(r["sql"]) for r in audit if r["step_index"] == 0}
        again = []
        for sql in (r["sql"] for r in audit if r["step_index"] == 2):
            if not sql.lstrip().upper().startswith(("SELECT", "SHOW", "WITH")):
                break  # the rebuild wrote: what it reads next is of the rebuilt table
            again += [sql] if reading(sql) in measured else []
        return again

    def reading(sql: str) -> str:
        return " ".join(sql.split()).split(" WHERE ")[0]

    # The table's indexes (PostgreSQL), its row in information_schema (MariaDB).
    assert run("t000"), "the rebuild used readings a write had made stale"
    assert not run("t001"), "the rebuild measured again what nothing had changed"


def test_full_maintenance_through_the_cli(server_config, server_url):
    populate(server_url, tables=3)
    result = CliRunner().invoke(cli, ["run", "maintenance", "--type", "full", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "completed"
    assert data["report"]["summary"].startswith("full maintenance of 3 table(s)")


def test_a_hostile_table_name_is_refused_and_nothing_runs(server_config, server_url):
    populate(server_url, tables=1, rows=10)
    with pytest.raises(TargetError, match="not found in target 'db'"):
        commands.run_job(
            server_config, "maintenance", {"type": "quick", "tables": ['x"; DROP TABLE t000; --']}
        )
    with engine(server_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t000")).scalar() == 5


def test_dry_run_is_read_only_in_the_server(server_config, server_url):
    populate(server_url, tables=2, rows=100)
    from aishell.targets.engines import open_target

    handle = open_target(server_config, None, read_only=True)
    conn = handle.connect()
    try:
        with pytest.raises(Exception, match="read-only|READ ONLY"):
            conn.execute(text("DELETE FROM t000"))
    finally:
        conn.close()
        handle.close()
    result = commands.run_job(server_config, "maintenance", {"type": "full"}, dry_run=True)
    assert result.status == "completed"
    assert {s.status for s in result.steps} <= {"succeeded", "previewed"}


def test_planning_reads_in_a_read_only_session_of_the_run_s_pool(server_config, server_url):
    from aishell.targets.access import session_access
    from aishell.targets.engines import open_target

    populate(server_url, tables=1, rows=10)
    handle = open_target(server_config, None)
    try:
        conn = handle.reading().connect()
        with pytest.raises(Exception, match="read-only|READ ONLY"):
            conn.execute(text("DELETE FROM t000"))
        conn.rollback()
        used = conn.connection.dbapi_connection
        conn.close()
        # The run takes up the same connection, and a step that writes makes it
        # read-write again.
        conn = handle.connect()
        assert conn.connection.dbapi_connection is used
        session_access(conn, read_only=False, target_read_only=False)
        assert conn.execute(text("DELETE FROM t000 WHERE 1 = 0")).rowcount == 0
        conn.close()
    finally:
        handle.close()


def test_a_scratch_database_is_made_on_a_connection_planning_left_read_only(
    server_config, server_url
):
    """Planning leaves read-only sessions in the pool; the validation's second session,
    which makes and drops its scratch database, takes one and writes all the same."""
    from aishell import commands
    from aishell.state.store import StateStore

    result = commands.run_job(server_config, "backup", {"type": "full"})
    assert result.status == "completed", result.error
    validate = next(s for s in result.steps if s.tool == "validate_backup")
    assert validate.status == "succeeded", validate.error
    with StateStore(server_config.state_url) as store:
        sent = [
            s["sql"]
            for s in store.list_statements(result.run_id)
            if s["step_index"] == validate.index and s["error"] is None
        ]
    assert any(sql.startswith("CREATE DATABASE ") for sql in sent), sent
    assert any(sql.startswith("DROP DATABASE IF EXISTS ") for sql in sent), sent


@contextmanager
def target_connections() -> Iterator[tuple[list[object], list[object]]]:
    """The DBAPI connections opened and closed to the servers meanwhile (the state
    store's SQLite ones left out)."""
    opened: list[object] = []
    closed: list[object] = []

    def connected(dbapi_conn: object, _record: object) -> None:
        if not isinstance(dbapi_conn, sqlite3.Connection):
            opened.append(dbapi_conn)

    def gone(dbapi_conn: object, _record: object) -> None:
        if not isinstance(dbapi_conn, sqlite3.Connection):
            closed.append(dbapi_conn)

    event.listen(Pool, "connect", connected)
    event.listen(Pool, "close", gone)
    try:
        yield opened, closed
    finally:
        event.remove(Pool, "connect", connected)
        event.remove(Pool, "close", gone)


def test_a_run_opens_two_connections_to_its_target(server_config, server_url):
    """Planning, the run lock and the steps share one pool: the lock's connection is the
    one planning used, the steps have the other."""
    populate(server_url, tables=3, rows=100)
    with target_connections() as (opened, _closed):
        result = commands.run_job(
            server_config, "maintenance", {"type": "quick"}, approver=PreApproved()
        )
    assert result.status == "completed", result.error
    assert len(opened) == 2


def test_a_run_refused_before_it_starts_closes_the_connection_planning_opened(
    server_config, server_url
):
    from aishell.errors import UsageError

    populate(server_url, tables=1, rows=10)
    with (
        target_connections() as (opened, closed),
        pytest.raises(UsageError, match="Unknown safety level"),
    ):
        commands.run_job(server_config, "maintenance", {"type": "quick"}, safety_level="lax")
    assert opened and set(map(id, closed)) == set(map(id, opened))


def test_targets_check_warns_about_an_over_broad_account(server_config, server_url):
    result = CliRunner().invoke(cli, ["targets", "check", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["target"] == "db" and info["server_version"]
    # The test servers connect as postgres / root: exactly what a DBA should not give aishell.
    assert any("superuser" in w or "ALL PRIVILEGES" in w for w in info["warnings"])
    listed = json.loads(CliRunner().invoke(cli, ["targets", "list", "--json"]).stdout)
    assert {t["name"] for t in listed["targets"]} == {"demo", "db"}


def test_password_comes_from_the_environment_and_is_never_stored(
    edit_config, server_url, monkeypatch, home
):
    from sqlalchemy.engine import make_url

    secret = "s3cret-Value-42"
    url = make_url(server_url)
    if url.get_backend_name() == "mysql":
        # MariaDB checks passwords: an account of our own for this database.
        user = f"u{url.database[-10:]}"
        with engine(server_url).connect() as conn:
            conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'"))
            conn.execute(text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
            conn.execute(text("GRANT PROCESS ON *.* TO '" + user + "'@'%'"))
        url = url.set(username=user)
    config = edit_config(
        {
            "targets": {"db": {"url": url.render_as_string(), "password_env": "AISHELL_TEST_PW"}},
            "default_target": "db",
        }
    )
    monkeypatch.delenv("AISHELL_TEST_PW", raising=False)
    from aishell.errors import ConfigError

    with pytest.raises(
        ConfigError, match="AISHELL_TEST_PW \\(targets.db.password_env in .*\\) is not set; export "
    ):
        commands.run_job(config, "maintenance", {"type": "quick"})
    # Trust auth ignores the password, so any value connects; it must never be written down.
    monkeypatch.setenv("AISHELL_TEST_PW", secret)
    populate(server_url, tables=1, rows=10)
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    assert result.status == "completed"
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    if url.get_backend_name() == "mysql":
        with engine(server_url).connect() as conn:
            conn.execute(text(f"DROP USER '{url.username}'@'%'"))


def one_step(config, tool, params, approver=None):
    dialect = config.target("db")[1].url.split("+")[0]
    plan = one_step_plan("maintenance", "db", dialect, tool, params)
    return commands.apply_plan(config, plan, approver=approver or PreApproved())


@pytest.fixture
def pg_config(home, pg_url):
    import yaml

    from aishell.config.models import load_config

    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": pg_url, "lock_timeout_ms": 100}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def pg_fragmented(url):
    eng = engine(url)
    with eng.connect() as conn:
        conn.execute(text("CREATE EXTENSION pgstattuple"))
        conn.execute(text("CREATE EXTENSION amcheck"))
        conn.execute(text("CREATE TABLE events (id int PRIMARY KEY, k int, pad text)"))
        conn.execute(text("CREATE INDEX events_k ON events (k)"))
        conn.execute(
            text(
                "INSERT INTO events SELECT g, (g * 7919) % 997, repeat('p', 100) "
                "FROM generate_series(1, 50000) g"
            )
        )
        conn.execute(text("DELETE FROM events WHERE id % 3 <> 0"))
        conn.execute(text("VACUUM events"))
    eng.dispose()


def test_postgresql_rebuilds_fragmented_indexes_concurrently(pg_config, pg_url):
    pg_fragmented(pg_url)
    # An interrupted REINDEX CONCURRENTLY leaves an invalid *_ccnew index behind.
    with (
        engine(pg_url).connect() as conn,
        pytest.raises(Exception, match="could not create unique index"),
    ):
        conn.execute(text("CREATE UNIQUE INDEX CONCURRENTLY events_k_ccnew ON events (k)"))
    fragmentation = one_step(pg_config, "analyze_table_fragmentation", {"table": "events"})
    output = fragmentation.steps[0].output
    assert output["method"] == "pgstattuple"
    index = next(i for i in output["indexes"] if i["index"] == "events_k")
    assert index["free_space_percent"] > 30
    result = one_step(
        pg_config, "rebuild_fragmented_indexes", {"table": "events", "fragmentation_threshold": 30}
    )
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert out["leftovers_dropped"] == ["events_k_ccnew"]
    rebuilt = {r["index"]: r for r in out["rebuilt"]}
    assert "events_k" in rebuilt
    assert rebuilt["events_k"]["bytes_after"] < rebuilt["events_k"]["bytes_before"]
    assert any(
        "REINDEX INDEX CONCURRENTLY" in s["sql"]
        for s in commands.run_statements(pg_config, result.run_id)
    )
    with engine(pg_url).connect() as conn:
        names = (
            conn.execute(
                text(
                    "SELECT indexrelid::regclass::text FROM pg_index "
                    "WHERE indrelid = 'events'::regclass"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(names) == ["events_k", "events_pkey"]


def test_postgresql_corruption_check_uses_amcheck(pg_config, pg_url):
    pg_fragmented(pg_url)
    result = one_step(pg_config, "check_table_corruption", {"tables": ["events"]})
    out = result.steps[0].output
    assert out["method"] == "amcheck" and out["ok"] and out["not_checked"] is None


def test_postgresql_without_amcheck_says_what_was_not_checked(pg_config, pg_url):
    populate(pg_url, tables=1, rows=10)
    out = one_step(pg_config, "check_table_corruption", {"tables": ["t000"]}).steps[0].output
    assert out["method"] == "full read of each table"
    assert out["not_checked"].startswith("amcheck is not installed")
    frag = one_step(pg_config, "analyze_table_fragmentation", {"table": "t000"}).steps[0].output
    # Ten rows, never analyzed (under autovacuum's threshold): no statistics to estimate from.
    assert frag["method"].startswith("not measured: the table has no statistics"), frag
    assert frag["fragmentation_percent"] is None


def test_a_lock_wait_is_retried_then_names_the_blocker(pg_config, pg_url, edit_config):
    populate(pg_url, tables=1, rows=10)
    config = edit_config(
        maintenance={"default_config": {"max_retries": 2, "retry_backoff_seconds": 0.05}}
    )
    blocker = engine(pg_url).connect()
    blocker.execute(text("SET application_name = 'nightly-report'"))
    blocker.execute(text("BEGIN"))
    blocker.execute(text("LOCK TABLE t000 IN ACCESS EXCLUSIVE MODE"))
    try:
        result = one_step(config, "count_table_rows", {"table": "t000"})
        # A maintenance step of one table's work ends skipped instead (heldtables.py).
        skipped = one_step(config, "update_table_statistics", {"table": "t000"})
    finally:
        blocker.execute(text("ROLLBACK"))
        blocker.close()
    step = result.steps[0]
    assert result.status == "failed" and step.attempts == 3
    assert "lock timeout" in step.error
    assert "after 3 attempt(s) the lock was still held by pid" in step.error
    assert "nightly-report" in step.error
    events = commands.show_run(config, result.run_id)["events"]
    assert len([e for e in events if e["kind"] == "step_retry"]) == 2
    held = skipped.steps[0]
    # Held from the start, it is met when its rows are to be counted against the
    # default max_table_size, tried again there, and never sent its ANALYZE.
    assert skipped.status == "completed" and held.status == "skipped" and held.attempts == 0
    assert (
        "while it was measured (tried 3 times: canceling statement due to lock timeout), "
        "held by pid"
    ) in held.error
    assert "nightly-report" in held.error
    # It never cancelled the other session.
    with engine(pg_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t000")).scalar() == 5


def test_a_step_timeout_is_enforced_by_the_server(pg_config, pg_url, edit_config):
    populate(pg_url, tables=1, rows=10)
    config = edit_config(maintenance={"default_config": {"max_execution_time": 1}})
    blocker = engine(pg_url).connect()
    blocker.execute(text("BEGIN"))
    blocker.execute(text("LOCK TABLE t000 IN ACCESS EXCLUSIVE MODE"))
    config.main.targets["db"].__dict__["lock_timeout_ms"] = 60_000  # wait on the lock
    try:
        result = one_step(config, "count_table_rows", {"table": "t000"})
    finally:
        blocker.execute(text("ROLLBACK"))
        blocker.close()
    assert result.status == "failed"
    assert "exceeded its time limit of 1 s" in result.steps[0].error


def test_a_terminated_backend_is_reconnected_and_the_step_retried(pg_config, pg_url):
    """pg_terminate_backend from another session in the middle of a step."""
    import threading
    import time

    populate(pg_url, tables=1, rows=10)
    with engine(pg_url).connect() as conn:
        conn.execute(text("CREATE TABLE kill_me AS SELECT 1 AS x"))

    # Sleeps while kill_me has its row: the first attempt for as long as the killer could
    # need on a loaded machine. The killer waits for it to sleep (past its count of
    # kill_me), empties kill_me, then ends the session: the retry does not sleep.
    slow = "SELECT pg_sleep(30 * (SELECT count(*) FROM kill_me)), count(*) AS n FROM t000"
    site = pg_config.home / "site_tools"
    site.mkdir()
    (site / "slow_read.yaml").write_text(
        "name: slow_read\ndescription: Read slowly.\ncategory: analysis\nrisk_level: safe\n"
        "required_capabilities: [database_read]\nmax_execution_time: 60\nidempotent: true\n"
        "params: {type: object, properties: {}}\nreturns: {type: object}\n"
        "examples: [{params: {}}]\n"
        f"implementations: {{postgresql: {{sql: '{slow}', result: one}}}}\n"
        "locks: {postgresql: [{lock: ACCESS SHARE, object: table, held: while it reads}]}\n"
    )
    import yaml

    from aishell.config.models import load_config

    path = pg_config.home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=pg_config.home)

    def kill_it():
        admin = engine(pg_url).connect()
        for _ in range(300):
            found = (
                admin.execute(
                    text(
                        # This test's database only: never another process's session.
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'aishell' AND query LIKE 'SELECT pg_sleep%' "
                        "AND state = 'active' AND wait_event = 'PgSleep'"
                    )
                )
                .scalars()
                .all()
            )
            if found:
                admin.execute(text("DELETE FROM kill_me"))
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": found[0]})
                break
            time.sleep(0.05)
        admin.close()

    killer = threading.Thread(target=kill_it)
    killer.start()
    result = commands.apply_plan(
        config, one_step_plan("maintenance", "db", "postgresql", "slow_read", {})
    )
    killer.join()
    assert result.status == "completed", result.error
    assert result.steps[0].attempts == 2
    retry = [
        e for e in commands.show_run(config, result.run_id)["events"] if e["kind"] == "step_retry"
    ]
    assert retry and "terminat" in retry[0]["data"]["error"]


@pytest.fixture
def my_config(home, mysql_url):
    import yaml

    from aishell.config.models import load_config

    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": mysql_url, "lock_timeout_ms": 1000}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_mariadb_rebuilds_a_table_online_and_checks_it(my_config, mysql_url):
    populate(mysql_url, tables=1, rows=2000)
    result = one_step(
        my_config,
        "rebuild_fragmented_indexes",
        {"table": "t000", "fragmentation_threshold": 0, "min_pages": 1},
    )
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert [r["table"] for r in out["rebuilt"]] == ["t000"]
    sent = [s["sql"] for s in commands.run_statements(my_config, result.run_id)]
    assert "ALTER TABLE `t000` FORCE, ALGORITHM=INPLACE, LOCK=NONE" in sent
    check = one_step(my_config, "check_table_corruption", {"tables": ["t000"]}).steps[0].output
    assert check["ok"] and check["method"] == "CHECK TABLE"


def test_mariadb_lock_wait_names_the_blocker(my_config, mysql_url, edit_config):
    populate(mysql_url, tables=1, rows=10)
    config = edit_config(
        maintenance={"default_config": {"max_retries": 1, "retry_backoff_seconds": 0.05}}
    )
    blocker = engine(mysql_url).connect()
    blocker.execute(text("LOCK TABLES t000 WRITE"))
    try:
        result = one_step(
            config,
            "rebuild_fragmented_indexes",
            {"table": "t000", "fragmentation_threshold": 0, "min_pages": 1},
        )
    finally:
        blocker.execute(text("UNLOCK TABLES"))
        blocker.close()
    step = result.steps[0]
    # One table's work: skipped with the table and its holder named, the run goes on.
    assert result.status == "completed" and step.status == "skipped"
    assert "Lock wait timeout exceeded" in step.error
    assert "), held by connection" in step.error
    assert step.output["skipped_tables"][0]["table"] == "t000"


def test_the_state_store_can_live_on_postgresql(edit_config, demo_db, pg_url):
    config = edit_config({"state": {"url": pg_url}})
    result = commands.run_job(config, "maintenance", {"type": "quick"})
    assert result.status == "completed"
    shown = commands.show_run(config, result.run_id)
    assert [s["status"] for s in shown["steps"]] == ["succeeded"] * len(result.steps)
    assert commands.run_statements(config, result.run_id)
    with engine(pg_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1


def test_mysql_connections_share_one_tls_context_in_the_preferred_mode(
    home, mysql_url, monkeypatch
):
    """PyMySQL's preferred TLS mode builds a context per connection (the system's
    certificates loaded each time); a target's connections share one, and still work.
    PyMySQL as it comes: not the context the suite's own sessions share."""
    import pymysql

    from aishell.config.models import load_config
    from aishell.targets.engines import open_target
    from tests.helpers import use_target
    from tests.services import LIBRARY_TLS_CONTEXT

    monkeypatch.setattr(pymysql.connections.Connection, "_create_ssl_ctx", LIBRARY_TLS_CONTEXT)
    use_target(home, mysql_url)
    target = open_target(load_config(home=home), "db")
    try:
        first, second = target.connect(), target.connect()
        contexts = [c.connection.driver_connection.ctx for c in (first, second)]
        assert contexts[0] is not None and contexts[0] is contexts[1]
        assert (
            first.execute(text("SELECT 1")).scalar()
            == second.execute(text("SELECT 2")).scalar() - 1
        )
        first.close()
        second.close()
    finally:
        target.close()
