"""APScheduler's events about serve's jobs, as lines of serve's log: a trigger skipped
while its schedule still runs, one missed (also kept, notified, and its mark settled),
one that failed, and one that ended having done its work. APScheduler's own log lines
are its logger's, which serve's command keeps to warnings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)

from aishell.config.models import Config
from aishell.scheduling import alerts
from aishell.scheduling.due import settle
from aishell.scheduling.stuck import alert
from aishell.state.store import StateStore
from aishell.units import stamp

# The events the listener hears.
HEARD = (
    EVENT_JOB_SUBMITTED
    | EVENT_JOB_EXECUTED
    | EVENT_JOB_ERROR
    | EVENT_JOB_MISSED
    | EVENT_JOB_MAX_INSTANCES
)
# The job that takes back a schedule's runs its scheduler left behind: RECOVER_PREFIX + name.
RECOVER_PREFIX = "recover:"
# serve's own job that reads the schedules table.
RECONCILE = "reconcile"

logger = logging.getLogger("aishell.scheduling.serve")


def listener(config: Config, scheduler: Any) -> Callable[[JobEvent], None]:
    """What serve says of each event of its jobs."""

    def on_event(event: JobEvent) -> None:
        if event.job_id in (RECONCILE, alerts.JOB_ID):
            if isinstance(event, JobExecutionEvent) and event.exception is not None:
                what = "reading schedules" if event.job_id == RECONCILE else "checking alerts"
                logger.error("%s failed: %s", what, event.exception)
            return
        # A take-back's job is `recover:NAME`: the log names the schedule, as fire() does.
        recovering = event.job_id.startswith(RECOVER_PREFIX)
        name = event.job_id.removeprefix(RECOVER_PREFIX)
        if event.code == EVENT_JOB_MAX_INSTANCES:
            logger.warning("schedule %s: still running; this trigger is skipped", name)
        elif isinstance(event, JobSubmissionEvent):
            return  # a submitted trigger may yet be missed: fire() says when it starts
        elif event.code == EVENT_JOB_MISSED:
            due = event.scheduled_run_time
            logger.warning("schedule %s: missed its run at %s", name, f"{due:%Y-%m-%d %H:%M %Z}")
            with StateStore(config.state_url) as store:
                alert(config, store, name, "missed", {"due": stamp(due.astimezone(UTC))})
            if not recovering:
                settle(scheduler, name, due)
        elif isinstance(event, JobExecutionEvent) and event.exception is not None:
            logger.error("schedule %s: failed: %s", name, event.exception)
        elif isinstance(event, JobExecutionEvent) and event.retval:
            # Only a trigger that did its work finished; one that did not begin said why.
            ended = "taking back finished" if recovering else "finished"
            logger.info("schedule %s: %s", name, ended)

    return on_event
