"""Statements that reach a file of the machine are critical, however a tool tags them: no
yes given in advance runs them. PostgreSQL's COPY to or from a server file (not STDIN
or STDOUT) writes or reads any file the server may (its own configuration among them),
as COPY ... PROGRAM runs any command; MariaDB's LOAD DATA INFILE reads a server file as
LOAD_FILE does; SQLite's ATTACH opens, or makes, any database file the process may
(another target's, aishell's own store)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aishell import commands
from aishell.errors import CatalogError
from aishell.guard.statements import classify
from aishell.risk import RiskLevel
from tests.guard.test_guard import fingerprint, make_tables, run_one, scratch_database
from tests.guard.test_misread_statements import _sql_tool


def _refused_below_critical(home: Path, url: str, statements: list[str]) -> None:
    """Tagged high, the tool does not load; tagged critical, a yes given in advance up to
    high leaves it waiting."""
    with pytest.raises(CatalogError, match="tagged high but .* needs at least critical"):
        commands.load_catalog(_sql_tool(home, url, "reach_far", statements, "high"))
    config = _sql_tool(home, url, "reach_far", statements, "critical")

    run = run_one(config, url, "reach_far", {"table": "t"})

    assert run.steps[0].status == "waiting_approval", run.steps[0].error


def test_postgresql_copy_to_a_server_file_is_critical(home: Path, tmp_path: Path) -> None:
    made = Path("/tmp", f"aishell-copy-{uuid.uuid4().hex[:10]}")
    with scratch_database("postgresql", tmp_path) as url:
        make_tables(url)
        try:
            _refused_below_critical(home, url, [f"COPY (SELECT 1) TO '{made}'"])
            assert not made.exists()
        finally:
            made.unlink(missing_ok=True)


def test_mariadb_load_data_from_a_server_file_is_critical(home: Path, tmp_path: Path) -> None:
    # Where the server may read it: a row for t.
    source = Path("/tmp", f"aishell-load-{uuid.uuid4().hex[:10]}.tsv")
    source.write_text("100\t1\n")
    source.chmod(0o644)
    try:
        with scratch_database("mysql", tmp_path) as url:
            make_tables(url)
            load = f"LOAD DATA INFILE '{source}' INTO TABLE {{table}}"
            _refused_below_critical(home, url, [load])
            assert fingerprint(url) == (10, 55)
    finally:
        source.unlink()


def test_sqlite_attach_is_critical(home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    make_tables(f"sqlite:///{elsewhere}")
    url = f"sqlite:///{tmp_path / 'target.db'}"
    make_tables(url)
    statements = [f"ATTACH DATABASE '{elsewhere}' AS far", "DELETE FROM far.t WHERE id > 0"]
    _refused_below_critical(home, url, statements)
    assert fingerprint(f"sqlite:///{elsewhere}") == (10, 55)


@pytest.mark.parametrize(
    ("dialect", "sql", "risk"),
    [
        ("postgresql", "COPY t TO STDOUT", RiskLevel.HIGH),
        ("postgresql", "COPY t (a) FROM stdin WITH (FORMAT csv)", RiskLevel.HIGH),
        # A quoted STDOUT is a file of that name in the server's data directory.
        ("postgresql", "COPY t TO 'STDOUT'", RiskLevel.CRITICAL),
        ("postgresql", "COPY t FROM '/etc/hostname'", RiskLevel.CRITICAL),
        ("postgresql", "COPY t TO PROGRAM 'true'", RiskLevel.CRITICAL),
        ("postgresql", "LOAD 'auto_explain'", RiskLevel.CRITICAL),
        ("mysql", "LOAD DATA LOCAL INFILE '/x' INTO TABLE t", RiskLevel.CRITICAL),
        ("mysql", "LOAD XML INFILE '/x' INTO TABLE t", RiskLevel.CRITICAL),
        ("mysql", "LOAD INDEX INTO CACHE t", RiskLevel.HIGH),
    ],
)
def test_what_a_statement_reaches_sets_its_risk(dialect: str, sql: str, risk: RiskLevel) -> None:
    assert classify(sql, dialect).risk is risk
