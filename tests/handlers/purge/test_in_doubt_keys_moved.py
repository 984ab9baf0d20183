"""A batch whose COMMIT never landed, whose rows the application then moves to other keys
before the resume (an UPDATE of the key: renumbered, merged, re-sharded ids).

On PostgreSQL the server's word on the batch's transaction (pg_xact_status) settles it:
the batch is undone (its archive bytes cut), and the rows, under their new keys, are
archived once when the walk reaches them. On MariaDB an archive file's batch in doubt
is judged by its archived rows, looked for by their keys: every key gone looks just like
a batch that committed, so its bytes are kept, and the moved rows are archived again
under their new keys. That is the documented limit (README, "Before each batch commits"):
a witness that tells them apart is a write in the batch's own transaction (a round trip
more for every batch) or a two-phase commit (XA); an archive table is one.

The run is SIGKILLed with its second batch's COMMIT held by the test's proxy; the test
ends that run's session itself (the COMMIT never lands), moves the batch's rows to keys
the walk has still to reach, and resumes. Bound: HANG seconds a wait.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import bindparam, text

from tests.handlers.purge.test_exactly_once import (
    HANG,
    in_doubt,
    in_transaction_soon,
    killed_with_a_batch_in_doubt,
    resume,
    sessions_in_transaction,
    site,
)
from tests.handlers.purge.test_purge_faults import _no_process_left  # noqa: F401

# A young row this far up is the walk's end; the batch's rows are moved MOVE keys up,
# between the other rows and it.
FAR = 1_000_000
MOVE = 500_000
END_SESSION = {"postgresql": "SELECT pg_terminate_backend(:p)", "mysql": "KILL :p"}


@pytest.mark.parametrize(
    "dialect",
    [
        "postgresql",
        pytest.param(
            "mysql",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the documented limit: no witness of a MariaDB transaction's own",
            ),
        ),
    ],
)
def test_rows_moved_to_other_keys_after_a_lost_commit_are_archived_once(home, dialect):
    with site(home, dialect, "file") as s:
        with s.db.begin() as conn:
            conn.execute(
                text("INSERT INTO events (id, created_at, payload) VALUES (:i, :at, 'far')"),
                {"i": FAR, "at": datetime(2999, 1, 1)},
            )
        run_id = killed_with_a_batch_in_doubt(s)
        doubt = in_doubt(s, run_id)
        holders = sessions_in_transaction(s) or in_transaction_soon(s)
        assert holders, "no session holds the batch's transaction"
        with s.db.begin() as conn:
            for session in holders:  # the killed run's own: its COMMIT never lands
                conn.execute(text(END_SESSION[dialect]), {"p": session})
        with s.db.begin() as conn:
            moved = text("UPDATE events SET id = id + :m WHERE id IN :ids")
            ids = bindparam("ids", expanding=True)
            conn.execute(moved.bindparams(ids), {"m": MOVE, "ids": sorted(doubt)})

        resumed = resume(s, run_id)
        assert resumed.wait(HANG) == 0, resumed.output[-3000:]

        payloads = [json.loads(line)["payload"] for line in s.archive_file.read_text().splitlines()]
        twice = sorted(p for p in set(payloads) if payloads.count(p) > 1)
        assert not twice, f"archived twice: {twice}"
        with s.db.connect() as conn:
            left = set(conn.execute(text("SELECT payload FROM events")).scalars())
        assert not left & set(payloads), "archived rows left in the table"
        assert {f"event {i}" for i in doubt} <= set(payloads), "the moved rows not archived"
