"""Schedules (`aishell schedule add`), the runs their triggers started, and their
alerts (missed triggers, stuck runs, triggers refused: their schedule changed in the
store since it was added)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from aishell.errors import StateTampered, UsageError
from aishell.state.beats import with_beats
from aishell.state.core import StoreCore
from aishell.state.processes import current_user, recorder_alive
from aishell.state.runlist import shown_status
from aishell.state.schema import events, runs, schedule_runs, schedules
from aishell.state.values import dumps, loads, now


class ScheduleRepository(StoreCore):
    """Schedules and what they started."""

    def add_schedule(self, **values: Any) -> None:
        """A new schedule, signed with the home's key in a store opened with it (a row
        stored without a signature is one serve runs none of)."""
        row = {
            **values,
            "words": dumps(values["words"]),
            "job": dumps(values["job"]),
            "options": dumps(values["options"]),
            "paused": False,
            "created_at": now(),
            "created_by": current_user(),
        }
        sealed = self._sealed("schedule", values["name"], row)
        try:
            with self._tx() as conn:
                conn.execute(insert(schedules).values(seal=sealed, **row))
        except IntegrityError:
            raise UsageError(
                f"A schedule named '{values['name']}' exists; remove it first"
            ) from None

    def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule, each with `seal_error`: in a store opened with the home's key,
        why its row is not what that key signed (None: it is, or there is no key)."""
        self.flush()
        rows = self._conn.execute(select(schedules).order_by(schedules.c.name)).all()
        self._conn.rollback()
        found = []
        for row in rows:
            try:
                self._checked(dict(row._mapping))
                error = None
            except StateTampered as exc:
                error = str(exc)
            found.append({**_schedule_dict(row), "seal_error": error})
        return found

    def get_schedule(self, name: str) -> dict[str, Any]:
        """The schedule; in a store opened with the home's key, refused (StateTampered)
        unless its row is what that key signed."""
        row = self._conn.execute(select(schedules).where(schedules.c.name == name)).first()
        self._conn.rollback()
        if row is None:
            raise UsageError(f"No schedule named '{name}'; see `aishell schedule list`")
        self._checked(dict(row._mapping))
        return _schedule_dict(row)

    def _checked(self, stored: dict[str, Any]) -> None:
        name = stored["name"]
        again = f"remove it and add it again (`aishell schedule remove {name}`)"
        self._verify("schedule", name, stored, f"schedule {name}", again=again)

    def remove_schedule(self, name: str) -> None:
        """Remove the schedule, whatever its row holds (how one changed outside aishell
        is done with)."""
        with self._tx() as conn:
            gone = conn.execute(delete(schedules).where(schedules.c.name == name)).rowcount
        if not gone:
            raise UsageError(f"No schedule named '{name}'; see `aishell schedule list`")

    def set_schedule_paused(self, name: str, paused: bool) -> None:
        """Pause or resume a schedule: its row checked first, and signed anew with the
        fields checked (a field changed meanwhile stays refused)."""
        row = self._conn.execute(select(schedules).where(schedules.c.name == name)).first()
        self._conn.rollback()
        if row is None:
            raise UsageError(f"No schedule named '{name}'; see `aishell schedule list`")
        stored = dict(row._mapping)
        self._checked(stored)
        stored["paused"] = paused
        sealed = self._sealed("schedule", name, stored)
        with self._tx() as conn:
            conn.execute(
                update(schedules).where(schedules.c.name == name).values(paused=paused, seal=sealed)
            )

    def record_schedule_run(self, run_id: str, schedule: str, how: str) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(schedule_runs).values(run_id=run_id, schedule=schedule, how=how, at=now())
            )

    def schedule_runs(self, schedule: str, limit: int = 20) -> list[dict[str, Any]]:
        """The schedule's runs, newest first, each with its current status."""
        self.flush()
        found = (
            select(
                schedule_runs.c.run_id,
                schedule_runs.c.how,
                runs.c.status,
                runs.c.created_at.label("started_at"),
                runs.c.finished_at,
                runs.c.pid,
                runs.c.hostname,
                runs.c.pid_started,
            )
            .join(runs, runs.c.run_id == schedule_runs.c.run_id)
            .where(schedule_runs.c.schedule == schedule)
            .order_by(schedule_runs.c.at.desc())
            .limit(limit)
        )
        rows = self._conn.execute(with_beats(found)).all()
        self._conn.rollback()
        # As every list shows a run: one whose process is gone is not running.
        return [
            {
                "run_id": r.run_id,
                "how": r.how,
                "status": shown_status(r.status, r.pid, r.hostname, r.pid_started, r.beat_age),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
            }
            for r in rows
        ]

    def orphaned_runs(self, target: str | None = None) -> list[dict[str, Any]]:
        """Runs a schedule started (on `target`, or any) that are stored running while
        the process that ran them is gone (its pid dead, or reused by a later process),
        oldest first, each with its schedule and when it began."""
        self.flush()
        query = (
            select(
                runs.c.run_id,
                runs.c.target,
                runs.c.pid,
                runs.c.hostname,
                runs.c.pid_started,
                runs.c.dry_run,
                runs.c.created_at,
                schedule_runs.c.schedule,
            )
            .join(schedule_runs, runs.c.run_id == schedule_runs.c.run_id)
            .where(runs.c.status == "running")
            .order_by(runs.c.created_at)
        )
        if target is not None:
            query = query.where(runs.c.target == target)
        rows = self._conn.execute(query).all()
        self._conn.rollback()
        return [
            dict(r._mapping)
            for r in rows
            if r.pid is None or not recorder_alive(r.pid, r.hostname, r.pid_started)
        ]

    def mark_interrupted(self, run: dict[str, Any], reason: str) -> bool:
        """A run whose process is gone, stored running, is interrupted from now on; False
        if another process changed it first (it resumed or marked the run itself)."""
        with self._tx() as conn:
            changed = conn.execute(
                update(runs)
                .where(
                    (runs.c.run_id == run["run_id"])
                    & (runs.c.status == "running")
                    & (runs.c.pid == run["pid"])
                )
                .values(status="interrupted", finished_at=now(), error=reason)
            ).rowcount
            if changed:
                self._event(conn, run["run_id"], None, "run_interrupted", {"reason": reason})
        return bool(changed)

    def schedule_alert(self, schedule: str, kind: str, data: dict[str, Any]) -> None:
        """A schedule's missed trigger, stuck run or refused trigger, kept for `aishell
        schedule list`."""
        self.record_event("-", None, f"schedule_{kind}", {"schedule": schedule, **data})

    def schedule_alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Alerts per schedule, newest first."""
        self.flush()
        rows = self._conn.execute(
            select(events.c.at, events.c.kind, events.c.data)
            .where(
                (events.c.run_id == "-")
                & events.c.kind.in_(["schedule_missed", "schedule_stuck", "schedule_refused"])
            )
            .order_by(events.c.id.desc())
            .limit(1000)
        ).all()
        self._conn.rollback()
        found: dict[str, list[dict[str, Any]]] = {}
        for at, kind, data in rows:
            details = loads(data)
            found.setdefault(details.pop("schedule"), []).append(
                {"at": at, "kind": kind.removeprefix("schedule_"), **details}
            )
        return found


def _schedule_dict(row: Any) -> dict[str, Any]:
    """A schedule as its callers take it: its JSON fields read, no seal. A field changed
    outside aishell into what is not of its kind (listed, never run: its seal says so)
    is shown empty, its words as stored."""
    found = {k: v for k, v in row._mapping.items() if k != "seal"}
    for key, kind in (("words", list), ("job", dict), ("options", dict)):
        try:
            found[key] = loads(found[key])
        except ValueError:
            found[key] = None
        if not isinstance(found[key], kind):
            found[key] = [str(row._mapping[key])] if key == "words" else {}
    found["paused"] = bool(found["paused"])
    return found
