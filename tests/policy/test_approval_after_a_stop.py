"""A purge stopped at max_share waits for a person's yes to what is left; that yes is
bound to the facts the person saw, as any approval is: the table (a table swapped in
under the name since is not the table approved), its statements, and the rows older
than the cutoff that were left, counted when it stopped. A resume after the yes asks
again when any of them moved: another table under the name, or more rows left than
were approved (rows that grew old while the run waited)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from aishell import commands
from aishell.policy.approvers import NonInteractive, Prompting
from tests.handlers.purge.test_purge_share_property import (
    PURGE,
    _job,
    _share_config,
    build,
    ids_in,
)
from tests.helpers import run_sql

# 1,000 rows, keys 1-900 old and 901-1000 young; the statistics saw only the young rows
# (the old came after an ANALYZE, the counter of changes reset), so the estimate says
# the purge deletes few of them: it starts unasked and stops at half the table, keys
# 501-900 left old.
DATA = {
    "keys": list(range(1, 1001)),
    "ages": [60] * 900 + [2] * 100,
    "text_key": False,
    "max_share": 0.5,
}


def _fooled_statistics(url: str, name: str, data: dict[str, Any]) -> None:
    build(url, name, data, rows="kept")
    run_sql(url, f"ALTER TABLE {name} SET (autovacuum_enabled = false)", f"ANALYZE {name}")
    build(url, name, data, rows="old")
    run_sql(url, f"SELECT pg_stat_reset_single_table_counters('{name}'::regclass)")


def _stopped_at_the_limit(home: Path, url: str, name: str) -> tuple[Any, Any]:
    _fooled_statistics(url, name, DATA)
    config = _share_config(home, url, DATA["max_share"])
    run = commands.run_job(config, "log_cleanup", _job(name), approver=NonInteractive())
    purge = run.steps[PURGE]
    assert purge.status == "waiting_approval", (purge.status, purge.error)
    assert "stopped at max_share (50%)" in str(purge.error)
    assert len(ids_in(url, name)) == 500
    return config, run


def _old_rows(url: str, name: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                f"SELECT count(*) FROM {name} "
                "WHERE created_at < localtimestamp - interval '30 days'"
            )
        ).scalar_one()
    engine.dispose()
    return int(found)


def _changes_since_analyze(url: str, name: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT pg_stat_get_mod_since_analyze(CAST(:t AS regclass))"), {"t": name}
        ).scalar_one()
    engine.dispose()
    return int(found)


def test_a_table_swapped_in_after_the_yes_to_a_stopped_purge_is_asked_about(
    home: Path, pg_url: str
) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "swapped")
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="the rest")
    # Another table under the name: the yes was not given for it.
    run_sql(
        pg_url,
        "ALTER TABLE swapped RENAME TO swapped_orig",
        "CREATE TABLE swapped (LIKE swapped_orig INCLUDING ALL)",
        # Fewer old rows than were left, where the purge goes on from (past key 500).
        "INSERT INTO swapped SELECT g, CASE WHEN g BETWEEN 601 AND 900 THEN localtimestamp "
        "- interval '60 days' ELSE localtimestamp END, 'row' FROM generate_series(1, 1000) g",
    )
    resumed = commands.resume_run(config, run.run_id, approver=NonInteractive())
    purge = resumed.steps[PURGE]
    assert purge.status == "waiting_approval", (purge.status, purge.error, purge.output)
    assert "table swapped is not the table it was approved for" in str(purge.error)
    assert len(ids_in(pg_url, "swapped")) == 1000  # nothing deleted from it
    assert len(ids_in(pg_url, "swapped_orig")) == 500


def test_rows_grown_old_after_the_yes_to_a_stopped_purge_are_asked_about(
    home: Path, pg_url: str
) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "grown")
    waiting = commands.show_run(config, run.run_id)["steps"][PURGE]
    # The question says what is left: 400 old rows, counted when it stopped.
    assert "400 rows older than the cutoff are left" in str(waiting["error"]), waiting
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="the rest")
    # 90 of the young rows grow old while the run waits: 490 old rows left, not 400.
    run_sql(
        pg_url,
        "UPDATE grown SET created_at = localtimestamp - interval '60 days' WHERE id <= 990",
    )
    resumed = commands.resume_run(config, run.run_id, approver=NonInteractive())
    purge = resumed.steps[PURGE]
    assert purge.status == "waiting_approval", (purge.status, purge.error, purge.output)
    assert _old_rows(pg_url, "grown") == 490  # nothing more deleted
    # The question asked again counted what is left now, and says so.
    assert "490 rows older than the cutoff are left" in str(purge.error), purge.error
    # A yes to it is given for those 490 rows, counted (not the estimate beside them):
    # the purge finishes.
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="these too")
    done = commands.resume_run(config, run.run_id, approver=NonInteractive())
    assert done.status == "completed", done.error
    assert _old_rows(pg_url, "grown") == 0
    assert len(ids_in(pg_url, "grown")) == 10


def test_a_stopped_purge_approved_goes_on_when_nothing_moved(home: Path, pg_url: str) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "same")
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="the rest")
    done = commands.resume_run(config, run.run_id, approver=NonInteractive())
    assert done.status == "completed", done.error
    assert len(ids_in(pg_url, "same")) == 100


def test_the_purge_itself_holds_to_the_rows_left_a_yes_was_given_for(
    home: Path, pg_url: str
) -> None:
    """The estimate a resume is judged with may not see rows grown old (statistics that
    look current): the purge deletes no more than the rows left the yes was given for,
    with an approval's slack, and stops again, asking, for the rest."""
    config, run = _stopped_at_the_limit(home, pg_url, "held")
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="the rest")
    before = _changes_since_analyze(pg_url, "held")
    run_sql(
        pg_url, "UPDATE held SET created_at = localtimestamp - interval '60 days' WHERE id <= 990"
    )
    # The statistics saw no old row, and look current again once the update is counted.
    deadline = time.monotonic() + 60
    while _changes_since_analyze(pg_url, "held") == before:
        assert time.monotonic() < deadline, "the update was never counted"
        time.sleep(0.05)
    run_sql(pg_url, "SELECT pg_stat_reset_single_table_counters('held'::regclass)")
    resumed = commands.resume_run(config, run.run_id, approver=NonInteractive())
    purge = resumed.steps[PURGE]
    assert purge.status == "waiting_approval", (purge.status, purge.error, purge.output)
    # 400 approved, and 5% and 10 rows more: 430 of the 490.
    assert _old_rows(pg_url, "held") == 60, purge.error
    assert "stopped after the 400 rows older than the cutoff a person approved" in str(purge.error)
    assert "60 rows older than the cutoff are left" in str(purge.error)
    commands.decide_steps(config, run.run_id, "approved", step=PURGE, reason="these too")
    done = commands.resume_run(config, run.run_id, approver=NonInteractive())
    assert done.status == "completed", done.error
    assert _old_rows(pg_url, "held") == 0


def resumed_with_yes(config: Any, run_id: str) -> tuple[Any, list[tuple[str, ...]]]:
    """The run resumed with a person saying yes to every question, and the reasons only
    a person may pass of each question about the purge."""
    asked: list[tuple[str, ...]] = []

    def answer(request: Any) -> str:
        if request.tool == "delete_old_records":
            asked.append(request.personal)
        return "yes"

    return commands.resume_run(config, run_id, approver=Prompting(ask=answer)), asked


def test_the_prompt_after_a_stop_shows_what_is_left_and_a_yes_there_finishes(
    home: Path, pg_url: str
) -> None:
    config, run = _stopped_at_the_limit(home, pg_url, "prompted")
    done, asked = resumed_with_yes(config, run.run_id)
    assert done.status == "completed", done.error
    assert len(asked) == 1, asked
    assert any("400 rows older than the cutoff are left" in r for r in asked[0]), asked
    assert _old_rows(pg_url, "prompted") == 0
    assert len(ids_in(pg_url, "prompted")) == 100
