"""A database (or a role) can lower extra_float_digits, which a database's owner sets
for every session with ALTER DATABASE ... SET: PostgreSQL then sends a float rounded
to as few as one digit, and a purge that archives to a file would keep 3 for 3.14159
and delete the row it came from. Every session aishell opens asks for the exact
digits, whatever the database or the role set."""

from __future__ import annotations

import json
import math

from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import use_target
from tests.services import engine

ROWS = 600  # id % 60 days old: half of them past a 30-day retention


def test_a_purge_archives_the_exact_floats_of_a_database_that_rounds_them(home, pg_url):
    database = make_url(pg_url).database
    admin = engine(pg_url)
    with admin.connect() as conn:
        conn.execute(
            text(
                "CREATE TABLE logs (id int PRIMARY KEY, created_at timestamptz NOT NULL, "
                "reading double precision NOT NULL, ratio real NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO logs SELECT g, now() - make_interval(days => g % 60, hours => 1), "
                f"g + pi(), g + 0.1 FROM generate_series(1, {ROWS}) g"
            )
        )
        old = [
            i
            for (i,) in conn.execute(
                text("SELECT id FROM logs WHERE created_at < now() - interval '30 days'")
            )
        ]
        conn.execute(text(f'ALTER DATABASE "{database}" SET extra_float_digits = -15'))
        conn.commit()
    path = home / "archive" / "logs.jsonl"

    result = commands.run_job(
        use_target(home, pg_url),
        "log_cleanup",
        {
            "table": "logs",
            "date_column": "created_at",
            "retention_days": 30,
            "archive_to": f"file:{path}",
        },
        approver=PreApproved(),
    )

    step = next(s for s in result.steps if s.tool == "delete_old_records")
    assert step.status == "succeeded", step.error
    archived = {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}
    assert sorted(archived) == sorted(old)
    for key, row in archived.items():
        # What the server holds: a double's sum with pi; a real's shortest text that
        # reads back as it, key + 0.1.
        assert row["reading"] == key + math.pi, row
        assert row["ratio"] == float(f"{key}.1"), row
