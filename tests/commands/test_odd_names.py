"""Tables whose names look like DB-API parameter syntax, all in one database, through
whole runs on all three engines: `aishell run maintenance --type full`, `aishell run
backup` and a log cleanup purge.

One such table (`pct%(x)s`, `%s`, `:name`, `?`, quotes, control characters) must never
block the runs of its target: every table is maintained, backed up and purged as any
other. tests/commands/test_identifiers.py covers one odd table at a time through a quick
maintenance; this file puts them all in one database at once, through the other agents.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from tests.commands.test_identifiers import admin, dialect_of, own_target, quoted, tables_of

# Every name at once: percent forms a pyformat driver reads, named and positional
# placeholders, quotes of each engine, control characters and non-ASCII.
NAMES = [
    "pct%(x)s",
    "%(x)s",
    "%",
    "%s",
    "50%",
    "%%",
    ":name",
    "?",
    "a?b:c",
    'dq"x',
    "sq'x",
    "bq`x",
    "tab\there",
    "line\nbreak",
    "bell\x07",
    "ünï_表_ж",
    "%(created_at)s",
    # The names of the purge's own bound values: a positional paramstyle would turn
    # these into placeholders.
    "t%(cutoff)s",
    "%(upper)s%(after)s",
]
OLD_DAYS = 400
# A table whose key and date columns are odd too, and an archive table of the same shape.
ODD_COLUMNS = ("cols%s", "k%(id)s?", "at:x%%")
ARCHIVE = "arch%(x)s"
PURGED = [
    "pct%(x)s",
    "%(created_at)s",
    "t%(cutoff)s",
    "%(upper)s%(after)s",
    ":name",
    "?",
    ODD_COLUMNS[0],
]


def create_logs(url: str, name: str, key: str = "id", date: str = "created_at") -> None:
    """A table of two rows older than the retention and three younger."""
    dialect = dialect_of(url)
    old = (datetime.now(UTC) - timedelta(days=OLD_DAYS)).strftime("%Y-%m-%d %H:%M:%S")
    new = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    table, k, at = (quoted(dialect, n) for n in (name, key, date))
    with admin(url) as run:
        run(
            f"CREATE TABLE {table} "
            f"({k} INTEGER PRIMARY KEY, {at} TIMESTAMP NOT NULL, msg VARCHAR(40))"
        )
        # Literal values and no parameters: the driver then reads no placeholder in the
        # text, so the test's own statements do not depend on what is tested.
        rows = [(1, old), (2, old), (3, new), (4, new), (5, new)]
        values = ", ".join(f"({i}, '{when}', 'row %s :x ? {i}')" for i, when in rows)
        run(f"INSERT INTO {table} ({k}, {at}, msg) VALUES {values}")


def counts(url: str, names: list[str]) -> dict[str, int]:
    dialect = dialect_of(url)
    with admin(url) as run:
        return {n: run(f"SELECT count(*) FROM {quoted(dialect, n)}")[0][0] for n in names}


def purge(target: str, table: str, date: str, *extra: str) -> dict:
    args = ["--target", target, "--table", table, "--date-column", date, "--retention-days", "30"]
    result = CliRunner().invoke(cli, ["run", "log-cleanup", *args, "--yes", "--json", *extra])
    assert result.exit_code == 0, (table, result.output)
    return json.loads(result.stdout)


def check_runs_over_odd_names(home: Path, url: str) -> None:
    for name in NAMES:
        create_logs(url, name)
    create_logs(url, *ODD_COLUMNS)
    with admin(url) as run:
        dialect = dialect_of(url)
        run(f"CREATE TABLE {quoted(dialect, ARCHIVE)} AS SELECT * FROM {quoted(dialect, NAMES[0])}")
        run(f"DELETE FROM {quoted(dialect, ARCHIVE)}")
    names = [*NAMES, ODD_COLUMNS[0], ARCHIVE]
    assert tables_of(url) == sorted(names)
    config, target = own_target(home, url)
    runner = CliRunner()

    maintained = runner.invoke(
        cli, ["run", "maintenance", "--type", "full", "--target", target, "--yes", "--json"]
    )
    assert maintained.exit_code == 0, maintained.output
    run_ = json.loads(maintained.stdout)
    assert run_["status"] == "completed", run_
    assert {s["status"] for s in run_["steps"]} == {"succeeded"}, run_["steps"]
    # Every table was looked at, each under its own name.
    # (Small tables share the work's steps; the health check and report name them all.)
    work = run_["steps"][1:-1]
    looked_at = {t for s in work for t in s["output"].get("tables_done") or []}
    looked_at |= {s["params"].get("table") for s in work}
    assert set(names) <= looked_at, set(names) - looked_at

    backed = runner.invoke(cli, ["run", "backup", "--type", "full", "--target", target, "--json"])
    assert backed.exit_code == 0, backed.output
    assert json.loads(backed.stdout)["status"] == "completed", backed.stdout
    [listed] = commands.list_backups(config, target)
    manifest = json.loads(Path(listed["path"] + ".manifest.json").read_text())
    assert manifest["tables"] == {n: 0 if n == ARCHIVE else 5 for n in names}
    assert listed["verified_at"]

    for name in PURGED[1:-1]:
        assert purge(target, name, "created_at")["status"] == "completed"
    archived = purge(target, PURGED[0], "created_at", "--archive-to", f"table:{ARCHIVE}")
    assert archived["status"] == "completed", archived
    assert purge(target, ODD_COLUMNS[0], ODD_COLUMNS[2])["status"] == "completed"

    after = counts(url, names)
    assert after == {n: 3 if n in PURGED else 2 if n == ARCHIVE else 5 for n in names}
    # Every statement the runs sent is in the audit, none failed.
    for past in commands.list_runs(config):
        audit = commands.run_statements(config, past["run_id"])
        assert audit and all(s["error"] is None for s in audit), past["run_id"]


@pytest.fixture
def sqlite_url(home: Path) -> str:
    path = home / f"odd_{uuid.uuid4().hex[:8]}.db"
    sqlite3.connect(path).close()
    return f"sqlite:///{path}"


def test_odd_names_on_sqlite(home: Path, sqlite_url: str) -> None:
    check_runs_over_odd_names(home, sqlite_url)


def test_odd_names_on_a_server(home: Path, server_url: str) -> None:
    check_runs_over_odd_names(home, server_url)
