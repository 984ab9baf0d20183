"""Planning, previewing and dry-running every maintenance type costs the same number of
queries to the target for twice the tables: each aspect of the tables (indexes, bloat
estimates, sizes, b-trees) is read for all of them in one query. Counted as the driver
sends them, on SQLite, PostgreSQL (with and without pgstattuple) and MariaDB. In a dry
run only the steps' own statements (the corruption check reading each table, the health
step counting each table's rows) grow with the tables."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aishell import commands
from aishell.config.models import Config
from aishell.config.options import MAINTENANCE_TYPES
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target
from tests.services import scratch_mysql, scratch_postgresql
from tests.targets.test_catalog_round_trips import add_tables, sent_to


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+pgstattuple", "mysql"])
def target(request: pytest.FixtureRequest, home: Path) -> Iterator[tuple[Config, str]]:
    """The default target `db`: an empty SQLite file or scratch server database."""
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'many.db'}"
        yield use_target(home, url), url
        return
    scratch = scratch_mysql if request.param == "mysql" else scratch_postgresql
    with scratch() as url:
        if request.param.endswith("pgstattuple"):
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text("CREATE EXTENSION pgstattuple"))
            engine.dispose()
        yield use_target(home, url), url


def planned(config: Config, url: str) -> dict[str, int]:
    """Statements sent by `plan maintenance --type T` (planning and its preview), by type."""
    counts = {}
    for kind in MAINTENANCE_TYPES:
        with sent_to(url) as sent:
            commands.plan_job(config, "maintenance", {"type": kind})
        counts[kind] = len(sent)
    return counts


def dry_run(config: Config, url: str, kind: str) -> tuple[Counter[str], int]:
    """A dry run's statements: the steps' own (its statement audit, as shapes), and how
    many others it sent."""
    with sent_to(url) as sent:
        result = commands.run_job(
            config, "maintenance", {"type": kind}, approver=PreApproved(), dry_run=True
        )
    assert result.status == "completed", result.error
    own = [r["sql"] for r in commands.run_statements(config, result.run_id)]
    return Counter(shape(sql) for sql in own), len(sent) - len(own)


def shape(sql: str) -> str:
    """A statement without its table's name, and a list of values as one."""
    return re.sub(r"IN \([^()]*\)", "IN (...)", re.sub(r"t\d{3}", "t", sql))


# What reads a table itself (not the catalog): a step's own work, once per table.
TABLE_READS = re.compile(
    r"count\(\*\) FROM [`\"]t[`\"]|pgstatindex\(|pgstattuple\(|CHECK TABLE|integrity_check|"
    r"foreign_key_check|verify_heapam|bt_index_check"
)


def test_planning_every_maintenance_type_sends_no_query_per_table(target):
    config, url = target
    add_tables(url, 0, 3)
    small = planned(config, url)
    add_tables(url, 3, 3)
    assert planned(config, url) == small


def test_a_full_dry_run_grows_only_by_the_steps_own_reads_of_each_table(target):
    config, url = target
    add_tables(url, 0, 2)
    own, others = dry_run(config, url, "full")
    add_tables(url, 2, 2)
    more_own, more_others = dry_run(config, url, "full")
    assert more_others == others
    grown = more_own - own
    # The corruption check reads each table (and pgstatindex each index it measures).
    assert grown and all(TABLE_READS.search(sql) for sql in grown), grown
