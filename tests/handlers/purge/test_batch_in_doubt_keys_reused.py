"""A batch in doubt whose keys are in the table again is not judged by its keys alone.

MariaDB keeps no word on a transaction once its session is gone, so a resume judges an
archive file's batch in doubt by its archived keys: none in the table, it committed;
all there, it did not, and its bytes are cut. But the keys of rows a batch deleted can
come back after its COMMIT (a device seen again, a natural key written anew): then every
key is there, the batch counted as never committed, and its rows' only copy cut from the
archive file. A row the table holds under an archived key is the batch's own row only
if it is still that row, value for value; where it is not, whether the batch committed
is not known, and the resume stops for a person with every byte kept.

The run is SIGKILLed with its second batch committed (the proxy the test owns holds the
message after the COMMIT) and its checkpoint still holding it pending."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from tests.handlers.purge.test_exactly_once import (
    SECOND_BATCH,
    assert_exactly_once,
    held,
    in_doubt,
    resume,
    resumed_in_full,
    sigkill,
    site,
)
from tests.handlers.purge.test_purge_faults import rows_of


def test_keys_written_again_after_a_committed_batch_keep_its_archived_rows(home) -> None:
    with site(home, "mysql", "file") as s:
        # The first message after the second batch's COMMIT is held: that batch committed.
        proc, run_id = held(s, b"", (*SECOND_BATCH, b"COMMIT"), "the message after a COMMIT")
        doubt = in_doubt(s, run_id)
        sigkill(proc)
        s.proxy.release()
        assert doubt and not doubt & set(rows_of(s.url)), "the batch did not commit"
        # Its keys written again, as new rows (young, another payload).
        with s.db.begin() as conn:
            now = max(s.before.values()) + timedelta(days=1)
            conn.execute(
                text("INSERT INTO events (id, created_at, payload) VALUES (:id, :at, 'again')"),
                [{"id": i, "at": now} for i in sorted(doubt)],
            )

        resumed = resume(s, run_id)
        resumed.wait()

        archived = [json.loads(line)["id"] for line in s.archive_file.read_text().splitlines()]
        assert doubt <= set(archived), "the committed batch's rows were cut from the archive"
        run = commands.show_run(load_config(home=home), run_id)
        assert run["status"] != "completed", run["status"]
        error = run["steps"][1]["error"] or ""
        assert "with other values than archived" in error, error
        # A person judges it committed: the rows written again are put aside, the
        # resume counts the batch as done, and every row the purge deleted is archived
        # once.
        with s.db.begin() as conn:
            conn.execute(text("DELETE FROM events WHERE payload = 'again'"))
        resumed_in_full(s, run_id)
        assert_exactly_once(s, run_id)
