"""MariaDB under sql_mode ORACLE (a session's or the server's global setting) reads
`s.nextval` as NEXT VALUE FOR s: a SELECT of it advances the sequence, though the parser
takes it for a column. The guard counts a sequence's writing words in a column's place
(`s.nextval`, `db.s.nextval`, quoted or not; `s.setval`) as a write, whatever the
session's mode, and `s.currval` as the read it is. A table's own column of that name is
refused too (fail closed), and the reason says how to select it."""

from __future__ import annotations

import types
from pathlib import Path
from urllib.parse import quote

import pytest

from aishell.guard.statements import classify
from tests.guard.test_guard import handlers, run_one, scalar
from tests.guard.test_guard_unseen import _params, _tool
from tests.guard.test_hidden_code_attacks import assert_refused, database

__all__ = ["handlers"]  # the fixture, found by pytest in this module

ORACLE = "SET sql_mode = 'ORACLE'"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT s.nextval FROM dual",
        "SELECT S.NEXTVAL FROM DUAL",
        "SELECT `s`.`nextval` FROM dual",
        "SELECT `db`.`s`.`NextVal`",
        "SELECT db.s.nextval + 1",
        "SELECT id FROM t WHERE id = s.nextval",
        "SELECT id FROM t ORDER BY (SELECT s.nextval)",
        "SELECT s.setval",
    ],
)
def test_mysql_a_sequence_s_writing_word_in_a_column_s_place_writes(sql: str) -> None:
    verdict = classify(sql, "mysql")
    assert verdict.writes, sql
    assert "under sql_mode ORACLE" in verdict.reason, verdict.reason


@pytest.mark.parametrize(
    "sql", ["SELECT s.currval FROM dual", "SELECT `s`.`currval`", "SELECT nextval FROM t"]
)
def test_mysql_currval_and_a_bare_column_named_nextval_only_read(sql: str) -> None:
    assert not classify(sql, "mysql").writes, sql


def test_mysql_a_table_s_column_named_nextval_is_refused_with_the_way_round() -> None:
    reason = classify("SELECT t.nextval FROM t", "mysql").reason
    assert "a table's column named nextval is taken for one too" in reason, reason
    assert "select it without the table's name" in reason, reason


def test_mariadb_oracle_mode_nextval_is_refused_in_a_writing_step(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database("mysql", tmp_path, "CREATE SEQUENCE s") as url:
        # Every session of the target in Oracle mode, as a server's global sql_mode makes it.
        oracle = f"{url}?init_command={quote(ORACLE)}"
        config = _tool(home, oracle, handlers, False)

        run = run_one(config, oracle, "caller", _params("SELECT s.nextval FROM dual"))

        assert_refused(url, run)
        assert "under sql_mode ORACLE advances sequence s" in (run.steps[0].error or "")
        # The sequence never handed out a value: nothing of its cache was taken.
        assert scalar(url, "SELECT next_not_cached_value FROM s") == 1
