"""Monitoring alerts: the `monitoring:` rules evaluated once, for cron users (`schedule
serve` evaluates them on its own interval)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aishell.config.models import Config
from aishell.errors import ConfigError
from aishell.scheduling import alerts
from aishell.state.store import checking_store


def check_alerts(config: Config, now: datetime | None = None) -> dict[str, Any]:
    """Evaluate the alert rules once: new occurrences and resolutions sent through the
    notifiers; returns every alert firing now, what was sent and what failed."""
    monitoring = config.main.monitoring
    if not monitoring.enabled or not monitoring.alerts:
        raise ConfigError(
            f"{config.path}: monitoring has no rules to check; set monitoring.enabled: true "
            "and its alerts (see the README's Monitoring)"
        )
    # With the home's key: a row not signed as it is vouches for no backup's age.
    with checking_store(config) as store:
        return alerts.evaluate(config, store, now).to_dict()
