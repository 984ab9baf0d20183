"""A purge whose DELETE would evaluate the application's own function or collation (an
index on norm(name), a column sorted by nocase2, a DELETE trigger calling norm()) is
refused when it is planned, in one line naming the table, the index, column or trigger
and the code it needs; nothing is deleted. A table of the same database that needs none
of it is purged, and so is one whose trigger calling norm() fires on INSERT only."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from aishell.errors import TargetError
from aishell.policy.approvers import PreApproved
from tests.handlers.maintenance.test_sqlite_app_code import (
    SCHEMAS,
    app_database,
    keep_recent,
)
from tests.helpers import query, use_target

PLAIN_PEOPLE = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT)"
REFUSED = {
    **{
        code: (schema, f"its index {which}")
        for code, schema, which in (
            ("function", SCHEMAS["function"], "people_norm calls norm()"),
            (
                "collation",
                SCHEMAS["collation"],
                "people_name sorts column name by collation nocase2",
            ),
        )
    },
    "delete trigger": (
        (
            PLAIN_PEOPLE,
            "CREATE TABLE log (n TEXT)",
            "CREATE TRIGGER people_log AFTER DELETE ON people "
            "BEGIN INSERT INTO log VALUES (norm(old.name)); END",
        ),
        "its trigger people_log calls norm()",
    ),
    "date column's collation": (
        ("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, created TEXT COLLATE nocase2)",),
        "its column created uses collation nocase2",
    ),
}
JOB = {"table": "people", "date_column": "created", "retention_days": 30}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_purge_that_needs_the_applications_code_is_refused_when_planned(
    home: Path, case: str
) -> None:
    schema, said = REFUSED[case]
    db = app_database(home / "app.db", *schema)
    config = use_target(home, f"sqlite:///{db}")
    with pytest.raises(TargetError) as refused:
        commands.run_job(config, "log_cleanup", JOB, approver=PreApproved())
    message = str(refused.value)
    assert message.startswith(
        "Cannot purge people: a DELETE from it needs the application's own code, which "
        f"aishell does not have: {said}"
    )
    assert "\n" not in message
    assert query(db, "SELECT count(*) FROM people NOT INDEXED") == [(300,)]


def test_what_needs_none_of_it_is_purged(home: Path) -> None:
    db = app_database(
        home / "app.db",
        PLAIN_PEOPLE,
        "CREATE TABLE log (n TEXT)",
        "CREATE TRIGGER people_log AFTER INSERT ON people "
        "BEGIN INSERT INTO log VALUES (norm(new.name)); END",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, created TEXT)",
        "CREATE INDEX events_norm ON events (norm(created))",
    )
    keep_recent(db)
    config = use_target(home, f"sqlite:///{db}")
    result = commands.run_job(config, "log_cleanup", JOB, approver=PreApproved())
    assert result.status == "completed", result.error
    assert query(db, "SELECT count(*) FROM people") == [(200,)]
