"""A purge's cutoff is shown with the clock it reads on wherever it is shown (the dry
run's preview, the count's and the purge's figures, `runs show`, `--json`): SQLite's and
every Unix time's is UTC, as SQLite's 'now' is; a PostgreSQL `timestamp` or a MariaDB
`DATETIME` cutoff is the session's wall time, named by its zone; a `timestamptz` cutoff
carries its offset in its value and needs no name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.policy.approvers import PreApproved
from aishell.render.figures import step_figures
from tests.handlers.purge.test_log_cleanup import _database, fill, job
from tests.helpers import run_sql, use_target

# The zone each server's sessions are set to, and the clock a cutoff is then shown on.
ZONE = "Asia/Kolkata"
MARIADB_ZONE = "SET time_zone = '+05:30'"


def _zoned(dialect: str, url: str) -> tuple[str, str]:
    """The target's URL with its sessions in another zone than the machine's, and the
    name the cutoff's clock is given."""
    if dialect == "postgresql":
        run_sql(url, f"ALTER DATABASE \"{make_url(url).database}\" SET TimeZone = '{ZONE}'")
        return url, ZONE
    if dialect == "mysql":
        return f"{url}?init_command={quote(MARIADB_ZONE)}", "+05:30"
    return url, "UTC"


def _shown(args: list[str]) -> str:
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    return ran.output


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"])
def test_a_cutoff_without_an_offset_is_shown_with_its_clock(home: Path, dialect: str) -> None:
    with _database(dialect, home) as url:
        fill(url, rows=200)
        zoned, clock = _zoned(dialect, url)
        config = use_target(home, zoned)
        dry = _shown(["run", "log-cleanup", "--table", "events", "--date-column", "created_at",
                      "--retention-days", "30", "--dry-run"])  # fmt: skip
        said = re.search(r"would delete .* \(older than ([^)]*)\)", dry)
        assert said and said.group(1).endswith(f" in time zone {clock}"), dry
        done = commands.run_job(config, "log_cleanup", job(), approver=PreApproved())
        assert done.status == "completed", done.error
    count, purge = done.steps[0].output, done.steps[1].output
    assert count["cutoff_clock"] == purge["cutoff_clock"] == clock
    for out in (count, purge):
        assert f"{out['cutoff']} in time zone {clock}" in step_figures(out)
    shown = _shown(["runs", "show", done.run_id])
    assert f"(older than {purge['cutoff']} in time zone {clock})" in shown, shown
    as_json = json.loads(_shown(["runs", "show", done.run_id, "--json"]))
    assert [s["output"].get("cutoff_clock") for s in as_json["steps"][:2]] == [clock, clock]


@pytest.mark.parametrize(
    ("column", "clock"),
    [("timestamptz", None), ("bigint", "UTC"), ("date", ZONE), ("timestamp", ZONE)],
)
def test_each_postgresql_column_kind_names_the_clock_its_cutoff_reads_on(
    home: Path, pg_url: str, column: str, clock: str | None
) -> None:
    """A timestamptz cutoff carries its offset (+05:30); a Unix time is UTC's; a date
    and a timestamp without a zone are the session's wall time."""
    _zoned("postgresql", pg_url)
    run_sql(pg_url, f"CREATE TABLE clocked (id int PRIMARY KEY, at {column})")
    run_sql(pg_url, "INSERT INTO clocked SELECT g, NULL FROM generate_series(1, 5) g")
    config = use_target(home, pg_url)
    preview = commands.plan_job(
        config, "log_cleanup", {"table": "clocked", "date_column": "at", "retention_days": 30}
    )
    estimate = preview.steps[1].estimate or {}
    assert estimate.get("cutoff_clock") == clock, estimate
    if clock is None:
        assert str(estimate["cutoff"]).endswith("+05:30"), estimate
