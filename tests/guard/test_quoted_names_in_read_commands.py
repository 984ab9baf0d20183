"""A statement the guard reads as a read by its first words (MySQL's CHECK TABLE and SHOW)
is judged on its code, as the server reads it: a quoted name holding `;` or FOR UPGRADE
is a name, not a second statement or an upgrade; a real second statement or a real FOR
UPGRADE still writes, and text the server would read otherwise still goes to the parser."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.guard.sqlcheck import write_reason
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target

# Names with what could end a statement, start a comment, or read as FOR UPGRADE.
NAMES = st.text(alphabet=st.sampled_from("ab_1 ;,\"`'-/*#().\n\\"), min_size=1, max_size=12) | (
    st.sampled_from(["x FOR UPGRADE", "semi;colon -- x", "a`; DELETE FROM t; -- ", "for upgrade"])
)


def quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


@settings(max_examples=300, deadline=None)
@given(name=NAMES, schema=st.none() | NAMES, option=st.sampled_from(["", " QUICK", " EXTENDED"]))
def test_check_table_of_any_name_reads_and_its_real_writes_still_write(
    name: str, schema: str | None, option: str
) -> None:
    table = quoted(name) if schema is None else f"{quoted(schema)}.{quoted(name)}"
    assert write_reason(f"CHECK TABLE {table}{option}", "mysql") is None
    assert write_reason(f"CHECK TABLE {table}{option};", "mysql") is None
    assert write_reason(f"SHOW CREATE TABLE {table}", "mysql") is None
    assert write_reason(f"CHECK TABLE {table} FOR UPGRADE", "mysql") is not None
    assert write_reason(f"CHECK TABLE {table}; DELETE FROM {table}", "mysql") is not None
    assert write_reason(f"SHOW CREATE TABLE {table}; DROP TABLE {table}", "mysql") is not None


@pytest.mark.parametrize(
    "sql",
    [
        "CHECK TABLE `a`; DELETE FROM t",
        "CHECK TABLE `a`;DELETE FROM t",
        "CHECK TABLE t FOR UPGRADE",
        "CHECK TABLE `t` for\nupgrade",
        "CHECK TABLE `a` /*! FOR UPGRADE */",
        "CHECK TABLE `a` /*M!100000 ; DELETE FROM t */",
        "CHECK TABLE `a` -- x\n; DELETE FROM t",
        "CHECK TABLE `a` # x\n; DELETE FROM t",
        "CHECK TABLE 'a\\'; DELETE FROM t; -- '",
        "CHECK TABLE `open",
        "SHOW TABLES; DELETE FROM t",
    ],
)
def test_a_real_second_statement_or_upgrade_still_writes(sql: str) -> None:
    assert write_reason(sql, "mysql") is not None


ODD_TABLES = ["semi;colon -- x", "x FOR UPGRADE", "q`uote; DROP TABLE t"]


def _tables(url: str) -> None:
    u = make_url(url)
    conn: Any = pymysql.connect(
        host=u.host, port=u.port or 3306, user=u.username, database=u.database, autocommit=True
    )
    with conn, conn.cursor() as cur:
        for name in ODD_TABLES:
            cur.execute(f"CREATE TABLE {quoted(name)} (id int PRIMARY KEY, v int) ENGINE=InnoDB")
            cur.execute(f"INSERT INTO {quoted(name)} VALUES (1, 1), (2, 2)")


@pytest.mark.parametrize("kind", ["full", "emergency"])
def test_maintenance_checks_tables_of_odd_names_on_mariadb(home, mysql_url: str, kind: str):
    _tables(mysql_url)
    config = use_target(home, mysql_url)
    result = commands.run_job(config, "maintenance", {"type": kind}, approver=PreApproved())
    assert result.status == "completed", [(s.tool, s.status, s.error) for s in result.steps]
    # A full run checks in its health step; an emergency run in a step of its own.
    checks = [
        s.output if s.tool == "check_table_corruption" else s.output["corruption_check"]
        for s in result.steps
        if s.tool == "check_table_corruption"
        or (s.tool == "analyze_database_health" and s.output.get("corruption_check"))
    ]
    assert [check["status_by_table"] for check in checks] == [dict.fromkeys(ODD_TABLES, "ok")]
