"""MariaDB's read commands that run code, and a sequence's name quoted with `"`.

`SHOW TABLES WHERE NEXTVAL(s) > 0` evaluates its WHERE for each row it shows: the guard
took any SHOW for a read by its first word, and the step advanced the sequence. A read
command with a WHERE is judged as a query is (its functions, its sequence words, the
functions and views it calls, on the server); its other clauses run no expression (LIKE
takes a string, SHOW EXPLAIN FOR a constant: tried on the server).

Under sql_mode ORACLE (which ANSI_QUOTES is part of) `"s".nextval` is `s.nextval`, NEXT
VALUE FOR s; the parser reads `"s"` as a string and its `.nextval` as no column's, so
the guard's look for a sequence's writing words missed it. Any quoting of the sequence's
name, or of the database's, counts."""

from __future__ import annotations

import types
from pathlib import Path
from urllib.parse import quote

import pytest

from aishell.guard.statements import classify
from tests.guard.test_guard import Cases, handlers, refill, run_one, scalar
from tests.guard.test_guard_unseen import _params, _tool
from tests.guard.test_hidden_code_attacks import assert_refused, database

__all__ = ["handlers"]  # the fixture, found by pytest in this module

ORACLE = "SET sql_mode = 'ORACLE'"

RUNS_CODE = [
    "SHOW TABLES WHERE NEXTVAL(s) > 0",
    "SHOW TABLES WHERE SETVAL(s, 100) > 0",
    "SHOW FULL TABLES FROM db WHERE Table_type = 'x' OR NEXTVAL(s) > 0",
    "SHOW TABLE STATUS WHERE Name IN (SELECT NEXTVAL(s))",
    "SHOW VARIABLES WHERE Variable_name = s.nextval",
    "SHOW COLUMNS FROM t WHERE Field = (SELECT `s`.`nextval`)",
    "show tables where /* a */ nextval(s) > 0",
    "SHOW TABLES WHERE GET_LOCK('aishell', 0) = 1",
]


@pytest.mark.parametrize("sql", RUNS_CODE)
def test_mariadb_a_read_command_with_a_writing_where_writes(sql: str) -> None:
    assert classify(sql, "mysql").writes, sql


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW TABLES",
        "SHOW TABLE STATUS WHERE Name = 't'",
        "SHOW TABLES WHERE Tables_in_db LIKE 'x%'",
        "SHOW TABLES LIKE 'where nextval(s)'",
        "SHOW COLUMNS FROM `where`",
        "CHECK TABLE `where`",
    ],
)
def test_mariadb_a_read_command_whose_where_only_reads_reads(sql: str) -> None:
    assert not classify(sql, "mysql").writes, sql


QUOTED_SEQUENCE_WORDS = [
    'SELECT "s".nextval FROM dual',
    'SELECT "db"."s"."nextval"',
    'SELECT "s".`nextval`',
    'SELECT `s`."nextval"',
    'SELECT "s" . setval',
    'SELECT id FROM t WHERE id = "db".`s`.nextval',
]


@pytest.mark.parametrize("sql", QUOTED_SEQUENCE_WORDS)
def test_mariadb_a_sequence_word_after_a_double_quoted_name_writes(sql: str) -> None:
    verdict = classify(sql, "mysql")
    assert verdict.writes, sql
    assert "under sql_mode ORACLE" in verdict.reason, verdict.reason


def test_mariadb_currval_after_a_double_quoted_name_only_reads() -> None:
    assert not classify('SELECT "s".currval FROM dual', "mysql").writes


MYSQL_OBJECTS = [
    "CREATE SEQUENCE s",
    "CREATE FUNCTION evil() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM other; RETURN 1; END",
    "CREATE VIEW zv AS SELECT evil() AS z",
]
ON_THE_SERVER = {
    "nextval": "SHOW TABLES WHERE NEXTVAL(s) > 0",
    "setval": "SHOW TABLE STATUS WHERE Name = 'x' OR SETVAL(s, 100) > 0",
    "stored-function": "SHOW TABLES WHERE evil() > 0",
    "stored-function-in-a-subquery": "SHOW TABLES WHERE (SELECT evil()) > 0",
    "view-calling-a-function": "SHOW TABLES WHERE (SELECT count(*) FROM zv) > 0",
}


@pytest.mark.parametrize("read_only_step", [True, False], ids=["read-step", "write-step"])
def test_mariadb_a_show_whose_where_writes_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType, read_only_step: bool
) -> None:
    """Refused before it runs: the sequence hands out nothing, `other` keeps its rows."""
    with database("mysql", tmp_path, *MYSQL_OBJECTS) as url, Cases() as case:
        config = _tool(home, url, handlers, read_only_step)
        for name, sql in ON_THE_SERVER.items():
            with case(name):
                refill(url)
                run = run_one(config, url, "caller", _params(sql))

                assert_refused(url, run)
                assert scalar(url, "SELECT next_not_cached_value FROM s") == 1


def test_mariadb_oracle_mode_double_quoted_nextval_is_refused(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database("mysql", tmp_path, "CREATE SEQUENCE s") as url:
        oracle = f"{url}?init_command={quote(ORACLE)}"
        config = _tool(home, oracle, handlers, True)

        run = run_one(config, oracle, "caller", _params('SELECT "s".nextval FROM dual'))

        assert_refused(url, run)
        assert "under sql_mode ORACLE advances sequence s" in (run.steps[0].error or "")
        assert scalar(url, "SELECT next_not_cached_value FROM s") == 1
