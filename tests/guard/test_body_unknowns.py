"""A PostgreSQL body whose text does not show the SQL it runs writes tables not known,
and the step that sets it off says so where it is judged: a trigger's function that
EXECUTEs a statement it makes at run time (from format(), a column, a concatenation;
in a function it calls; in a DO block it runs), and one written in a language aishell
does not read (C: contrib's refint deletes referencing rows). A statement EXECUTEd as
one literal is read as SQL, dollar-quoted ones too, and is no unknown; a SQL function
written BEGIN ATOMIC, which keeps no source text, is read by its definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.config.models import load_config
from aishell.guard.bodyunknowns import SHOWN, built_statement, unseen_code
from aishell.guard.bodywrites import written_by_body
from aishell.guard.writtentables import Write
from tests.guard.test_body_writes import LOGS, _purge_preview
from tests.guard.test_guard import execute, scalar, scratch_database
from tests.guard.test_user_code import PURGE
from tests.helpers import read_yaml, use_target, write_yaml

BUILT = [
    ("BEGIN EXECUTE NEW.cmd; RETURN NEW; END", "EXECUTE NEW.cmd"),
    (
        "BEGIN EXECUTE format('DELETE FROM %I', TG_ARGV[0]) USING OLD.id; RETURN OLD; END",
        "EXECUTE format('DELETE FROM %I', TG_ARGV[0])",
    ),
    (
        "BEGIN EXECUTE 'DELETE FROM ' || quote_ident(t); END",
        "EXECUTE 'DELETE FROM ' || quote_ident(t)",
    ),
    ("BEGIN FOR r IN EXECUTE q LOOP NULL; END LOOP; END", "EXECUTE q"),
    ("DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE v_sql; END", "EXECUTE v_sql"),
    ("BEGIN RETURN QUERY execute 'SELECT ' || n; END", "execute 'SELECT ' || n"),
    # The literal a body EXECUTEs, and a DO block's, are code in their turn.
    ("BEGIN EXECUTE 'DO $x$BEGIN EXECUTE q; END$x$'; END", "EXECUTE q"),
    ("BEGIN EXECUTE $a$DO LANGUAGE plpgsql $b$BEGIN EXECUTE v; END$b$$a$; END", "EXECUTE v"),
    # A SQL function's EXECUTE of a prepared statement: its text is the session's.
    ("EXECUTE purge_plan(1)", "EXECUTE purge_plan(1)"),
    # The server's functions that run the query text they are given.
    ("BEGIN PERFORM query_to_xml(q, true, false, ''); END", "query_to_xml(q, true, false, '')"),
    (
        "SELECT pg_catalog.query_to_xmlschema(NEW.q::text, true, true, '')",
        "query_to_xmlschema(NEW.q::text, true, true, '')",
    ),
    ("BEGIN PERFORM \"ts_stat\"('SELECT ' || c); END", "\"ts_stat\"('SELECT ' || c)"),
    (
        "SELECT ts_rewrite(a::tsquery, 'SELECT t, s FROM ' || x)",
        "ts_rewrite(a::tsquery, 'SELECT t, s FROM ' || x)",
    ),
    # Brackets are a call's own (their comma splits no argument); a listed function
    # with more or fewer arguments than its form that runs text is said all the same.
    (
        "BEGIN PERFORM query_to_xml(ARRAY[q, 'x'][1], true, false, ''); END",
        "query_to_xml(ARRAY[q, 'x'][1], true, false, '')",
    ),
    ("SELECT ts_rewrite(ARRAY[a, b][1]::tsquery, q)", "ts_rewrite(ARRAY[a, b][1]::tsquery, q)"),
    ("SELECT query_to_xml(q)", "query_to_xml(q)"),
    # A function's own SET standard_conforming_strings = off makes '...' take
    # backslash escapes: what a reading by the pinned setting takes for a comment runs.
    ("BEGIN x := 'a\\' -- '; EXECUTE q;\n RETURN NEW; END", "EXECUTE q"),
    # Shown up to SHOWN characters.
    ("BEGIN EXECUTE " + "x || " * 30 + "y; END", ("EXECUTE " + "x || " * 30)[: SHOWN - 3] + "..."),
]
READ = [
    "BEGIN EXECUTE 'DELETE FROM audit WHERE id = $1' USING OLD.id; RETURN OLD; END",
    "BEGIN EXECUTE $q$DELETE FROM audit$q$; RETURN OLD; END",
    "BEGIN EXECUTE E'DELETE FROM audit'; END",
    "BEGIN EXECUTE ('DELETE FROM audit') INTO n; END",
    "BEGIN RETURN QUERY EXECUTE 'SELECT 1'; END",
    "BEGIN RAISE NOTICE 'cannot EXECUTE %', x; END",
    "BEGIN -- EXECUTE q\n RETURN NEW; END",
    "BEGIN EXECUTE 'GRANT EXECUTE ON FUNCTION f() TO r'; END",
    "BEGIN EXECUTE 'CREATE TRIGGER t AFTER INSERT ON a EXECUTE FUNCTION f()'; END",
    "BEGIN PERFORM $$ EXECUTE q $$; END",
    # Query text that is one literal is read as SQL; ts_rewrite's form of three
    # tsqueries runs none.
    "BEGIN PERFORM query_to_xml('SELECT * FROM audit', true, false, ''); END",
    "SELECT * FROM ts_stat($$SELECT v FROM docs$$, 'ab')",
    "SELECT ts_rewrite(a, b, c)",
    "SELECT my_query_to_xml(q)",
]


@pytest.mark.parametrize(("body", "shown"), BUILT)
def test_a_statement_made_at_run_time_is_found(body: str, shown: str) -> None:
    assert built_statement(body, "postgresql") == shown
    said = unseen_code(body, "plpgsql", "postgresql")
    assert said == f"runs SQL it makes at run time ({shown})"


@pytest.mark.parametrize("body", READ)
def test_a_statement_executed_as_one_literal_is_read_not_unknown(body: str) -> None:
    assert unseen_code(body, "plpgsql", "postgresql") is None


@pytest.mark.parametrize(
    ("language", "unknown"),
    [("plpgsql", False), ("sql", False), ("internal", False), ("c", True), ("plpython3u", True)],
)
def test_code_in_a_language_not_read_is_unknown(language: str, unknown: bool) -> None:
    said = unseen_code("BEGIN RETURN NEW; END", language, "postgresql")
    assert (said is not None) == unknown
    assert said is None or language in said
    # An installed extension's, declared IMMUTABLE or STABLE: taken at its word.
    assert unseen_code("BEGIN RETURN NEW; END", language, "postgresql", True) is None


def test_other_engines_run_no_statement_made_at_run_time_from_a_trigger() -> None:
    """MariaDB refuses PREPARE and EXECUTE IMMEDIATE in a trigger's code (error 1336)."""
    assert unseen_code("EXECUTE IMMEDIATE @s", None, "mysql") is None
    assert unseen_code("EXECUTE IMMEDIATE @s", None, "sqlite") is None


W = Write


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("BEGIN EXECUTE $q$DELETE FROM audit$q$; END", [W("DELETE", None, "audit")]),
        ("BEGIN EXECUTE $$UPDATE ledger SET id = 1$$; END", [W("UPDATE", None, "ledger")]),
        # A quote inside a dollar-quoted literal opens nothing.
        (
            "BEGIN PERFORM $x$it's$x$; INSERT INTO kept VALUES (1); x := 'DELETE FROM gone'; END",
            [W("DELETE", None, "gone"), W("INSERT", None, "kept")],
        ),
        # $1 is a parameter, not a dollar quote.
        (
            "BEGIN DELETE FROM audit WHERE id = $1; UPDATE ledger SET a = $2; END",
            [W("DELETE", None, "audit"), W("UPDATE", None, "ledger")],
        ),
    ],
)
def test_dollar_quoted_sql_is_read(body: str, expected: list[Write]) -> None:
    assert list(dict.fromkeys(written_by_body(body, "postgresql"))) == expected


TRIGGERS = {
    "format": (
        (
            "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN EXECUTE format('INSERT INTO %I VALUES ($1)', TG_ARGV[0]) USING OLD.id; "
            "RETURN OLD; END$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone('ledger')",
        ),
        "trigger logs_gone on logs: its function logs_gone runs SQL it makes at run time "
        "(EXECUTE format('INSERT INTO %I VALUES ($1)', TG_ARGV[0]))",
    ),
    "called": (
        (
            "CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql AS "
            "$$BEGIN EXECUTE q; END$$",
            "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM run_sql('DELETE FROM ledger'); RETURN OLD; END$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
        ),
        "trigger logs_gone on logs: its function run_sql runs SQL it makes at run time (EXECUTE q)",
    ),
    # A SELECT the body hands to the server: it may call a function that writes.
    "query_to_xml": (
        (
            "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM query_to_xml(TG_ARGV[0], true, false, ''); RETURN OLD; END$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone('SELECT 1')",
        ),
        "trigger logs_gone on logs: its function logs_gone runs SQL it makes at run time "
        "(query_to_xml(TG_ARGV[0], true, false, ''))",
    ),
    "c": (
        (
            "CREATE EXTENSION refint",
            "CREATE TRIGGER logs_refs BEFORE DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION check_foreign_key(1, 'cascade', 'id', 'ledger', 'id')",
        ),
        "trigger logs_refs on logs: its function check_foreign_key is written in LANGUAGE c, "
        "whose code aishell does not read",
    ),
}


@pytest.mark.parametrize("case", sorted(TRIGGERS))
def test_a_purge_whose_trigger_runs_unseen_sql_says_so_and_waits(
    home: Path, tmp_path: Path, case: str
) -> None:
    statements, said = TRIGGERS[case]
    with scratch_database("postgresql", tmp_path) as url:
        execute(url, *LOGS["postgresql"][:4], *statements)

        purge, config = _purge_preview(home, url)
        run = commands.run_job(config, "log_cleanup", PURGE)

        line = f"deleting from logs: {said}: what it writes is not known"
        cascades = (purge.estimate or {}).get("cascades") or []
        assert line in cascades, cascades
        assert purge.requires_approval and line in purge.reasons, purge.reasons
        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert step.status == "waiting_approval" and line in step.reasons, step.reasons
        assert scalar(url, "SELECT count(*) FROM logs") == 60


# A trigger on ledger: where the preview names it, the write to ledger was found.
LEDGER_IN = (
    "CREATE FUNCTION ledger_in() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$",
    "CREATE TRIGGER ledger_in AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_in()",
)


# Trigger functions whose writes are known: to ledger, whose trigger the preview names.
KNOWN = {
    # A statement EXECUTEd as one literal (dollar-quoted) is read as SQL.
    "literal": (
        "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$f$BEGIN EXECUTE $q$INSERT INTO ledger VALUES ($1)$q$ USING OLD.id; "
        "RETURN OLD; END$f$",
    ),
    # pgcrypto's digest (C, IMMUTABLE, an installed extension's) is taken at its word;
    # refint's check_foreign_key (C, VOLATILE) is said (above).
    "extension": (
        "CREATE EXTENSION pgcrypto",
        "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO ledger VALUES (length(digest('x', 'sha256'))); "
        "RETURN OLD; END$$",
    ),
}


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_code_whose_writes_are_known_is_followed_and_not_said_unknown(
    home: Path, tmp_path: Path, case: str
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"][:4],
            *KNOWN[case],
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
            *LEDGER_IN,
        )

        purge, _config = _purge_preview(home, url)

        estimate = purge.estimate or {}
        assert not [c for c in estimate.get("cascades") or [] if "not known" in c], estimate
        fires = estimate.get("fires") or []
        assert any("inserting into ledger" in f and "ledger_in" in f for f in fires), fires


def test_a_sql_function_of_begin_atomic_is_read_by_its_definition(
    home: Path, tmp_path: Path
) -> None:
    """Its source text is empty (the server keeps the body parsed): what it writes is
    read from its definition, and the triggers there are followed."""
    with scratch_database("postgresql", tmp_path) as url:
        execute(
            url,
            *LOGS["postgresql"][:4],
            "CREATE FUNCTION note(i integer) RETURNS void LANGUAGE sql "
            "BEGIN ATOMIC INSERT INTO ledger VALUES (i); END",
            "CREATE FUNCTION logs_gone() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM note(OLD.id); RETURN OLD; END$$",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "EXECUTE FUNCTION logs_gone()",
            *LEDGER_IN,
        )

        purge, _config = _purge_preview(home, url)

        fires = (purge.estimate or {}).get("fires") or []
        assert any("inserting into ledger" in f and "ledger_in" in f for f in fires), fires


def test_a_function_the_target_vouches_for_is_not_said_unknown(home: Path, tmp_path: Path) -> None:
    """trusted_functions lists the functions a site says only read: one whose SQL is
    made at run time is then not said to write tables not known."""
    with scratch_database("postgresql", tmp_path) as url:
        execute(url, *LOGS["postgresql"][:4], *TRIGGERS["format"][0])
        use_target(home, url)
        path = home / "config" / "aishell.yaml"
        data = read_yaml(path)
        data["targets"]["db"]["trusted_functions"] = ["public.logs_gone"]
        write_yaml(path, data)

        preview = commands.plan_job(load_config(home=home), "log_cleanup", PURGE)

        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        cascades = (purge.estimate or {}).get("cascades") or []
        assert not [c for c in cascades if "not known" in c], cascades
        assert any("fires trigger logs_gone" in f for f in purge.estimate["fires"])
