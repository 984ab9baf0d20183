"""A batch in doubt beside an earlier purge's rows in the same archive table.

Archiving into one table day after day is the documented use, so a batch's key range
in the archive table may already hold rows earlier purges archived there (keys
interleaved with the rows kept). A run is killed with its batch's COMMIT held and never
let through (the server rolls the batch back): on MariaDB, which cannot say whether a
transaction committed, the resume counted the archive table's rows in the batch's range,
found at least as many as the batch deleted (the earlier purges' rows), judged it
committed and went on: its old rows stayed in the table, counted as deleted, and the
run said none older was left. A purge that finds earlier rows where it will archive now
counts, inside each batch's transaction, the rows its copy makes there: a resume finds
that many if, and only if, the batch committed.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from tests.handlers.purge.test_exactly_once import (
    SECOND_BATCH,
    held,
    output_of,
    resumed_in_full,
    sigkill,
    site,
)
from tests.handlers.purge.test_purge_faults import (
    _no_process_left,  # noqa: F401
    rows_of,
)

# Rows an earlier purge archived under every key of the table: each batch's range in
# the archive table holds more of them than the batch deletes.
EARLIER = (
    "INSERT INTO events_archive (id, created_at, payload) "
    "SELECT id, created_at, 'archived by an earlier purge' FROM events"
)


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_a_rolled_back_batch_is_done_again_beside_earlier_archived_rows(home, dialect):
    with site(home, dialect, "table") as s:
        with s.db.begin() as conn:
            conn.execute(text(EARLIER))
        proc, run_id = held(s, b"COMMIT", SECOND_BATCH, "a batch's COMMIT held")
        sigkill(proc)
        # The COMMIT never lands: the resume ends the killed run's session, whose batch
        # the server rolls back.
        resumed_in_full(s, run_id)
        s.proxy.release()  # now, to a session that is gone
        run = commands.show_run(load_config(home=home), run_id)
        assert run["status"] == "completed", (run["status"], output_of(home)[-3000:])
        cutoff = datetime.fromisoformat(run["steps"][0]["output"]["cutoff"])
        old = {i for i, at in s.before.items() if at < cutoff}
        left = rows_of(s.url)
        assert not old & set(left), f"old rows left: {sorted(old & set(left))[:10]}"
        assert set(s.before) - set(left) == old
        with s.db.connect() as conn:
            ours = conn.execute(
                text(
                    "SELECT id FROM events_archive WHERE payload <> 'archived by an earlier purge'"
                )
            ).scalars()
            assert sorted(ours) == sorted(old), "each deleted row archived once"
        assert run["steps"][1]["output"]["rows_deleted"] == len(old)
