"""What a trigger's body writes sets off in its turn, named where the step is judged: a
purge of `logs` whose trigger inserts into `audit` runs audit's triggers too, so the
preview names them and the policy asks for them; a routine the trigger calls that writes
a third table is followed as well; a cycle (audit's trigger writes logs) ends. What
follows DO is a statement too: a PostgreSQL rule's action, a MariaDB loop's first one;
and so is a PL/pgSQL cursor's write that follows FOR."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from aishell import commands
from aishell.guard.bodywrites import written_by_body
from aishell.guard.writtentables import Write
from aishell.handlers.purge.reach import read_reach
from tests.guard.test_guard import execute, scalar, scratch_database
from tests.guard.test_user_code import PURGE
from tests.helpers import use_target

LOGS = {
    "postgresql": (
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at timestamp NOT NULL, n integer)",
        "INSERT INTO logs SELECT g, localtimestamp - make_interval(days => g), g "
        "FROM generate_series(1, 60) g",
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE ledger (id integer)",
        "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END$$",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW EXECUTE FUNCTION logs_gone()",
    ),
    "mysql": (
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at datetime NOT NULL, n integer)",
        "INSERT INTO logs SELECT seq, NOW() - INTERVAL seq DAY, seq FROM seq_1_to_60",
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE ledger (id integer)",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
        "INSERT INTO audit VALUES (OLD.id)",
    ),
    "sqlite": (
        "CREATE TABLE logs (id integer PRIMARY KEY, created_at timestamp NOT NULL, n integer)",
        "INSERT INTO logs WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
        "WHERE i < 60) SELECT i, datetime('now', '-' || i || ' days'), i FROM g",
        "CREATE TABLE audit (id integer)",
        "CREATE TABLE ledger (id integer)",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs "
        "BEGIN INSERT INTO audit VALUES (OLD.id); END",
    ),
}


def audit_trigger(dialect: str, body: str) -> tuple[str, ...]:
    """A trigger audit_in after an INSERT into audit that runs `body` (NEW.id its row's)."""
    if dialect == "postgresql":
        return (
            "CREATE FUNCTION audit_in() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN {body}; RETURN NEW; END$$",
            "CREATE TRIGGER audit_in AFTER INSERT ON audit FOR EACH ROW "
            "EXECUTE FUNCTION audit_in()",
        )
    if dialect == "mysql":
        return (f"CREATE TRIGGER audit_in AFTER INSERT ON audit FOR EACH ROW {body}",)
    return (f"CREATE TRIGGER audit_in AFTER INSERT ON audit BEGIN {body}; END",)


def _purge_preview(home: Path, url: str) -> Any:
    config = use_target(home, url)
    preview = commands.plan_job(config, "log_cleanup", PURGE)
    return next(s for s in preview.steps if s.tool == "delete_old_records"), config


ENGINES = ["postgresql", "mysql", "sqlite"]


@pytest.mark.parametrize("dialect", ENGINES)
def test_a_trigger_on_a_table_a_trigger_writes_is_named_and_asked_for(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        execute(url, *LOGS[dialect], *audit_trigger(dialect, "INSERT INTO ledger VALUES (NEW.id)"))

        purge, config = _purge_preview(home, url)
        run = commands.run_job(config, "log_cleanup", PURGE)

        said = "inserting into audit (by trigger logs_gone on logs) fires trigger audit_in"
        fires = (purge.estimate or {}).get("fires") or []
        assert any(f.startswith(said) for f in fires), fires
        assert purge.requires_approval and any(r.startswith(said) for r in purge.reasons)
        assert any("audit_in" in line for line in purge.estimate.get("user_code", []))
        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert step.status == "waiting_approval" and any(r.startswith(said) for r in step.reasons)
        assert scalar(url, "SELECT count(*) FROM logs") == 60


@pytest.mark.parametrize("dialect", ENGINES)
def test_a_cycle_of_triggers_ends_and_names_each_once(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """audit's trigger deletes from logs, whose trigger inserts into audit: the preview
    and the purge's reading of its reach end, each trigger named once."""
    with scratch_database(dialect, tmp_path) as url:
        execute(url, *LOGS[dialect], *audit_trigger(dialect, "DELETE FROM logs WHERE id < 0"))

        purge, _config = _purge_preview(home, url)

        fires = (purge.estimate or {}).get("fires") or []
        assert [f for f in fires if "audit_in" in f] and len(fires) == 2, fires
        engine = create_engine(url)
        quoted = engine.dialect.identifier_preparer.quote("logs")
        with engine.connect() as conn:
            found = read_reach(conn, quoted, "logs").found
        engine.dispose()
        triggers = sorted(name for kind, name, _ in found if kind == "trigger")
        assert triggers == ["audit_in on audit", "logs_gone on logs"], found


# A rule's action as pg_get_ruledef writes it: DO ALSO (the default) as a bare DO.
RULE_ACTIONS = {
    "insert": "INSERT INTO audit VALUES (OLD.id)",
    "update": "UPDATE audit SET id = OLD.id WHERE id < 0",
}


@pytest.mark.parametrize("action", sorted(RULE_ACTIONS))
def test_a_trigger_on_a_table_a_rule_writes_is_named_and_asked_for(
    home: Path, tmp_path: Path, action: str
) -> None:
    event = action.upper()
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"][:4],
            f"CREATE RULE logs_noted AS ON DELETE TO logs DO ALSO {RULE_ACTIONS[action]}",
            "CREATE FUNCTION audit_in() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO ledger VALUES (NEW.id); RETURN NEW; END$$",
            f"CREATE TRIGGER audit_in AFTER {event} ON audit FOR EACH ROW "
            "EXECUTE FUNCTION audit_in()",
        )

        purge, config = _purge_preview(home, url)
        run = commands.run_job(config, "log_cleanup", PURGE)

        doing = {"insert": "inserting into", "update": "updating"}[action]
        said = f"{doing} audit (by rule logs_noted on logs) fires trigger audit_in"
        fires = (purge.estimate or {}).get("fires") or []
        assert any(f.startswith(said) for f in fires), fires
        assert purge.requires_approval and any(r.startswith(said) for r in purge.reasons)
        assert any("audit_in" in line for line in purge.estimate.get("user_code", []))
        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert step.status == "waiting_approval" and any(r.startswith(said) for r in step.reasons)
        assert scalar(url, "SELECT count(*) FROM logs") == 60


# MariaDB's loops: the first statement of each follows DO.
LOOPS = {
    "while": "WHILE n > 0 DO INSERT INTO audit VALUES (OLD.id); SET n = n - 1; END WHILE",
    "for": "FOR i IN 1..1 DO INSERT INTO audit VALUES (OLD.id); END FOR",
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_trigger_on_a_table_a_mariadb_loop_writes_is_named_and_asked_for(
    home: Path, tmp_path: Path, loop: str
) -> None:
    with scratch_database("mysql", tmp_path) as url:
        execute(
            url,
            *LOGS["mysql"][:4],
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW BEGIN "
            f"DECLARE n INT DEFAULT 1; {LOOPS[loop]}; END",
            *audit_trigger("mysql", "INSERT INTO ledger VALUES (NEW.id)"),
        )

        purge, _config = _purge_preview(home, url)

        said = "inserting into audit (by trigger logs_gone on logs) fires trigger audit_in"
        fires = (purge.estimate or {}).get("fires") or []
        assert any(f.startswith(said) for f in fires), fires
        assert purge.requires_approval and any(r.startswith(said) for r in purge.reasons)


# A PL/pgSQL cursor over a write that returns rows runs the write as it is opened.
CURSORS = {
    "open": "DECLARE c refcursor; BEGIN OPEN c FOR INSERT INTO audit VALUES (OLD.id) "
    "RETURNING id; CLOSE c; RETURN OLD; END",
    "bound": "DECLARE c CURSOR FOR INSERT INTO audit VALUES (OLD.id) RETURNING id; "
    "BEGIN OPEN c; CLOSE c; RETURN OLD; END",
}


@pytest.mark.parametrize("cursor", sorted(CURSORS))
def test_a_trigger_on_a_table_a_cursors_write_writes_is_named_and_asked_for(
    home: Path, tmp_path: Path, cursor: str
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"][:4],
            "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
            f"$${CURSORS[cursor]}$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
            *audit_trigger("postgresql", "INSERT INTO ledger VALUES (NEW.id)"),
        )

        purge, _config = _purge_preview(home, url)

        said = "inserting into audit (by trigger logs_gone on logs) fires trigger audit_in"
        fires = (purge.estimate or {}).get("fires") or []
        assert any(f.startswith(said) for f in fires), fires
        assert purge.requires_approval and any(r.startswith(said) for r in purge.reasons)


CALLED = {
    # A function the trigger's function calls (its name a word of the body) writes ledger.
    "postgresql": (
        "CREATE FUNCTION note(i integer) RETURNS void LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO ledger VALUES (i); END$$",
        "CREATE OR REPLACE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM note(OLD.id); RETURN OLD; END$$",
        "CREATE FUNCTION ledger_in() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
        "CREATE TRIGGER ledger_in AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_in()",
    ),
    # A procedure the trigger calls writes ledger.
    "mysql": (
        "CREATE PROCEDURE note(i integer) INSERT INTO ledger VALUES (i)",
        "DROP TRIGGER logs_gone",
        "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW CALL note(OLD.id)",
        "CREATE TRIGGER ledger_in AFTER INSERT ON ledger FOR EACH ROW SET @x = NEW.id",
    ),
}


@pytest.mark.parametrize("dialect", sorted(CALLED))
def test_a_trigger_on_a_table_a_called_routine_writes_is_named(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        execute(url, *LOGS[dialect], *CALLED[dialect])

        purge, _config = _purge_preview(home, url)

        assert_fires_ledger(purge)
        assert any("ledger_in" in r for r in purge.reasons), purge.reasons


W = Write
BODIES = [
    (
        "BEGIN INSERT INTO audit VALUES (OLD.id); RETURN OLD; END",
        "postgresql",
        [W("INSERT", None, "audit")],
    ),
    # A verb in a literal is read as a body of its own; SELECT ... FOR UPDATE writes none.
    (
        "IF TG_OP = 'UPDATE' THEN UPDATE public.\"Audit\" SET x = 1; END IF; "
        "PERFORM 1 FROM t FOR UPDATE; EXECUTE 'DELETE FROM dyn WHERE a = ''x'''",
        "postgresql",
        [W("DELETE", None, "dyn"), W("UPDATE", "public", "Audit")],
    ),
    (
        "DELETE a, b FROM a JOIN b ON a.id = b.id WHERE a.x = 1",
        "mysql",
        [W("DELETE", None, "a"), W("DELETE", None, "b")],
    ),
    (
        "UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1",
        "mysql",
        [W("UPDATE", None, "t1")],
    ),
    (
        "INSERT INTO x VALUES (1) ON DUPLICATE KEY UPDATE a = 2",
        "mysql",
        [W("INSERT", None, "x"), W("UPDATE", None, "x")],
    ),
    (
        "INSERT OR REPLACE INTO s VALUES (1)",
        "sqlite",
        [W("INSERT", None, "s"), W("DELETE", None, "s")],
    ),
    ("DELETE FROM ONLY t1 USING t3 WHERE t1.id = t3.id", "postgresql", [W("DELETE", None, "t1")]),
    ("TRUNCATE TABLE a CASCADE", "postgresql", [W("TRUNCATE", None, "a", cascade=True)]),
    # A cursor's write after FOR is a statement; a row lock's FOR UPDATE, a policy's
    # FOR DELETE are none.
    (
        "OPEN c FOR UPDATE public.t AS x SET a = 1 RETURNING a; OPEN c FOR UPDATE p * SET a = 1; "
        "FOR r IN SELECT * FROM u FOR UPDATE OF u SKIP LOCKED LOOP NULL; END LOOP; "
        "PERFORM 1 FROM v FOR UPDATE; PERFORM 1 FROM w FOR NO KEY UPDATE NOWAIT; "
        "EXECUTE 'CREATE POLICY q ON x FOR DELETE TO r USING (true)'",
        "postgresql",
        [W("UPDATE", "public", "t"), W("UPDATE", None, "p")],
    ),
    # ONLY (t) names t as ONLY t does.
    (
        "UPDATE ONLY (s.t) SET a = 1; DELETE FROM ONLY (u) WHERE true; TRUNCATE ONLY (v), w",
        "postgresql",
        [
            W("UPDATE", "s", "t"),
            W("DELETE", None, "u"),
            W("TRUNCATE", None, "v"),
            W("TRUNCATE", None, "w"),
        ],
    ),
    # A rule's action after a bare DO is a statement; ON CONFLICT's DO UPDATE SET updates
    # the INSERT's own table, named once.
    (
        "CREATE RULE r AS ON DELETE TO public.t WHERE (old.id > 1) DO  DELETE FROM other "
        "WHERE other.id = old.id;",
        "postgresql",
        [W("DELETE", None, "other")],
    ),
    (
        "INSERT INTO x VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2; "
        "INSERT INTO y VALUES (1) ON CONFLICT ON CONSTRAINT y_pkey DO UPDATE SET a = 2",
        "postgresql",
        [
            W("INSERT", None, "x"),
            W("UPDATE", None, "x"),
            W("INSERT", None, "y"),
            W("UPDATE", None, "y"),
        ],
    ),
]


@pytest.mark.parametrize(("body", "dialect", "expected"), BODIES)
def test_the_tables_a_body_writes(body: str, dialect: str, expected: list[Write]) -> None:
    assert list(dict.fromkeys(written_by_body(body, dialect))) == expected


def assert_fires_ledger(purge: Any) -> None:
    """The purge's preview names the ledger's trigger that logs_gone's code sets off."""
    fires = (purge.estimate or {}).get("fires") or []
    assert any(
        f.startswith("inserting into ledger (by ")
        and "logs_gone on logs" in f
        and "fires trigger ledger_in" in f
        for f in fires
    ), fires
