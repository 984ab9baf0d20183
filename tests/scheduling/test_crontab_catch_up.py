"""A schedule's fire times come field by field, and a long-missed minutely schedule
catches up in a few steps: serve starting after a month down does not walk each missed
minute. Counted in calls, never timed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aishell.scheduling import crontab
from aishell.scheduling.crontab import Crontab, CrontabTrigger, parse
from aishell.scheduling.due import first_run

NOW = datetime(2026, 4, 15, 10, 17, 42, tzinfo=UTC)
# Down since before Europe/Berlin's clocks went forward (2026-03-29).
MONTH_AGO = NOW - timedelta(days=30)


@pytest.fixture
def counted(monkeypatch):
    """How often a fire time is computed, and how many wall times are weighed."""
    calls = {"next_fire": 0, "resolve": 0}
    next_fire, resolve = Crontab.next_fire, crontab._resolve

    def counting_next_fire(self, start, zone):
        calls["next_fire"] += 1
        return next_fire(self, start, zone)

    def counting_resolve(*args):
        calls["resolve"] += 1
        return resolve(*args)

    monkeypatch.setattr(Crontab, "next_fire", counting_next_fire)
    monkeypatch.setattr(crontab, "_resolve", counting_resolve)
    return calls


def _run_times(cron: str, zone: str, since: datetime) -> list[datetime]:
    """The fire times APScheduler finds due at NOW for a job last due at `since`, as its
    scheduler loop asks for them (serve's jobs coalesce them into the newest)."""
    scheduler = BackgroundScheduler(timezone=UTC)
    job = scheduler.add_job(print, CrontabTrigger(cron, zone), next_run_time=since, coalesce=True)
    return [when.astimezone(UTC) for when in job._get_run_times(NOW)]


@pytest.mark.parametrize(
    ("cron", "zone", "newest"),
    [
        ("* * * * *", "Europe/Berlin", datetime(2026, 4, 15, 10, 17, tzinfo=UTC)),
        ("*/5 * * * *", "America/New_York", datetime(2026, 4, 15, 10, 15, tzinfo=UTC)),
        ("* 9-17 * * 1-5", "Europe/Berlin", datetime(2026, 4, 15, 10, 17, tzinfo=UTC)),
        ("0 * * * *", "UTC", datetime(2026, 4, 15, 10, 0, tzinfo=UTC)),
    ],
)
def test_a_schedule_down_a_month_comes_due_once_in_a_few_steps(counted, cron, zone, newest):
    run_times = _run_times(cron, zone, MONTH_AGO)
    assert run_times[-1] == newest  # the one run a coalescing job makes
    assert len(run_times) <= 2
    # Halving a month down to the microsecond: some 40 steps, not one per missed minute.
    assert counted["next_fire"] <= 60


def test_a_next_fire_time_weighs_no_wall_time_one_by_one(counted):
    trigger = CrontabTrigger("* * * * *", "Europe/Berlin")
    fire = trigger.get_next_fire_time(None, NOW)
    assert fire == datetime(2026, 4, 15, 10, 18, tzinfo=UTC)
    # Away from a clock change it is field arithmetic; the old scan weighed 360 times.
    assert counted["resolve"] <= 2


def test_serve_adding_a_minutely_schedule_added_a_month_ago_runs_it_once(counted):
    """As serve adds the job of a schedule added while nothing served, and as its
    scheduler then finds the job's fire times due."""
    now = datetime.now(UTC)
    schedule = {"paused": False, "created_at": now - timedelta(days=30)}
    wanted = CrontabTrigger("* * * * *", "Europe/Berlin")
    scheduler = BackgroundScheduler(timezone=UTC)
    job = scheduler.add_job(print, wanted, coalesce=True, **first_run(schedule, wanted, 3600))
    assert now - timedelta(hours=1) <= job.next_run_time <= now  # within the grace
    run_times = job._get_run_times(now)
    assert run_times[-1] == now.replace(second=0, microsecond=0)
    assert len(run_times) <= 2
    assert counted["next_fire"] <= 80


ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tehran", "UTC")
CRONS = ("* * * * *", "*/20 * * * *", "30 2 * * *", "0 * * * *", "15 1-3 * * 0", "0 0 29 2 *")


@settings(max_examples=300, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    zone=st.sampled_from(ZONES),
    # Near the clock changes of 2026 and 2027 as often as not.
    start=st.one_of(
        st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31)),
        st.sampled_from(
            [datetime(2026, 3, 29, 1), datetime(2026, 10, 25, 1), datetime(2026, 3, 8, 6)]
        ).flatmap(lambda at: st.datetimes(at - timedelta(hours=5), at + timedelta(hours=5))),
    ),
)
def test_field_arithmetic_fires_when_weighing_each_wall_time_does(cron, zone, start):
    """The quick way agrees with the exhaustive scan, clock changes included."""
    parsed, where = parse(cron), ZoneInfo(zone)
    start = start.replace(tzinfo=UTC)
    quick, scanned = parsed.next_fire(start, where), parsed._next_near_change(start, where)
    assert (quick is None) == (scanned is None)
    if quick is not None and scanned is not None:
        assert quick.astimezone(UTC) == scanned.astimezone(UTC)
        assert quick.utcoffset() == scanned.utcoffset()


@settings(max_examples=60, deadline=None)
@given(
    cron=st.sampled_from(("*/20 * * * *", "0 * * * *", "30 2 * * *", "* 2 * * *")),
    zone=st.sampled_from(ZONES),
    down=st.integers(min_value=1, max_value=3 * 24 * 60),
)
# Down since 02:59 CEST; the walk ends at 02:59 CET, an hour later at the same wall time.
@example(cron="* 2 * * *", zone="Europe/Berlin", down=188)
def test_catching_up_finds_the_newest_missed_fire_as_walking_each_does(cron, zone, down):
    trigger = CrontabTrigger(cron, zone)
    now = datetime(2026, 10, 25, 4, 7, tzinfo=UTC)
    since = trigger.get_next_fire_time(None, now - timedelta(minutes=down))
    assert since is not None
    walked, after = since, trigger.get_next_fire_time(since, since)
    while after is not None and after.astimezone(UTC) <= now:
        walked, after = after, trigger.get_next_fire_time(after, after)
    caught_up = trigger.get_next_fire_time(since, now)
    assert caught_up is not None
    # In UTC: two times of one zone compare as wall clocks, fold ignored.
    if walked.astimezone(UTC) == since.astimezone(UTC):  # nothing more was missed
        assert caught_up.astimezone(UTC) > now
    else:
        assert caught_up.astimezone(UTC) == walked.astimezone(UTC)
        assert caught_up.utcoffset() == walked.utcoffset()
