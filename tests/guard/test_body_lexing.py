"""A body's strings and comments end where its server ends them, so code the server runs
is never taken for a comment and its writes lost: PostgreSQL's E'...' takes backslash
escapes; MySQL's strings are read with backslash escapes and without (the catalog shows
a body as the server rewrote it), its "..." is a name under ANSI_QUOTES (each body's
sql_mode, from the catalog), and its `--` opens a comment only before white space;
SQLite's [name] is a name. Each trigger below
inserts into audit in code a reading by other rules would drop, and the server runs it:
the purge's preview names audit's trigger, and a row deleted by hand lands in audit."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.guard.bodytokens import code_tokens, literal_text
from aishell.guard.bodywrites import written_by_body
from aishell.guard.writtentables import Write
from tests.guard.test_body_writes import LOGS, _purge_preview, audit_trigger
from tests.guard.test_guard import execute, scalar, scratch_database

AUDIT = [Write("INSERT", None, "audit")]
HIDING = {
    # (engine, the sql_mode the trigger is made under, its body)
    "escaped string": (
        "postgresql",
        "",
        "DECLARE x text; BEGIN x := E'a\\' -- '; INSERT INTO audit VALUES (OLD.id); "
        "RETURN OLD; END",
    ),
    "backslash": (
        "mysql",
        "",
        "BEGIN SET @x = 'a\\' /* '; INSERT INTO audit VALUES (OLD.id); SET @y = ' */ '; END",
    ),
    # MariaDB's catalog shows the string 'a\\' as 'a\': read with backslash escapes
    # alone, the string would end at the second quote and `-- ` hide the INSERT.
    "escaped backslash": (
        "mysql",
        "",
        "BEGIN SET @x = 'a\\\\', @y = ' -- '; INSERT INTO audit VALUES (OLD.id); END",
    ),
    "no backslash escapes": (
        "mysql",
        "NO_BACKSLASH_ESCAPES",
        "BEGIN SET @x = 'a\\', @y = ' -- '; INSERT INTO audit VALUES (OLD.id); END",
    ),
    "ansi quotes": (
        "mysql",
        "ANSI_QUOTES",
        'BEGIN SELECT 1 AS "a\\" INTO @x; INSERT INTO audit VALUES (OLD.id); '
        'SELECT 2 AS "b" INTO @y; END',
    ),
    "minus minus": (
        "mysql",
        "",
        "BEGIN SET @a = 1--1; INSERT INTO audit VALUES (OLD.id); END",
    ),
    # The code inside MySQL's executable comment is read as code: a `*/` in its string
    # ends nothing.
    "executable comment's string": (
        "mysql",
        "",
        "BEGIN SET @x = 1 /*!, @y = '*/ -- ' */; INSERT INTO audit VALUES (OLD.id); END",
    ),
    # A function's own SET standard_conforming_strings = off: '...' takes escapes.
    "conforming strings off": (
        "postgresql",
        "standard_conforming_strings = off",
        "DECLARE x text; BEGIN x := 'a\\' -- '; INSERT INTO audit VALUES (OLD.id);\n"
        "RETURN OLD; END",
    ),
    "bracketed name": (
        "sqlite",
        "",
        "SELECT 1 AS [a -- ]; INSERT INTO audit VALUES (OLD.id);",
    ),
    # PL/pgSQL's `--` comment ends at a carriage return, as a statement's does.
    "carriage return": (
        "postgresql",
        "",
        "BEGIN -- a note\rINSERT INTO audit VALUES (OLD.id); RETURN OLD; END",
    ),
}


@pytest.mark.parametrize("case", sorted(HIDING))
def test_code_after_a_string_is_read_where_the_server_runs_it(case: str) -> None:
    dialect, sql_mode, body = HIDING[case]
    assert list(dict.fromkeys(written_by_body(body, dialect, sql_mode))) == AUDIT


def test_the_same_text_under_another_sql_mode_is_read_by_that_mode() -> None:
    """Under ANSI_QUOTES `"a\\" -- "` is a name, then a comment; by default, a string."""
    body = 'BEGIN SET @x = "a\\" -- "; INSERT INTO audit VALUES (OLD.id); END'
    assert list(dict.fromkeys(written_by_body(body, "mysql"))) == AUDIT
    assert list(written_by_body(body, "mysql", "ANSI_QUOTES")) == []


@pytest.mark.parametrize(
    ("token", "text"),
    [
        ("E'it\\'s'", "it's"),
        ("e'DELETE\\nFROM audit'", "DELETE\nFROM audit"),
        ("E'a''b\\\\'", "a'b\\"),
        ("'plain\\'", "plain\\"),
    ],
)
def test_an_escaped_string_is_read_with_its_escapes(token: str, text: str) -> None:
    assert literal_text(token) == text


def test_a_name_ending_in_e_is_no_escape_prefix() -> None:
    assert code_tokens("SELECT some'x\\'", "postgresql") == ["SELECT", "some", "'x\\'"]


def _trigger(dialect: str, sql_mode: str, body: str) -> tuple[str, ...]:
    """logs_gone after a DELETE on logs, running `body`, made under `sql_mode` (MySQL)
    or with that setting of its own (PostgreSQL)."""
    if dialect == "postgresql":
        # A setting of the function's own: its body is read under it when it runs (and
        # not checked when it is made, where the session's would read it otherwise).
        setting = f"SET {sql_mode} " if sql_mode else ""
        return (
            "DROP TRIGGER logs_gone ON logs",
            "SET check_function_bodies = off",
            "CREATE OR REPLACE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql "
            f"{setting}AS $${body}$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
        )
    if dialect == "mysql":
        return (
            "DROP TRIGGER logs_gone",
            f"SET SESSION sql_mode = '{sql_mode}'",
            f"CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW {body}",
        )
    return (
        "DROP TRIGGER logs_gone",
        f"CREATE TRIGGER logs_gone AFTER DELETE ON logs BEGIN {body} END",
    )


@pytest.mark.parametrize("case", sorted(HIDING))
def test_a_purge_names_what_such_a_trigger_sets_off(home: Path, tmp_path: Path, case: str) -> None:
    dialect, sql_mode, body = HIDING[case]
    with scratch_database(dialect, tmp_path) as url:
        execute(
            url,
            *LOGS[dialect],
            *_trigger(dialect, sql_mode, body),
            *audit_trigger(dialect, "INSERT INTO ledger VALUES (NEW.id)"),
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
