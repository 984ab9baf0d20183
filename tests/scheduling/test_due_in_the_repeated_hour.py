"""A trigger's due mark is weighed by instant, not by wall clock: the night the clocks
go back, a later trigger at 02:15 CET comes after an earlier one at 02:45 CEST, though
its wall clock reads less (Python compares two times of one zone as wall clocks)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler

from aishell.config.models import Config
from aishell.scheduling import due as due_marks
from aishell.scheduling.crontab import CrontabTrigger
from aishell.state.store import StateStore

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-10-25: 02:45 CEST is 00:45 UTC; the second 02:15, CET, is 01:15 UTC.
EARLIER = datetime(2026, 10, 25, 2, 45, tzinfo=BERLIN, fold=0)
LATER = datetime(2026, 10, 25, 2, 15, tzinfo=BERLIN, fold=1)


def _job(due: datetime | None = None) -> None:
    """What the scheduler would call: a schedule's job takes its due mark."""


def _marked_job(marked: datetime, next_run: datetime) -> tuple[BackgroundScheduler, str]:
    scheduler = BackgroundScheduler(timezone=UTC)
    trigger = CrontabTrigger("*/15 2 * * *", "Europe/Berlin")
    job = scheduler.add_job(
        _job, trigger, id="nightly", kwargs={"due": marked}, next_run_time=next_run
    )
    return scheduler, job.id


def test_the_times_are_what_the_test_says() -> None:
    assert EARLIER.astimezone(UTC) < LATER.astimezone(UTC)
    assert LATER < EARLIER  # the comparison the marks must not use


def test_an_earlier_trigger_s_run_leaves_a_later_trigger_s_mark() -> None:
    scheduler, name = _marked_job(LATER, LATER)
    due_marks.settle(scheduler, name, EARLIER)
    assert scheduler.get_job(name).kwargs["due"] == LATER


def test_a_trigger_s_own_run_clears_its_mark() -> None:
    scheduler, name = _marked_job(LATER, LATER)
    due_marks.settle(scheduler, name, LATER)
    assert "due" not in scheduler.get_job(name).kwargs


def test_a_trigger_left_unbegun_is_due_again_at_its_own_time(config: Config) -> None:
    """Marked at 02:45 CEST, the job moved on to 02:00 CET: due again at 02:45 CEST,
    the earlier instant, not at the smaller wall clock."""
    moved_on = datetime(2026, 10, 25, 2, 0, tzinfo=BERLIN, fold=1)
    scheduler, name = _marked_job(EARLIER, moved_on)
    with StateStore(config.state_url) as store:
        due_marks.take_up(scheduler, store)
    job = scheduler.get_job(name)
    assert job.next_run_time.astimezone(UTC) == EARLIER.astimezone(UTC)
    assert "due" not in job.kwargs
