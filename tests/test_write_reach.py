"""What a step's writes do beyond the rows their statements name, on each engine: a
foreign key that cascades waits for a person's yes to that very step, a trigger or rule
that fires is among the reasons for approval. Site tools here; the purge's own cases
are in test_log_cleanup.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.config import Config
from aishell.writereach import written
from tests.helpers import one_step_plan
from tests.test_guard import (
    dialect_of,
    execute,
    fingerprint,
    make_tables,
    run_one,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)

CHILD = {
    "postgresql": "CREATE TABLE child (id integer PRIMARY KEY, "
    "t_id integer REFERENCES t (id) ON DELETE {action})",
    "mysql": "CREATE TABLE child (id integer PRIMARY KEY, t_id integer, "
    "FOREIGN KEY (t_id) REFERENCES t (id) ON DELETE {action}) ENGINE=InnoDB",
}
DELETES = {
    "plain": "DELETE FROM {table} WHERE id < 3",
    # A data-modifying CTE deletes as surely.
    "cte": "WITH gone AS (DELETE FROM {table} WHERE id < 3 RETURNING id) SELECT count(*) FROM gone",
}


def sql_tool(home: Path, url: str, name: str, risk: str, sql: str) -> Config:
    folder = home / f"site_{name}"
    write_tool(folder, tool_yaml(name, risk, {dialect_of(url): {"sql": sql}}))
    return site_config(home, url, folder)


@pytest.mark.parametrize(
    ("dialect", "delete", "action"),
    [
        ("postgresql", "plain", "CASCADE"),
        ("postgresql", "cte", "SET NULL"),
        ("mysql", "plain", "CASCADE"),
        ("mysql", "plain", "SET NULL"),
    ],
)
def test_a_delete_that_cascades_waits_for_a_yes_to_that_very_step(
    home: Path, tmp_path: Path, dialect: str, delete: str, action: str
) -> None:
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(
            url, CHILD[dialect].format(action=action), "INSERT INTO child VALUES (1, 1), (2, 2)"
        )
        config = sql_tool(home, url, "trim_t", "high", DELETES[delete])

        run = run_one(config, url, "trim_t", {"table": "t"})

        step = run.steps[0]
        assert run.status == "waiting_approval" and step.status == "waiting_approval"
        said = " ".join(step.personal)
        assert "deleting from t also acts on " in said
        assert f"child.t_id (ON DELETE {action}, " in said
        assert "though no statement of the step names them" in said
        assert fingerprint(url) == (10, 55)
        assert fingerprint(url, "child") == (2, 3)


UPDATE_TRIGGER = {
    "postgresql": [
        "CREATE FUNCTION touched() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO other (id, v) VALUES (100 + NEW.id, 0); RETURN NEW; END $$",
        "CREATE TRIGGER t_touched AFTER UPDATE OF v ON t FOR EACH ROW EXECUTE FUNCTION touched()",
        "CREATE TRIGGER t_gone AFTER DELETE ON t FOR EACH ROW EXECUTE FUNCTION touched()",
    ],
    "mysql": [
        "CREATE TRIGGER t_touched AFTER UPDATE ON t FOR EACH ROW "
        "INSERT INTO other (id, v) VALUES (100 + NEW.id, 0)",
        "CREATE TRIGGER t_gone AFTER DELETE ON t FOR EACH ROW "
        "INSERT INTO other (id, v) VALUES (200 + OLD.id, 0)",
    ],
    "sqlite": [
        "CREATE TRIGGER t_touched AFTER UPDATE OF v ON t BEGIN "
        "INSERT INTO other (id, v) VALUES (100 + NEW.id, 0); END",
        "CREATE TRIGGER t_gone AFTER DELETE ON t BEGIN "
        "INSERT INTO other (id, v) VALUES (200 + OLD.id, 0); END",
    ],
}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_a_trigger_an_update_fires_is_named_and_runs_once_approved(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """Only the trigger on the statement's event is named: not the one on DELETE."""
    with scratch_database(dialect, tmp_path) as url:
        make_tables(url)
        execute(url, *UPDATE_TRIGGER[dialect])
        config = sql_tool(
            home, url, "bump_t", "medium", "UPDATE {table} SET v = v + 1 WHERE id < 3"
        )
        plan = one_step_plan("maintenance", "db", dialect, "bump_t", {"table": "t"})

        dry = commands.apply_plan(config, plan, dry_run=True)
        run = run_one(config, url, "bump_t", {"table": "t"})

        fires = dry.steps[0].estimate["fires"]
        assert len(fires) == 1 and fires[0].startswith("updating t fires trigger t_touched")
        assert fires[0] in dry.steps[0].reasons
        assert dry.steps[0].estimate["cascades"] == []
        assert run.status == "completed", run.steps[0].error
        assert fingerprint(url, "other") == (7, 218)  # what the trigger wrote: ids 101, 102


@pytest.mark.parametrize(
    ("dialect", "sql", "found"),
    [
        ("postgresql", 'DELETE FROM "s"."T" WHERE id = :n', (("DELETE", "s", "T"),)),
        # PostgreSQL folds unquoted names to lower case, as its catalog holds them.
        ("postgresql", "DELETE FROM S.Events WHERE id = :n", (("DELETE", "s", "events"),)),
        ("mysql", "DELETE FROM Events WHERE id = :n", (("DELETE", None, "Events"),)),
        (
            "postgresql",
            "WITH g AS (DELETE FROM a RETURNING *) INSERT INTO b (x) SELECT x FROM g",
            (("INSERT", None, "b"), ("DELETE", None, "a")),
        ),
        ("mysql", "UPDATE `t` SET v = :v WHERE id = :n", (("UPDATE", None, "t"),)),
        (
            "mysql",
            "REPLACE INTO `d`.`T x` (id) VALUES (:n)",
            (("INSERT", "d", "T x"), ("DELETE", "d", "T x")),
        ),
        (
            "mysql",
            "INSERT INTO t (id) VALUES (1) ON DUPLICATE KEY UPDATE v = 2",
            (("INSERT", None, "t"), ("UPDATE", None, "t")),
        ),
        (
            "postgresql",
            "INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET v = 2",
            (("INSERT", None, "t"), ("UPDATE", None, "t")),
        ),
        (
            "postgresql",
            "INSERT INTO t (id) VALUES (1) ON CONFLICT DO NOTHING",
            (("INSERT", None, "t"),),
        ),
        (
            "postgresql",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            (("INSERT", None, "t"), ("UPDATE", None, "t"), ("DELETE", None, "t")),
        ),
        ("postgresql", 'VACUUM (ANALYZE) "deleted_rows"', ()),
        ("sqlite", "SELECT count(*) FROM t WHERE v > :n", ()),
        ("sqlite", "VACUUM", ()),
        ("postgresql", "not sql at all ((", ()),
    ],
)
def test_the_tables_a_statement_writes_are_read_by_the_parser(
    dialect: str, sql: str, found: tuple[tuple[str, str | None, str], ...]
) -> None:
    assert written(sql, dialect) == found
