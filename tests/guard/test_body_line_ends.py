"""A trigger's body is split where its server splits it (bodytokens.py, by lex.py's
rules): PL/pgSQL's `--` comment ends at a carriage return (test_body_lexing.HIDING);
MariaDB's and SQLite's run on to the line feed. A name is read as the server reads one,
U+00A0 in it included: `audit`, U+00A0 and `log` is one table, not audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.guard.bodywrites import written_by_body
from aishell.guard.writtentables import Write
from tests.guard.test_body_lexing import _trigger
from tests.guard.test_body_writes import LOGS
from tests.guard.test_guard import execute, scalar, scratch_database


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_mariadb_and_sqlite_read_it_as_comment_to_the_line_feed(dialect: str) -> None:
    body = "BEGIN -- a note\rINSERT INTO audit VALUES (OLD.id);\nEND"
    assert list(written_by_body(body, dialect)) == []


def test_a_name_with_u00a0_in_it_is_one_name_as_the_server_reads_it(tmp_path: Path) -> None:
    body = "BEGIN INSERT INTO audit\u00a0log VALUES (OLD.id); RETURN OLD; END"
    assert list(dict.fromkeys(written_by_body(body, "postgresql"))) == [
        Write("INSERT", None, "audit\u00a0log")
    ]
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"],
            'CREATE TABLE "audit\u00a0log" (id integer)',
            *_trigger("postgresql", "", body),
            "DELETE FROM logs WHERE id = 1",
        )
        assert scalar(url, 'SELECT count(*) FROM "audit\u00a0log"') == 1
        assert scalar(url, "SELECT count(*) FROM audit") == 0
