"""A trigger's body is split where its server splits it (bodytokens.py, by lex.py's
rules): PL/pgSQL's `--` comment ends at a carriage return, as the statement's does, so
the INSERT after one runs and is what the body writes; MariaDB's and SQLite's run on to
the line feed. A name is read as the server reads one, U+00A0 in it included: `audit`,
U+00A0 and `log` is one table, not audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.guard.bodywrites import written_by_body
from aishell.guard.writtentables import Write
from tests.guard.test_body_lexing import _trigger
from tests.guard.test_body_writes import LOGS, _purge_preview, audit_trigger
from tests.guard.test_guard import execute, scalar, scratch_database

AUDIT = [Write("INSERT", None, "audit")]
AFTER_A_CARRIAGE_RETURN = "BEGIN -- a note\rINSERT INTO audit VALUES (OLD.id); RETURN OLD; END"


def test_postgresql_reads_a_body_s_code_after_a_carriage_return_in_a_comment() -> None:
    written = written_by_body(AFTER_A_CARRIAGE_RETURN, "postgresql")
    assert list(dict.fromkeys(written)) == AUDIT


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_mariadb_and_sqlite_read_it_as_comment_to_the_line_feed(dialect: str) -> None:
    body = "BEGIN -- a note\rINSERT INTO audit VALUES (OLD.id);\nEND"
    assert list(written_by_body(body, dialect)) == []


def test_a_purge_names_the_trigger_the_code_after_a_carriage_return_sets_off(
    home: Path, tmp_path: Path
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"],
            *_trigger("postgresql", "", AFTER_A_CARRIAGE_RETURN),
            *audit_trigger("postgresql", "INSERT INTO ledger VALUES (NEW.id)"),
        )

        purge, _config = _purge_preview(home, url)

        said = "inserting into audit (by trigger logs_gone on logs) fires trigger audit_in"
        fires = (purge.estimate or {}).get("fires") or []
        assert any(f.startswith(said) for f in fires), fires
        assert purge.requires_approval and any(r.startswith(said) for r in purge.reasons)
        # The server runs the code the preview read.
        execute(url, "DELETE FROM logs WHERE id = 1")
        assert scalar(url, "SELECT count(*) FROM audit") == 1
        assert scalar(url, "SELECT count(*) FROM ledger") == 1


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
