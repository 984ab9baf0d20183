"""The scheduler's sync of its jobs with the schedules table may meet a scheduler that
is stopping (its lock lost, a signal): APScheduler then keeps an added job pending,
without a next fire time, and the sync goes on without a traceback."""

from __future__ import annotations

from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from aishell.config.models import Config
from aishell.scheduling.serve import reconcile
from tests.fleet.builders import add_nightly_quick


def test_a_sync_on_a_scheduler_not_running_adds_its_jobs_pending(config: Config) -> None:
    add_nightly_quick(config, "demo")
    scheduler = BackgroundScheduler(jobstores={"default": MemoryJobStore()}, timezone="UTC")

    reconcile(scheduler, config)

    (job,) = scheduler.get_jobs(jobstore="default")
    assert job.id == "nightly"
