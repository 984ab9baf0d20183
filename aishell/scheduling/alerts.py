"""Monitoring: the `monitoring:` rules evaluated over the state store, each occurrence
sent once through the configured notifiers when it fires and once when it resolves.

`evaluate` is what `aishell schedule serve` runs every `monitoring.interval_seconds` and
what `aishell alerts check` runs once. An occurrence is a row of the store's `alerts`
table keyed by (rule, subject, occurrence) (rules.py says what each is); the process
that claims a message in that row sends it, so a serve and a cron check never both do.
A message that no notifier took is claimed and sent again at the next evaluation; a
notifier that failed while another took it is logged, and not sent it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aishell.config.models import Config
from aishell.config.monitoring import AlertRule
from aishell.scheduling import notify
from aishell.scheduling.rules import FINDERS, Facts, Finding, lookback_start
from aishell.state.alerts import Sending
from aishell.state.store import StateStore, checking_store

# The interval job's id in serve: parentheses, which no schedule name may hold.
JOB_ID = "(alerts)"

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What one evaluation found and did."""

    firing: list[dict[str, Any]] = field(default_factory=list)  # every alert firing now
    sent: list[dict[str, Any]] = field(default_factory=list)  # messages delivered now
    failures: list[str] = field(default_factory=list)  # notifiers that failed, one line each

    def to_dict(self) -> dict[str, Any]:
        return {"firing": self.firing, "sent": self.sent, "failures": self.failures}


def rule_key(rule: AlertRule) -> str:
    """How the store names a rule: its condition, spaced one way (two rules on one
    measure with different limits are two alerts)."""
    return " ".join(rule.condition.split())


def evaluate(config: Config, store: StateStore, now: datetime | None = None) -> Evaluation:
    """Find what fires, store new occurrences, resolve the ended ones, and send what
    is unsent."""
    moment = now or datetime.now(UTC)
    unsettled = store.unsettled_alerts()
    followed = [a["details"]["run_id"] for a in unsettled if a["details"].get("run_id")]
    facts = Facts(
        config,
        store,
        moment,
        store.monitored_runs(lookback_start(config, moment), followed),
    )
    found: dict[tuple[str, str, str], tuple[AlertRule, Finding]] = {}
    for rule in config.main.monitoring.alerts:
        for finding in FINDERS[rule.rule](rule, facts):
            found[(rule_key(rule), finding.subject, finding.occurrence)] = (rule, finding)
    for (key, subject, occurrence), (rule, finding) in found.items():
        store.raise_alert(key, subject, occurrence, rule.action, _details(rule, finding))
    for alert in unsettled:
        ended = (alert["rule"], alert["subject"], alert["occurrence"]) not in found
        if (
            ended
            and alert["resolved_at"] is None
            and store.resolve_alert(alert["id"], settled=alert["sent_at"] is None)
        ):
            logger.info("alert %s resolved", _name(alert), extra=_ids(alert))
    evaluation = Evaluation()
    _send_unsent(config, store, evaluation)
    evaluation.firing = [_message(a, "firing") for a in store.list_alerts(firing_only=True)]
    return evaluation


def _details(rule: AlertRule, finding: Finding) -> dict[str, Any]:
    # What the messages say, kept with the row: the resolved message says the same
    # even after the config changed. No URL, no params, no output.
    return {
        "rule": rule.rule,
        "condition": rule_key(rule),
        "summary": finding.summary,
        **finding.details,
    }


def _send_unsent(config: Config, store: StateStore, evaluation: Evaluation) -> None:
    """Each firing or resolved message not yet delivered, claimed first."""
    for alert in store.unsettled_alerts():
        sending: Sending
        if alert["resolved_at"] is None and alert["sent_at"] is None:
            sending, status = "sent_at", "firing"
        elif alert["resolved_at"] is not None and alert["resolved_sent_at"] is None:
            sending, status = "resolved_sent_at", "resolved"
        else:
            continue
        if not store.claim_alert(alert["id"], sending):
            continue  # another process sends it
        message = _message(alert, status)
        if status == "firing":
            logger.warning("alert %s: %s", _name(alert), message["summary"], extra=_ids(alert))
        failures = notify.deliver(config.main.notifications, message)
        evaluation.failures.extend(failures)
        if failures and len(failures) == _notifiers(config):
            # No notifier took it: sent again next time. One that did is never sent it
            # twice; the one that failed is logged, as for a run's notifications.
            store.release_alert(alert["id"], sending)
        else:
            evaluation.sent.append(message)


def _notifiers(config: Config) -> int:
    notifications = config.main.notifications
    return (notifications.command is not None) + (notifications.webhook is not None)


def _message(alert: dict[str, Any], status: str) -> dict[str, Any]:
    """What a notifier gets: the alert's details, its status and times."""
    return {
        **alert["details"],
        "kind": "alert",
        "status": status,
        "action": alert["action"],
        "subject": alert["subject"],
        "occurrence": alert["occurrence"],
        "fired_at": alert["fired_at"],
        "resolved_at": alert["resolved_at"],
    }


def _name(alert: dict[str, Any]) -> str:
    return f"{alert['details']['rule']} on {alert['subject']}"


def _ids(alert: dict[str, Any]) -> dict[str, Any]:
    """The run and step an alert is about, for the log line's fields."""
    details = alert["details"]
    return {key: details[key] for key in ("run_id", "step") if details.get(key) is not None}


def evaluate_now(config: Config) -> None:
    """serve's interval job: one evaluation on a store of its own (APScheduler runs it
    on a worker thread; the store's connection belongs to one thread)."""
    # With the home's key (none is made): a row not signed as it is vouches for no
    # backup's age.
    with checking_store(config) as store:
        evaluate(config, store)
