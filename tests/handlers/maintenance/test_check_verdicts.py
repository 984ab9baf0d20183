"""A corruption check says a table is damaged only when the server found damage, and
sound only when the check ran to its end; a repair is reported done only when the
check after it found the table sound.

MariaDB's CHECK TABLE answers in rows: a lock wait that timed out (another session
holds the table with LOCK TABLES) comes back as an error row and "Operation failed",
and a check cut short by max_statement_time or KILL QUERY comes back "OK"."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.handlers.mysql.corruption import corruption_check
from aishell.policy.approvers import PreApproved
from aishell.targets.engines import open_target
from aishell.tool.context import ToolContext
from tests.helpers import one_step_plan, use_target
from tests.services import PG_ADMIN, engine, scratch_postgresql


def _session(url: str) -> pymysql.connections.Connection[Any]:
    u = make_url(url)
    return pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )


def _table(url: str, name: str, rows: int, engine_name: str = "InnoDB") -> None:
    with _session(url) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE `{name}` (id int PRIMARY KEY, k int, pad varchar(500), KEY (k)) "
            f"ENGINE={engine_name}"
        )
        cur.execute(
            f"INSERT INTO `{name}` SELECT seq, seq % 1000, REPEAT('x', 500) FROM seq_1_to_{rows}"
        )


@contextmanager
def locked(url: str, table: str) -> Iterator[int]:
    """Another session holding the table with LOCK TABLES ... WRITE; its connection id."""
    conn = _session(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLES `{table}` WRITE")
        yield conn.thread_id()
        with conn.cursor() as cur:
            cur.execute("UNLOCK TABLES")
    finally:
        conn.close()


def _by_table(summary: dict[str, Any]) -> dict[str, str]:
    return dict(summary["status_by_table"])


def _reasons(summary: dict[str, Any]) -> dict[str, str]:
    return {u["table"]: u["reason"] for u in summary["unchecked_tables"]}


def test_mariadb_a_table_another_session_holds_is_not_checked_rather_than_corrupted(
    home, mysql_url
):
    _table(mysql_url, "held", 2000)
    _table(mysql_url, "free", 2000)
    config = use_target(home, mysql_url)
    plan = one_step_plan(
        "maintenance", "db", "mysql", "check_table_corruption", {"tables": ["held", "free"]}
    )

    with locked(mysql_url, "held") as holder:
        result = commands.apply_plan(config, plan, approver=PreApproved())

    step = result.steps[0]
    assert step.status == "succeeded", step.error
    summary = step.output
    assert _by_table(summary) == {"held": "not checked", "free": "ok"}
    assert summary["corrupted_tables"] == []
    # Not found sound either: one table could not be checked.
    assert summary["corruption_found"] is None and summary["ok"] is False
    # Why, and who holds the lock, named as every lock timeout names its holder: who
    # to ask, or wait for, before checking it again.
    assert _reasons(summary)["held"].startswith(
        "CHECK TABLE of held could not run: Lock wait timeout exceeded; try restarting "
        f"transaction (tried 3 times); the lock is held by connection {holder} ("
    ), _reasons(summary)["held"]
    assert summary["unchecked_tables"][0]["cause"] == "locked"


def test_mariadb_a_check_held_off_once_is_tried_again_for_that_table(home, mysql_url):
    """A table held past the lock timeout is checked again a second later, on its own,
    and found sound, where it was reported not checked."""
    _table(mysql_url, "held", 2000)
    _table(mysql_url, "free", 2000)
    config = use_target(home, mysql_url)
    plan = one_step_plan(
        "maintenance", "db", "mysql", "check_table_corruption", {"tables": ["held", "free"]}
    )
    holder = _session(mysql_url)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLES `held` WRITE")
    with _released_after_the_first_wait(mysql_url, holder, "CHECK TABLE `held`"):
        result = commands.apply_plan(config, plan, approver=PreApproved())

    step = result.steps[0]
    assert step.status == "succeeded" and step.attempts == 1, step.error
    assert _by_table(step.output) == {"held": "ok", "free": "ok"}
    assert step.output["corruption_found"] is False


def test_mariadb_emergency_maintenance_leaves_a_held_table_alone(home, mysql_url):
    """The check that could not run finds no damage, so nothing is repaired: no copy of
    the table, no rebuild."""
    _table(mysql_url, "held", 2000)
    config = use_target(home, mysql_url)

    with locked(mysql_url, "held"):
        result = commands.run_job(
            config, "maintenance", {"type": "emergency", "tables": ["held"]}, approver=PreApproved()
        )

    check, repair = result.steps[1], result.steps[2]
    assert check.tool == "check_table_corruption" and repair.tool == "repair_corrupted_tables"
    assert check.status == "skipped"
    assert check.error.startswith("No table could be checked for corruption: CHECK TABLE of held")
    assert repair.status == "skipped"
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert [r[0] for r in cur.fetchall()] == ["held"]


def test_mariadb_a_check_the_time_limit_cut_short_is_not_sound(home, mysql_url):
    """The server's statement limit (what a step's max_execution_time sets) cuts the
    check, and MariaDB still answers OK: a check that ended at the step's limit is not
    taken for a finished one."""
    _table(mysql_url, "big", 400_000)
    _table(mysql_url, "small", 100)
    target = open_target_for(home, mysql_url)
    try:
        with target.engine.connect() as conn:
            ctx = ToolContext(conn, "mysql", "db", quote_identifier=target.quote)
            # A full check of `big` takes several times this limit: the server cuts it
            # (its counter says so) and still answers OK.
            cut = "SHOW SESSION STATUS LIKE 'Max_statement_time_exceeded'"
            before = int(conn.execute(text(cut)).one()[1])
            conn.execute(text("SET SESSION max_statement_time = 0.1"))
            rows = conn.execute(text("CHECK TABLE `big`")).all()
            assert [tuple(r)[2:] for r in rows] == [("status", "OK")]
            assert int(conn.execute(text(cut)).one()[1]) == before + 1
            ctx.deadline = time.monotonic() + 0.1
            summary = corruption_check(conn, ctx, ["big"])
            # With time to finish, a check counts.
            ctx.deadline = time.monotonic() + 30
            conn.execute(text("SET SESSION max_statement_time = 30"))
            after = corruption_check(conn, ctx, ["small"])
    finally:
        target.close()
    assert _by_table(summary) == {"big": "not checked"}
    assert "reached the step's time limit" in _reasons(summary)["big"]
    assert _by_table(after) == {"small": "ok"}  # with time to finish, the check counts


def test_mariadb_a_table_gone_before_its_check_is_reported_gone(home, mysql_url):
    """Dropped since the plan: neither checked nor left unchecked (nothing of it is left
    to be damaged), so the other tables' verdict stands."""
    _table(mysql_url, "stays", 100)
    target = open_target_for(home, mysql_url)
    try:
        with target.engine.connect() as conn:
            ctx = ToolContext(conn, "mysql", "db", quote_identifier=target.quote)
            summary = corruption_check(conn, ctx, ["stays", "gone"])
    finally:
        target.close()
    assert _by_table(summary) == {"stays": "ok"}
    assert summary["tables_gone"] == ["gone"]
    assert summary["corruption_found"] is False and summary["unchecked_tables"] == []


def test_mariadb_damage_is_still_found_and_repaired(home, mysql_url):
    """A MyISAM index file overwritten on disk: CHECK TABLE says Corrupt; a repair
    (REPAIR TABLE, exactly as its step showed) mends it, and the check finds it sound."""
    _table(mysql_url, "damaged", 5000, engine_name="MyISAM")
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@datadir, DATABASE()")
        datadir, database = cur.fetchone()
        cur.execute("FLUSH TABLES `damaged`")
        with open(os.path.join(datadir, database, "damaged.MYI"), "r+b") as index_file:
            index_file.seek(4096)
            index_file.write(b"\xff" * 2048)
        cur.execute("FLUSH TABLES `damaged`")
    config = use_target(home, mysql_url)
    check_plan = one_step_plan(
        "maintenance", "db", "mysql", "check_table_corruption", {"tables": ["damaged"]}
    )
    repair_plan = one_step_plan(
        "maintenance",
        "db",
        "mysql",
        "repair_corrupted_tables",
        {"tables": ["damaged"], "create_backup": False},
    )

    try:
        check = commands.apply_plan(config, check_plan, approver=PreApproved()).steps[0]
        repair = commands.apply_plan(config, repair_plan, approver=PreApproved()).steps[0]
    finally:
        _drop_backups(datadir, database)

    assert check.output["corrupted_tables"] == ["damaged"]
    assert "Corrupt" in [i["message"] for i in check.output["issues"]]
    assert repair.status == "succeeded", repair.error
    assert repair.sql == ["REPAIR TABLE `damaged`"]
    assert repair.output["repaired_tables"] == ["damaged"]
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("CHECK TABLE `damaged`")
        assert cur.fetchall()[-1][2:] == ("status", "OK")


def test_mariadb_a_table_that_cannot_be_read_is_neither_copied_nor_rebuilt(home, mysql_url):
    """Emergency maintenance copies a table aside before its repair; one the server
    cannot read (its tablespace discarded) is left as it is, with no empty copy made,
    and the step says what to do."""
    _table(mysql_url, "unreadable", 100)
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE `unreadable` DISCARD TABLESPACE")
    config = use_target(home, mysql_url)

    result = commands.run_job(
        config,
        "maintenance",
        {"type": "emergency", "tables": ["unreadable"]},
        approver=PreApproved(),
    )

    check, repair = result.steps[1], result.steps[2]
    assert check.output["corrupted_tables"] == ["unreadable"]
    assert repair.status == "failed"
    assert repair.error == (
        "Could not repair unreadable: unreadable: it cannot be read to copy it aside first "
        "(Tablespace has been discarded for table `unreadable` (error 1814)); copy its files, "
        "then repair it with create_backup: false"
    )
    # What the step showed for approval: the copy, then the rebuild.
    assert repair.sql[0].startswith("CREATE TABLE `unreadable_aishell_bak_")
    assert repair.sql[-1] == "ALTER TABLE `unreadable` FORCE"
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert [r[0] for r in cur.fetchall()] == ["unreadable"]


def _drop_backups(datadir: str, database: str) -> None:
    """The server's own recovery of a crashed MyISAM table (myisam_recover_options)
    leaves .BAK files, which would keep the scratch database from being dropped."""
    folder = os.path.join(datadir, database)
    for name in os.listdir(folder):
        if name.endswith(".BAK"):
            os.remove(os.path.join(folder, name))


def test_mariadb_a_long_table_name_gets_a_copy_within_the_name_limit(home, mysql_url):
    long_name = "t" * 60
    _table(mysql_url, long_name, 100)
    config = use_target(home, mysql_url)
    plan = one_step_plan(
        "maintenance", "db", "mysql", "repair_corrupted_tables", {"tables": [long_name]}
    )

    result = commands.apply_plan(config, plan, approver=PreApproved())

    step = result.steps[0]
    assert step.status == "succeeded", step.error
    (copy,) = step.output["backup_tables"]
    assert copy == "t" * 39 + "_aishell_bak_" + result.run_id and len(copy) == 64
    assert step.sql[-1] == f"ALTER TABLE `{long_name}` FORCE"


def test_mariadb_sessions_read_the_servers_messages_in_english(home, mysql_url):
    """Whatever language the session would speak (here German, set by the driver as it
    connects), aishell's sessions read the server's messages in English."""
    german = make_url(mysql_url).update_query_dict(
        {"init_command": "SET SESSION lc_messages = 'de_DE'"}
    )
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION lc_messages = 'de_DE'")
        cur.execute("CHECK TABLE `no_such_table`")
        assert "existiert nicht" in cur.fetchall()[0][3]  # the server speaks German here
    target = open_target_for(home, german.render_as_string(False))
    try:
        with target.engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.lc_messages")).scalar() == "en_US"
            ctx = ToolContext(conn, "mysql", "db", quote_identifier=target.quote)
            summary = corruption_check(conn, ctx, ["no_such_table"])
    finally:
        target.close()
    # Read in English, the error row says the table is not there: gone, not unchecked.
    assert _by_table(summary) == {} and summary["tables_gone"] == ["no_such_table"]


def open_target_for(home, url: str):
    """The target `db` at url, as a run opens it (its session settings included)."""
    return open_target(use_target(home, url), None)


# --- a repair the check after it cannot verify -----------------------------------------


@pytest.fixture
def pg_owner() -> Iterator[tuple[str, str]]:
    """A scratch database with amcheck, and a role that owns a table there but may not
    run amcheck's functions (revoked from PUBLIC): (its URL, the table)."""
    role = f"r_{uuid.uuid4().hex[:12]}"
    with scratch_postgresql() as url:
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{make_url(url).database}" TO {role}'))
            conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}"))
            conn.execute(text(f"SET ROLE {role}"))
            conn.execute(text("CREATE TABLE ledger (id int PRIMARY KEY, k int)"))
            conn.execute(text("INSERT INTO ledger SELECT g, g % 7 FROM generate_series(1, 500) g"))
            conn.execute(text("RESET ROLE"))
        admin.dispose()
        yield make_url(url).set(username=role).render_as_string(False), "ledger"
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


def test_postgresql_a_repair_the_check_after_it_could_not_verify_is_not_reported_done(
    home, pg_owner
):
    url, table = pg_owner
    config = use_target(home, url)
    plan = one_step_plan(
        "maintenance", "db", "postgresql", "repair_corrupted_tables", {"tables": [table]}
    )

    result = commands.apply_plan(config, plan, approver=PreApproved())

    step = result.steps[0]
    assert step.status == "failed"
    assert step.error.startswith(
        f"{table} rebuilt, but the check after the repair could not run, so the repair is "
        f"not verified ({table}: "
    )
    assert step.error.endswith("check it again")
    assert result.status == "failed"


def test_a_lock_held_across_the_check_is_released_for_the_next_one(home, mysql_url):
    """The check that waited for the lock leaves the session usable: once the other
    session lets go, the same table checks sound."""
    _table(mysql_url, "held", 500)
    target = open_target_for(home, mysql_url)
    try:
        with target.engine.connect() as conn:
            ctx = ToolContext(conn, "mysql", "db", quote_identifier=target.quote)
            with locked(mysql_url, "held"):
                first = corruption_check(conn, ctx, ["held"])
            second = corruption_check(conn, ctx, ["held"])
    finally:
        target.close()
    assert _by_table(first) == {"held": "not checked"}
    assert _by_table(second) == {"held": "ok"}


# --- a lock timeout the server reports in a row ---------------------------------------


def _quick_maintenance(config, tables: list[str]):
    return commands.run_job(
        config, "maintenance", {"type": "quick", "tables": tables}, approver=PreApproved()
    )


@contextmanager
def _released_once(holder: Any, seen: Callable[[], bool], release: str) -> Iterator[None]:
    """Let go of the table (`release` on the holder's session) once `seen()` says the
    first try gave up, so the next try finds the table free. On leaving, the watch is
    waited for and the holder closed."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        with holder.cursor() as held:
            held.execute(release)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(60)
        holder.close()


@contextmanager
def _released_after_the_first_wait(url: str, holder: Any, statement: str) -> Iterator[None]:
    """Released once `statement` was seen waiting for its lock and then no longer: a
    check's first try of one table, inside one attempt of its step."""
    with _session(url) as conn:

        def waiting() -> bool:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO = %s",
                    (statement,),
                )
                return bool(cur.fetchone()[0])

        was_waiting = False

        def waited() -> bool:
            nonlocal was_waiting
            if was_waiting:
                return not waiting()
            was_waiting = waiting()
            return False

        with _released_once(holder, waited, "UNLOCK TABLES"):
            yield


@contextmanager
def _released_after_the_first_attempt(
    config: Any, holder: Any, release: str = "UNLOCK TABLES"
) -> Iterator[None]:
    """Released once the state store holds the step's first retry: its first attempt
    gave up on the lock, and the next waits out the backoff before it begins."""
    store = make_url(config.state_url).database

    def tried_again() -> bool:
        try:
            with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
                row = conn.execute("SELECT count(*) FROM events WHERE kind = 'step_retry'")
                return bool(row.fetchone()[0])
        except sqlite3.OperationalError:  # the run has not made its store yet
            return False

    with _released_once(holder, tried_again, release):
        yield


# The steps' retry backoff: their first wait between tries is half of it to all of it
# (retry/policy.py), the window in which the watch sees the first try's wait over and
# lets go before the second try waits in its turn. A loaded machine can hold a watch's
# poll back for a quarter of a second; not for a whole one.
TRY_GAP_SECONDS = 2.0


def _held(home: Any, url: str, edit_config: Any, *holding: str) -> tuple[Any, Any]:
    """A table `held` of 500 rows; the config, whose maintenance steps are tried three
    times TRY_GAP_SECONDS apart; and another session that sent `holding` on it."""
    _table(url, "held", 500)
    use_target(home, url)
    config = edit_config(
        maintenance={"default_config": {"max_retries": 3, "retry_backoff_seconds": TRY_GAP_SECONDS}}
    )
    holder = _session(url)
    with holder.cursor() as cur:
        for sql in holding:
            cur.execute(sql)
            cur.fetchall()
    return config, holder


def test_mariadb_analyze_of_a_held_table_waits_and_tries_again(home, mysql_url, edit_config):
    """ANALYZE TABLE answers a lock timeout in a row: the step is tried again after a
    wait, as for a lock timeout the server raises, and succeeds once the lock goes."""
    config, holder = _held(home, mysql_url, edit_config, "LOCK TABLES `held` WRITE")
    with _released_after_the_first_attempt(config, holder):
        result = _quick_maintenance(config, ["held"])

    step = next(s for s in result.steps if s.tool == "update_table_statistics")
    assert step.status == "succeeded", step.error
    assert step.attempts == 2
    assert result.status == "completed", result.error


def test_mariadb_analyze_of_a_table_held_throughout_is_skipped_naming_who_holds_it(
    home, mysql_url, edit_config
):
    """A step of the held table alone is tried again, then ends skipped (not failed):
    the table with cause locked and its holder, and the run completes."""
    _table(mysql_url, "held", 500)
    use_target(home, mysql_url)
    config = edit_config(
        maintenance={"default_config": {"max_retries": 1, "retry_backoff_seconds": 0.1}}
    )

    with locked(mysql_url, "held") as holder:
        result = _quick_maintenance(config, ["held"])

    step = next(s for s in result.steps if s.tool == "update_table_statistics")
    assert step.status == "skipped", step.error
    assert step.attempts == 2
    assert step.error.startswith(
        "update_table_statistics of held skipped: its lock was not granted within the lock "
        "wait (tried 2 times: Lock wait timeout exceeded; try restarting transaction "
        f"(error 1205)), held by connection {holder} "
    )
    # Only the holder: not aishell's own session that holds the run lock.
    assert step.error.count("connection ") == 1, step.error
    (entry,) = step.output["skipped_tables"]
    assert entry == {"table": "held", "reason": step.error, "cause": "locked"}
    assert step.output["tables_done"] == []
    assert result.status == "completed", result.error
    report = result.steps[-1].output
    assert "1 skipped, held (update_table_statistics held)" in report["summary"]


def test_mariadb_a_repair_tried_again_after_a_lock_timeout_copies_once(
    home, mysql_url, edit_config
):
    """Another session's open transaction on the table lets the copy read it but holds
    off the rebuild (ALTER TABLE ... FORCE), until the lock timeout; the step is tried
    again once it lets go, and neither makes the copy's table again nor copies twice."""
    config, holder = _held(home, mysql_url, edit_config, "BEGIN", "SELECT id FROM `held` LIMIT 1")
    plan = one_step_plan(
        "maintenance", "db", "mysql", "repair_corrupted_tables", {"tables": ["held"]}
    )
    with _released_after_the_first_attempt(config, holder, "COMMIT"):
        result = commands.apply_plan(config, plan, approver=PreApproved())

    step = result.steps[0]
    assert step.status == "succeeded", step.error
    assert step.attempts == 2
    (copy,) = step.output["backup_tables"]
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM `{copy}`")
        assert cur.fetchone()[0] == 500
    sent = [s["sql"] for s in commands.run_statements(config, result.run_id)]
    assert sum(sql.startswith("CREATE TABLE") for sql in sent) == 1
    assert sum(sql.startswith("INSERT INTO") for sql in sent) == 1
    assert sum(sql == "ALTER TABLE `held` FORCE" for sql in sent) == 2


def test_mariadb_a_repairs_copy_keeps_invisible_columns_and_skips_generated_ones(home, mysql_url):
    """SELECT * leaves invisible columns out, and a generated column cannot be inserted
    into (error 1906): the copy names the stored columns, invisible ones included."""
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE `shaped` (id int PRIMARY KEY, a int, "
            "hidden int INVISIBLE DEFAULT 7, twice int AS (a * 2) VIRTUAL, "
            "plus int AS (a + 1) STORED) ENGINE=InnoDB"
        )
        cur.execute(
            "INSERT INTO `shaped` (id, a, hidden) SELECT seq, seq, seq * 10 FROM seq_1_to_50"
        )
    config = use_target(home, mysql_url)
    plan = one_step_plan(
        "maintenance", "db", "mysql", "repair_corrupted_tables", {"tables": ["shaped"]}
    )

    step = commands.apply_plan(config, plan, approver=PreApproved()).steps[0]

    assert step.status == "succeeded", step.error
    (copy,) = step.output["backup_tables"]
    assert step.sql[1] == (
        f"INSERT INTO `{copy}` (`id`, `a`, `hidden`) SELECT `id`, `a`, `hidden` FROM `shaped`"
    )
    with _session(mysql_url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT sum(hidden), sum(twice), sum(plus) FROM `{copy}`")
        assert cur.fetchone() == (12750, 2550, 1325)
