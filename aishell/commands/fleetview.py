"""The fleet: every configured target's last run, waiting approvals, newest
restore-proven backup and next job at once; and the read-only web view of it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.state.store import checking_store
from aishell.units import stamp
from aishell.view import serve, status


def fleet_status(config: Config, selector: str | None = None) -> dict[str, Any]:
    """Per configured target (of the selector's, else all), by name: `last_run` (None:
    it never ran), `approvals` (steps waiting, the oldest's age), `backup` (the newest
    restore-proven one's age) and `next_job`."""
    now = datetime.now(UTC)
    # With the home's key when it has one (none is made): a refusal a resend not signed
    # as it is would clear stands, as a delivery reads it.
    with checking_store(config) as store:
        found = status.fleet_status(config, store, now, selector)
    return {"at": stamp(now), "targets": found}


def serve_web(
    config: Config, host: str, port: int, listening: Callable[[str], None] | None = None
) -> None:
    """Serve the read-only web view until SIGINT or SIGTERM (see fleet/serve.py)."""
    serve.serve_http(config, host, port, listening)
