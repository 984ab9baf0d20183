"""A write runs the code of every view it names: the one it writes through, and those
its subqueries read, and the views under them. A step that runs a function through a
view is as much a high risk as one calling it in its own text. Before, the guard looked
at the views of reads alone: `DELETE FROM vw WHERE id = 1` through a view whose WHERE
calls a writing function ran at its tool's medium risk, unasked, and the function wrote.

On MariaDB the code a view runs may hide in a package (`db.pk.pf()`, which information_
schema lists only as the package's body), or in a routine the login cannot see at all:
information_schema lists the routines an account may run, and a view of SQL SECURITY
DEFINER runs its definer's. What the guard cannot see, it cannot clear."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.config.models import Config
from aishell.executor import RunResult
from aishell.policy.approvers import PreApproved
from aishell.risk import RiskLevel
from tests.guard.test_guard import (
    dialect_of,
    execute,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)
from tests.guard.test_guard_hidden import loadable_function
from tests.helpers import one_step_plan
from tests.services import scratch_mysql

WRITER = {
    "postgresql": (
        "CREATE FUNCTION fw() RETURNS integer LANGUAGE plpgsql AS "
        "$$ BEGIN INSERT INTO tm VALUES (1); RETURN 1; END $$"
    ),
    "mysql": "CREATE FUNCTION fw() RETURNS INT BEGIN INSERT INTO tm VALUES (1); RETURN 1; END",
}
# tm keeps what the function wrote whatever becomes of the step's transaction.
TM = {
    "postgresql": "CREATE TABLE tm (id integer)",
    "mysql": "CREATE TABLE tm (id INT) ENGINE=MyISAM",
}
VIEWS = (
    "CREATE VIEW vw AS SELECT * FROM plain WHERE fw() = 1",
    "CREATE VIEW vf AS SELECT fw() AS x",
    "CREATE VIEW vv AS SELECT * FROM vw",
)
# Each a write that runs fw() through a view, and the view it names.
THROUGH_VIEWS = {
    "through": ("DELETE FROM vw WHERE id = 1", "vw"),
    "subquery": ("DELETE FROM {table} WHERE id IN (SELECT x FROM vf)", "vf"),
    "view-of-view": ("UPDATE {table} SET v = v + 1 WHERE id IN (SELECT id FROM vv)", "vv"),
}


def _set_up(url: str) -> None:
    dialect = dialect_of(url)
    execute(
        url,
        TM[dialect],
        WRITER[dialect],
        "CREATE TABLE plain (id INTEGER PRIMARY KEY, v INTEGER)",
        "INSERT INTO plain VALUES " + ", ".join(f"({i}, {i})" for i in range(1, 11)),
        *VIEWS,
    )


def _tools(home: Path, url: str, risk: str, statements: dict[str, list[str]]) -> Config:
    dialect = dialect_of(url)
    folder = home / "site_tools"
    for name, sql in statements.items():
        write_tool(folder, tool_yaml(f"{name}_{risk}", risk, {dialect: {"sql": sql}}))
    return site_config(home, url, folder)


def _run(
    config: Config, url: str, tool: str, up_to: RiskLevel = RiskLevel.MEDIUM, dry_run: bool = False
) -> RunResult:
    """As `aishell run ... --non-interactive` at the safety level moderate: what is
    medium passes without a person, nothing above it does."""
    plan = one_step_plan("maintenance", "db", dialect_of(url), tool, {"table": "plain"})
    return commands.apply_plan(config, plan, approver=PreApproved(up_to=up_to), dry_run=dry_run)


def _written(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM tm"))


@pytest.mark.parametrize("case", sorted(THROUGH_VIEWS))
def test_a_write_through_a_view_that_calls_a_writing_function_is_refused_below_high(
    home: Path, server_url: str, case: str
) -> None:
    _set_up(server_url)
    sql, view = THROUGH_VIEWS[case]
    config = _tools(home, server_url, "medium", {"prune": [sql]})

    run = _run(config, server_url, "prune_medium")

    assert run.status == "failed", run.error
    assert view in (run.error or "") and "fw" in (run.error or ""), run.error
    assert "tag the tool high" in (run.error or ""), run.error
    assert _written(server_url) == 0
    assert scalar(server_url, "SELECT sum(v) FROM plain") == 55


def test_a_write_through_a_view_that_calls_a_writing_function_is_shown_at_high_risk(
    home: Path, server_url: str
) -> None:
    _set_up(server_url)
    sql, _ = THROUGH_VIEWS["subquery"]
    config = _tools(home, server_url, "high", {"prune": [sql]})

    asked = _run(config, server_url, "prune_high")

    assert asked.status == "waiting_approval", asked.error
    (step,) = asked.steps
    assert step.risk_level == "high"
    assert any("vf" in said and "fw" in said for said in step.estimate["user_code"]), step.estimate
    assert _written(server_url) == 0
    ran = _run(config, server_url, "prune_high", up_to=RiskLevel.HIGH)
    assert ran.status == "completed", ran.error
    assert _written(server_url) > 0


def test_a_write_naming_a_view_that_only_reads_still_runs_unasked(
    home: Path, server_url: str
) -> None:
    """Only the views that run code count: a plain view over the table is no risk."""
    _set_up(server_url)
    execute(server_url, "CREATE VIEW vplain AS SELECT id FROM plain WHERE id > 8")
    config = _tools(
        home,
        server_url,
        "medium",
        {"prune": ["DELETE FROM {table} WHERE id IN (SELECT id FROM vplain)"]},
    )

    run = _run(config, server_url, "prune_medium")

    assert run.status == "completed", run.error
    assert scalar(server_url, "SELECT count(*) FROM plain") == 8


# --- MariaDB: packages -------------------------------------------------------------------

PACKAGE = (
    "SET sql_mode = ORACLE",
    "CREATE PACKAGE pk AS FUNCTION pf RETURN INT; END",
    "CREATE PACKAGE BODY pk AS FUNCTION pf RETURN INT AS BEGIN "
    "INSERT INTO tm VALUES (7); RETURN 1; END; END",
    "CREATE VIEW vp AS SELECT pk.pf() AS x FROM dual",
)


def test_a_function_of_a_package_counts_as_one_that_may_write(home: Path, mysql_url: str) -> None:
    _set_up(mysql_url)
    execute(mysql_url, *PACKAGE)
    database = make_url(mysql_url).database
    config = _tools(
        home,
        mysql_url,
        "medium",
        {
            "view_then_update": [
                "SELECT COUNT(*) AS n FROM vp",
                "UPDATE {table} SET v = v WHERE id = 1",
            ],
            "update_calling": [f"UPDATE {{table}} SET v = v WHERE id = `{database}`.pk.pf()"],
            "read_calling": [
                f"SELECT `{database}`.pk.pf() AS x",
                "UPDATE {table} SET v = v WHERE id = 1",
            ],
        },
    )

    for tool in ("view_then_update", "update_calling", "read_calling"):
        run = _run(config, mysql_url, f"{tool}_medium")

        assert run.status == "failed", (tool, run.error)
        assert "pf" in (run.error or "") or "vp" in (run.error or ""), (tool, run.error)
    assert _written(mysql_url) == 0


# --- MariaDB: what the login cannot see ---------------------------------------------------


@contextmanager
def _restricted_login(url: str) -> Iterator[str]:
    """A login that may read and write the database's tables, and see its views'
    definitions, but may run none of its routines (nor read mysql.proc or mysql.func):
    information_schema shows it no routine. Dropped afterwards."""
    user = f"aishell_u_{uuid.uuid4().hex[:10]}"
    database = make_url(url).database
    execute(
        url,
        f"CREATE USER '{user}'@'%'",
        "GRANT SELECT, SHOW VIEW, INSERT, UPDATE, DELETE, LOCK TABLES "
        f"ON `{database}`.* TO '{user}'@'%'",
    )
    try:
        yield make_url(url).set(username=user, password="").render_as_string(False)
    finally:
        execute(url, f"DROP USER IF EXISTS '{user}'@'%'")


READ_THEN_WRITE = ["SELECT COUNT(*) AS n FROM vd", "UPDATE {table} SET v = v WHERE id = 1"]


def test_a_definer_view_calling_a_routine_the_login_cannot_see_counts_as_a_write(
    home: Path, mysql_url: str
) -> None:
    _set_up(mysql_url)
    execute(mysql_url, "CREATE SQL SECURITY DEFINER VIEW vd AS SELECT fw() AS x")
    with _restricted_login(mysql_url) as login:
        config = _tools(home, login, "medium", {"read_then_write": READ_THEN_WRITE})

        run = _run(config, login, "read_then_write_medium")

    assert run.status == "failed", run.error
    assert "fw" in (run.error or "") and "cannot see" in (run.error or ""), run.error
    assert _written(mysql_url) == 0


def test_a_view_reading_a_view_the_login_cannot_see_counts_as_a_write(
    home: Path, mysql_url: str
) -> None:
    """The inner view is in a database of its own the login has no right on: its name
    stands in the outer view's definition, and nothing else of it is to be seen."""
    _set_up(mysql_url)
    with scratch_mysql() as elsewhere:
        other = make_url(elsewhere).database
        database = make_url(mysql_url).database
        execute(
            mysql_url,
            f"CREATE SQL SECURITY DEFINER VIEW `{other}`.vi AS SELECT `{database}`.fw() AS x",
            f"CREATE SQL SECURITY DEFINER VIEW vd AS SELECT x FROM `{other}`.vi",
        )
        with _restricted_login(mysql_url) as login:
            config = _tools(home, login, "medium", {"read_then_write": READ_THEN_WRITE})

            run = _run(config, login, "read_then_write_medium")

    assert run.status == "failed", run.error
    assert "vi" in (run.error or "") and "cannot see" in (run.error or ""), run.error
    assert _written(mysql_url) == 0


def test_a_loadable_function_the_login_cannot_list_counts_as_a_write(
    home: Path, mysql_url: str
) -> None:
    """Anyone may call a loadable function; only a login that may read mysql.func learns
    the server has one."""
    _set_up(mysql_url)
    with loadable_function(mysql_url), _restricted_login(mysql_url) as login:
        read = "SELECT COUNT(*) AS n FROM plain WHERE sphinx_snippets('a', 'b', 'c') IS NULL"
        config = _tools(
            home, login, "medium", {"udf": [read, "UPDATE {table} SET v = v WHERE id = 1"]}
        )

        run = _run(config, login, "udf_medium")

    assert run.status == "failed", run.error
    assert "sphinx_snippets" in (run.error or ""), run.error


def test_a_restricted_login_still_reads_and_writes_with_built_in_functions(
    home: Path, mysql_url: str
) -> None:
    """What the server defines itself is no unknown: a login that sees no routine still
    runs the plain statements a maintenance tool sends."""
    _set_up(mysql_url)
    execute(mysql_url, "CREATE TABLE archive (id INTEGER PRIMARY KEY, v INTEGER)")
    statements = [
        "SELECT COUNT(*) AS n, COALESCE(MAX(v), 0) AS m, CONCAT('a', LOWER('B')) AS s, "
        "IF(NOW() > '2000-01-01', 1, 0) AS i FROM {table}",
        "INSERT INTO archive (id, v) SELECT id, v FROM {table} WHERE id > 8",
        "DELETE FROM {table} WHERE id > GREATEST(8, ROUND(1.5))",
    ]
    with _restricted_login(mysql_url) as login:
        config = _tools(home, login, "medium", {"plain_work": statements})

        run = _run(config, login, "plain_work_medium")

    assert run.status == "completed", run.error
    assert scalar(mysql_url, "SELECT count(*) FROM plain") == 8


def test_a_loadable_function_in_a_default_the_login_cannot_list_is_user_code(
    home: Path, mysql_url: str
) -> None:
    """A column's default may call a loadable function (MariaDB refuses stored ones
    there): an INSERT runs it. A login that may not read mysql.func cannot tell it from
    the server's own functions, so the estimate names it, and the step is high risk.
    Seen in a dry run: this function, run in an INSERT, brings the server down."""
    _set_up(mysql_url)
    with loadable_function(mysql_url):
        execute(
            mysql_url,
            "CREATE TABLE noted (id INTEGER, "
            "s VARCHAR(200) DEFAULT (sphinx_snippets('a', 'b', 'c')))",
        )
        with _restricted_login(mysql_url) as login:
            config = _tools(home, login, "medium", {"note": ["INSERT INTO noted (id) VALUES (1)"]})

            run = _run(config, login, "note_medium", dry_run=True)

    (step,) = run.steps
    assert step.risk_level == "high", step.estimate
    assert any("sphinx_snippets" in said for said in step.estimate["user_code"]), step.estimate
    assert scalar(mysql_url, "SELECT count(*) FROM noted") == 0


INSTEAD_OF = {
    "sqlite": (
        "CREATE TRIGGER vs_delete INSTEAD OF DELETE ON vs BEGIN "
        "INSERT INTO tm VALUES (old.id); DELETE FROM plain WHERE id = old.id; END",
    ),
    "postgresql": (
        "CREATE FUNCTION vs_noted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO tm VALUES (old.id); DELETE FROM plain WHERE id = old.id; RETURN old; END $$",
        "CREATE TRIGGER vs_delete INSTEAD OF DELETE ON vs FOR EACH ROW EXECUTE FUNCTION vs_noted()",
    ),
}


@pytest.mark.parametrize("dialect", sorted(INSTEAD_OF))
def test_an_instead_of_trigger_on_a_view_is_user_code(
    home: Path, tmp_path: Path, dialect: str
) -> None:
    """SQLite's views call no function of the database's, but an INSTEAD OF trigger on a
    view (SQLite's, PostgreSQL's) runs what it holds when a write goes through the view."""
    with scratch_database(dialect, tmp_path) as url:
        execute(
            url,
            "CREATE TABLE plain (id INTEGER PRIMARY KEY, v INTEGER)",
            "INSERT INTO plain VALUES (1, 1), (2, 2)",
            "CREATE TABLE tm (id INTEGER)",
            "CREATE VIEW vs AS SELECT * FROM plain",
            *INSTEAD_OF[dialect],
        )
        config = _tools(home, url, "medium", {"prune": ["DELETE FROM vs WHERE id = 1"]})

        run = _run(config, url, "prune_medium")

        assert run.status != "completed", run.error
        (step,) = run.steps
        assert step.risk_level == "high", step.estimate
        assert any("vs_delete" in said for said in step.estimate["user_code"]), step.estimate
        assert _written(url) == 0
