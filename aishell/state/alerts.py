"""Monitoring alerts: each occurrence once, claimed by the process that sends it, and what
the rules read of runs and their steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from aishell.state.core import StoreCore
from aishell.state.schema import alerts, runs, steps
from aishell.state.values import dumps, loads, new_id, now

# What a claim marks: the firing message sent, or the resolved one.
Sending = Literal["sent_at", "resolved_sent_at"]


class AlertRepository(StoreCore):
    """Rows of the alerts table, and the runs the rules look at."""

    def raise_alert(
        self, rule: str, subject: str, occurrence: str, action: str, details: dict[str, Any]
    ) -> int | None:
        """A new occurrence stored (its id), or None when it was stored before, by this
        process or another: an occurrence fires once."""
        try:
            with self._tx() as conn:
                result = conn.execute(
                    insert(alerts).values(
                        rule=rule,
                        subject=subject,
                        occurrence=occurrence,
                        action=action,
                        details=dumps(details),
                        fired_at=now(),
                    )
                )
                return new_id(result)
        except IntegrityError:
            return None

    def unsettled_alerts(self) -> list[dict[str, Any]]:
        """Alerts still firing, or resolved and not yet told so, oldest first."""
        self.flush()
        rows = self._conn.execute(
            select(alerts)
            .where(alerts.c.resolved_at.is_(None) | alerts.c.resolved_sent_at.is_(None))
            .order_by(alerts.c.id)
        ).all()
        self._conn.rollback()
        return [_alert_dict(r) for r in rows]

    def list_alerts(self, firing_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts newest first; with firing_only, those whose condition holds still."""
        self.flush()
        query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if firing_only:
            query = query.where(alerts.c.resolved_at.is_(None))
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return [_alert_dict(r) for r in rows]

    def claim_alert(self, alert_id: int, sending: Sending) -> bool:
        """Take the sending of one message of an alert; False when another process took
        it first (or it was sent): two checkers never both send it."""
        with self._tx() as conn:
            changed = conn.execute(
                update(alerts)
                .where((alerts.c.id == alert_id) & alerts.c[sending].is_(None))
                .values({sending: now()})
            ).rowcount
        return bool(changed)

    def release_alert(self, alert_id: int, sending: Sending) -> None:
        """A message that could not be delivered is sent again at the next evaluation."""
        with self._tx() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values({sending: None}))

    def resolve_alert(self, alert_id: int, settled: bool = False) -> bool:
        """The alert's condition has ended; `settled`: nothing is to be said of it (its
        firing was never delivered). False when another process resolved it first."""
        at = now()
        values = {"resolved_at": at, **({"resolved_sent_at": at} if settled else {})}
        with self._tx() as conn:
            changed = conn.execute(
                update(alerts)
                .where((alerts.c.id == alert_id) & alerts.c.resolved_at.is_(None))
                .values(values)
            ).rowcount
        return bool(changed)

    def monitored_runs(self, since: str, also: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Runs started at or after `since`, and the runs named in `also`, each with its
        steps' statuses and times (never their params or output)."""
        self.flush()
        named = sorted(set(also))
        found = self._conn.execute(
            select(
                runs.c.run_id,
                runs.c.agent,
                runs.c.target,
                runs.c.status,
                runs.c.created_at,
                runs.c.finished_at,
                runs.c.error,
            )
            .where(or_(runs.c.created_at >= since, runs.c.run_id.in_(named)))
            .order_by(runs.c.created_at)
        ).all()
        by_run = {r.run_id: {**r._mapping, "steps": []} for r in found}
        if by_run:
            for s in self._conn.execute(
                select(
                    steps.c.run_id,
                    steps.c.idx,
                    steps.c.step_id,
                    steps.c.tool,
                    steps.c.status,
                    steps.c.started_at,
                    steps.c.finished_at,
                )
                .where(steps.c.run_id.in_(list(by_run)))
                .order_by(steps.c.run_id, steps.c.idx)
            ):
                by_run[s.run_id]["steps"].append(dict(s._mapping))
        self._conn.rollback()
        return list(by_run.values())


def _alert_dict(row: Any) -> dict[str, Any]:
    found = dict(row._mapping)
    found["details"] = loads(found["details"])
    return found
