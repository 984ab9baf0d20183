"""Fleet jobs and the run each of their targets has."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from aishell.errors import StateTampered
from aishell.state.beats import with_beats
from aishell.state.core import EVENT, StoreCore
from aishell.state.fleetchain import CHAINED, append, broken_chains, is_chained, start_chains
from aishell.state.processes import current_user, this_host
from aishell.state.runlist import shown_status
from aishell.state.schema import events, fleet_jobs, fleet_runs, runs
from aishell.state.seals import check
from aishell.state.signing import SigningKey
from aishell.state.values import dumps, loads, new_run_id, now

# The event a target's task leaves when it ended before its run began; and the event
# of its task sent again, after which that reason is no longer where it stands.
NOT_STARTED = "fleet_target_not_started"
RESENT = "fleet_targets_resent"
# The event of a target's run begun (or taken as its own), which its chain names.
BEGAN = "fleet_target_began"
# The event a run's resume leaves as it reopens the run (StateStore.reopen_run): past it,
# what becomes of a delivery is the run's to record.
RESUMED = "run_resumed"


class TriggerTaken(Exception):
    """A schedule's trigger has its fleet job already (`fleet_id`): no second is made."""

    def __init__(self, fleet_id: str) -> None:
        super().__init__(fleet_id)
        self.fleet_id = fleet_id


class FleetRepository(StoreCore):
    """Rows of fleet_jobs and fleet_runs."""

    def create_fleet_job(
        self,
        agent: str,
        job: dict[str, Any],
        options: dict[str, Any],
        selector: str,
        targets: list[str],
        *,
        trigger: tuple[str, str | None] | None = None,
        adopted: dict[str, str] | None = None,
    ) -> str:
        """A new fleet job. `trigger`: the schedule whose trigger sends it and when that
        was due (UTC), kept with it in the same transaction: a second job for the same
        trigger is refused by the store's unique index (TriggerTaken, naming the first).
        `adopted`: by target, a run the job takes as its own (a schedule's unfinished
        run, which the target's task then resumes)."""
        fleet_id = new_run_id()
        schedule, due = trigger if trigger is not None else (None, None)
        row = {
            "agent": agent,
            "job": dumps(job),
            "options": dumps(options),
            "selector": selector,
            "targets": dumps(targets),
            "created_by": current_user(),
            "schedule": schedule,
            "due": due,
        }
        # Signed as a job whose targets' events are chained (fleetchain.py): the mark
        # only says which signature to check, so one taken off matches none.
        sealed = self._sealed("fleet_chained", fleet_id, row)
        if sealed is not None:
            sealed = dumps({**loads(sealed), CHAINED: True})
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(fleet_jobs).values(
                        fleet_id=fleet_id, created_at=now(), seal=sealed, **row
                    )
                )
                if self._key is not None:
                    start_chains(conn, self._key, fleet_id, targets)
                for target, run_id in (adopted or {}).items():
                    conn.execute(
                        insert(fleet_runs).values(
                            fleet_id=fleet_id, target=target, run_id=run_id, at=now()
                        )
                    )
                    self._began(conn, fleet_id, target, run_id)
        except IntegrityError:
            taken = None if due is None else self.trigger_fleet_job(str(schedule), due)
            if taken is None:
                raise
            raise TriggerTaken(taken["fleet_id"]) from None
        return fleet_id

    def mark_fleet_sent(self, fleet_id: str) -> None:
        """Every task of the fleet job reached the broker (its first send, or a resend)."""
        with self._tx() as conn:
            conn.execute(
                update(fleet_jobs).where(fleet_jobs.c.fleet_id == fleet_id).values(sent_at=now())
            )

    def trigger_fleet_job(self, schedule: str, due: str) -> dict[str, Any] | None:
        """The fleet job a schedule's trigger due at `due` made, if any."""
        self.flush()
        row = self._conn.execute(
            select(fleet_jobs).where(
                (fleet_jobs.c.schedule == schedule) & (fleet_jobs.c.due == due)
            )
        ).first()
        self._conn.rollback()
        return None if row is None else _decoded(dict(row._mapping))

    def newest_schedule_fleet_job(self, schedule: str) -> dict[str, Any] | None:
        """The newest fleet job a trigger of the schedule made, if any."""
        self.flush()
        row = self._conn.execute(
            select(fleet_jobs)
            .where(fleet_jobs.c.schedule == schedule)
            .order_by(fleet_jobs.c.created_at.desc(), fleet_jobs.c.fleet_id.desc())
            .limit(1)
        ).first()
        self._conn.rollback()
        return None if row is None else _decoded(dict(row._mapping))

    def fleet_job_of_run(self, run_id: str) -> str | None:
        """The fleet job whose target's run `run_id` is, if any."""
        self.flush()
        found = self._conn.execute(
            select(fleet_runs.c.fleet_id).where(fleet_runs.c.run_id == run_id)
        ).scalar()
        self._conn.rollback()
        return None if found is None else str(found)

    def list_fleet_jobs(self, limit: int) -> list[dict[str, Any]]:
        """The newest fleet jobs first, at most `limit`, each as get_fleet_job gives it."""
        self.flush()
        rows = self._conn.execute(
            select(fleet_jobs).order_by(fleet_jobs.c.created_at.desc()).limit(limit)
        ).all()
        self._conn.rollback()
        return [self._fleet_checked(dict(row._mapping), strict=False) for row in rows]

    def get_fleet_job(self, fleet_id: str, strict: bool = True) -> dict[str, Any] | None:
        """The fleet job, with `chained` (its targets' events are: fleetchain.py); in a
        store opened with the home's key, refused (StateError) unless its fields are what
        that key signed; not `strict` (a listing), with `seal_error` saying why instead."""
        self.flush()
        row = self._conn.execute(
            select(fleet_jobs).where(fleet_jobs.c.fleet_id == fleet_id)
        ).first()
        self._conn.rollback()
        if row is None:
            return None
        return self._fleet_checked(dict(row._mapping), strict)

    def _fleet_checked(self, found: dict[str, Any], strict: bool) -> dict[str, Any]:
        """get_fleet_job's row, checked as it says."""
        fleet_id, chained = found["fleet_id"], is_chained(found["seal"])
        error = None
        try:
            kind = "fleet_chained" if chained else "fleet"
            self._verify(kind, fleet_id, found, f"fleet job {fleet_id}")
        except StateTampered as exc:
            if strict:
                raise
            error = str(exc)
        return {**_decoded(found), "chained": chained, "seal_error": error}

    def record_fleet_run(self, fleet_id: str, target: str, run_id: str) -> None:
        """The target's run of the fleet job; one that replaces an earlier (a dry run
        started anew) is kept instead of it."""
        which = (fleet_runs.c.fleet_id == fleet_id) & (fleet_runs.c.target == target)
        with self._tx() as conn:
            conn.execute(delete(fleet_runs).where(which))
            conn.execute(
                insert(fleet_runs).values(fleet_id=fleet_id, target=target, run_id=run_id, at=now())
            )
            self._began(conn, fleet_id, target, run_id)

    def _began(self, conn: Connection, fleet_id: str, target: str, run_id: str) -> None:
        """The run a chained job's target has, named in its chain (inside the transaction
        that links it): a link changed or deleted in the store is seen."""
        at = now()
        data: dict[str, Any] = {"fleet_id": fleet_id, "target": target, "run_id": run_id}
        self._link(conn, fleet_id, [target], "began", at, data)
        if data.get("links"):
            row = {"run_id": "-", "step_idx": None, "kind": BEGAN, "data": dumps(data)}
            self._send(EVENT, {**row, "at": at})

    def fleet_run_id(self, fleet_id: str, target: str) -> str | None:
        """The run the target's task recorded, if any (whatever became of it)."""
        self.flush()
        found = self._conn.execute(
            select(fleet_runs.c.run_id).where(
                (fleet_runs.c.fleet_id == fleet_id) & (fleet_runs.c.target == target)
            )
        ).scalar()
        self._conn.rollback()
        return None if found is None else str(found)

    def fleet_runs(self, fleet_id: str) -> dict[str, dict[str, Any]]:
        """By target: the run its task started, with the run's status (as the lists show
        it: interrupted when it is stored running and its process is gone) and times, and
        `changed`: the id of the run's last event (its last change, as an event id, the
        order fleet_not_started's reasons are kept in)."""
        self.flush()
        rows_read = (
            select(
                fleet_runs.c.target,
                fleet_runs.c.run_id,
                runs.c.status,
                runs.c.error,
                runs.c.created_at.label("started_at"),
                runs.c.finished_at,
                runs.c.hostname,
                runs.c.pid,
                runs.c.pid_started,
                last_change().label("changed"),
            )
            .join(runs, runs.c.run_id == fleet_runs.c.run_id)
            .where(fleet_runs.c.fleet_id == fleet_id)
        )
        rows = self._conn.execute(with_beats(rows_read)).all()
        self._conn.rollback()
        return {r.target: _as_shown(r._mapping) for r in rows}

    def record_not_started(self, fleet_id: str, target: str, error: str) -> None:
        """A target's task that ended before its run began or went on (the target
        unreachable, the job refused there): kept, with why and when, for `fleet show`
        until a later delivery starts or resumes its run, or its task is sent again.
        Linked into the target's chain (fleetchain.py) with the home's key."""
        data = {"fleet_id": fleet_id, "target": target, "error": error, "hostname": this_host()}
        with self._tx() as conn:
            at = now()
            self._link(conn, fleet_id, [target], "not_started", at, data)
            row = {"run_id": "-", "step_idx": None, "kind": NOT_STARTED, "data": dumps(data)}
            self._send(EVENT, {**row, "at": at})

    def _link(
        self,
        conn: Connection,
        fleet_id: str,
        targets: list[str],
        kind: str,
        at: str,
        data: dict[str, Any],
    ) -> None:
        """The event's place in each target's chain, put in `data` (a chained job's, in
        a store with the home's key)."""
        if self._key is None:
            return
        sealed = conn.execute(
            select(fleet_jobs.c.seal).where(fleet_jobs.c.fleet_id == fleet_id)
        ).scalar()
        if not is_chained(sealed):
            return
        body = dict(data)
        links = {t: append(conn, self._key, fleet_id, t, kind, at, body) for t in targets}
        data["links"] = {t: link for t, link in links.items() if link is not None}

    def record_resent(self, fleet_id: str, targets: list[str]) -> None:
        """The targets whose tasks are sent again: until their tasks end anew, they are
        queued, whatever an earlier delivery said. Signed with the home's key (a store
        opened with it): which targets, when, and the last event before it, so that
        one written into the store lets no target begin, nor one copied clear a reason
        kept since."""
        with self._tx() as conn:
            after = int(conn.execute(select(func.max(events.c.id))).scalar() or 0)
            at = now()
            signed = {"targets": targets, "at": at, "after": after}
            # The runs its targets have now, vouched for by the person who sends them
            # again: their chains start anew from here (fleetchain.py).
            linked = conn.execute(
                select(fleet_runs.c.target, fleet_runs.c.run_id).where(
                    fleet_runs.c.fleet_id == fleet_id
                )
            ).all()
            data = {
                **signed,
                "fleet_id": fleet_id,
                "seal": self._sealed("resend", fleet_id, signed),
                "linked": {t: r for t, r in linked if t in targets},
            }
            self._link(conn, fleet_id, targets, "resend", at, data)
            row = {"run_id": "-", "step_idx": None, "kind": RESENT, "data": dumps(data)}
            self._send(EVENT, {**row, "at": at})

    def fleet_resent_at(self, fleet_id: str, target: str) -> str | None:
        """When the target's task was last sent again (`fleet resend`), if ever; in a
        store opened with the home's key, refused (StateTampered) unless that resend is
        what the key signed."""
        self.flush()
        rows = self._conn.execute(
            select(events.c.id, events.c.at, events.c.data)
            .where(
                (events.c.run_id == "-")
                & (events.c.kind == RESENT)
                & events.c.data.contains(fleet_id, autoescape=True)
            )
            .order_by(events.c.id.desc())
        ).all()
        self._conn.rollback()
        for event, at, data in rows:
            details = loads(data)
            if details.get("fleet_id") == fleet_id and target in details.get("targets", ()):
                if self._key is not None:
                    what = f"fleet job {fleet_id}'s resend event {event}"
                    again = f"`aishell fleet resend {fleet_id}` sends it again"
                    check(
                        self._key,
                        "resend",
                        fleet_id,
                        {**details, "at": at},
                        details.get("seal"),
                        what,
                        again,
                    )
                return str(at)
        return None

    def fleet_not_started(self, fleet_id: str) -> dict[str, dict[str, Any]]:
        """By target: the last reason its task ended before a run began or went on
        (with `at`, and `event`: its event's id), unless its task was sent again since."""
        self.flush()
        found = reasons_kept(self._conn, [fleet_id], key=self._key).get(fleet_id, {})
        self._conn.rollback()
        return found

    def fleet_chain_breaks(self, fleet: Mapping[str, Any], targets: list[str]) -> dict[str, str]:
        """By target of a chained fleet job, how its event chain is broken (fleetchain.py;
        none: whole), or names another run than fleet_runs links to it. Nothing without
        the home's key, nor for a job made before chains. A break is one seen twice in a
        row: a run begun between the reads of the events, the heads and fleet_runs (each
        a statement of its own) is no break, and the next read sees it whole."""
        if self._key is None or not fleet.get("chained"):
            return {}
        seen: dict[str, str] | None = None
        for _ in range(3):
            broken = self._chain_breaks_read(self._key, fleet["fleet_id"], targets)
            if not broken or broken == seen:
                return broken
            seen = broken
        return broken

    def _chain_breaks_read(
        self, key: SigningKey, fleet_id: str, targets: list[str]
    ) -> dict[str, str]:
        self.flush()
        rows = self._conn.execute(
            select(events.c.id, events.c.at, events.c.kind, events.c.data)
            .where(
                (events.c.run_id == "-")
                & events.c.kind.in_([NOT_STARTED, RESENT, BEGAN])
                & events.c.data.contains(fleet_id, autoescape=True)
            )
            .order_by(events.c.id)
        ).all()
        found = [(r.id, r.at, r.kind, loads(r.data)) for r in rows]
        mine = [e for e in found if e[3].get("fleet_id") == fleet_id]
        runs_linked = dict(
            self._conn.execute(
                select(fleet_runs.c.target, fleet_runs.c.run_id).where(
                    fleet_runs.c.fleet_id == fleet_id
                )
            ).all()
        )
        linked = {t: runs_linked.get(t) for t in targets}
        broken = broken_chains(self._conn, key, fleet_id, mine, linked)
        self._conn.rollback()
        return broken

    def fleet_run_went_on(self, fleet_id: str, target: str, run_id: str, since: int | None) -> bool:
        """Whether the target's run of the fleet job went on after event `since`: another
        run replaced `run_id` (a dry run started anew), or `run_id` was resumed. A
        delivery that failed after that left its run's row to say what became of it."""
        if self.fleet_run_id(fleet_id, target) != run_id:
            return True
        resumed = self._conn.execute(
            select(func.count())
            .select_from(events)
            .where(
                (events.c.run_id == run_id)
                & (events.c.kind == RESUMED)
                & (events.c.id > (since or 0))
            )
        ).scalar()
        self._conn.rollback()
        return bool(resumed)


def last_change() -> Any:
    """The id of the last event of each fleet run's run (fleet_runs.run_id), as a column:
    its last change, in the order fleet_not_started's reasons are kept in."""
    return (
        select(func.max(events.c.id))
        .where(events.c.run_id == fleet_runs.c.run_id)
        .scalar_subquery()
    )


def reasons_kept(
    conn: Connection, fleet_ids: Iterable[str], after: int = 0, key: SigningKey | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """fleet_not_started of each fleet job given, by fleet id, in one statement; only
    what was kept after event `after` (a reason older than a run's last change is no
    longer where that run stands, nor a task sent again before it). With the home's
    `key`, a resend clears only what it was signed to (sent_again)."""
    wanted = sorted(set(fleet_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(events.c.id, events.c.at, events.c.kind, events.c.data)
        .where(
            (events.c.run_id == "-")
            & (events.c.id > after)
            & events.c.kind.in_([NOT_STARTED, RESENT])
            & or_(*(events.c.data.contains(f, autoescape=True) for f in wanted))
        )
        .order_by(events.c.id)
    ).all()
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for event, at, kind, data in rows:
        details = loads(data)
        if details.get("fleet_id") not in wanted:
            continue
        theirs = found.setdefault(details["fleet_id"], {})
        if kind == RESENT:
            for target in sent_again(key, at, details):
                if theirs.get(target, {}).get("event", 0) <= details.get("after", event):
                    theirs.pop(target, None)
        else:
            theirs[details["target"]] = {"at": at, "event": event, **details}
    return found


def sent_again(key: SigningKey | None, at: str, details: Mapping[str, Any]) -> list[str]:
    """The targets a resend event sent again, as far as it is trusted: with the home's
    key, none of one it did not sign as it is (written into the store, or changed), so
    the reason it would clear stands; without it (a listing), every one it names."""
    targets = list(details.get("targets") or ())
    if key is None:
        return targets
    try:
        check(
            key,
            "resend",
            str(details.get("fleet_id")),
            {**details, "at": at},
            details.get("seal"),
            "a resend",
        )
    except StateTampered:
        return []
    return targets


def _as_shown(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A fleet run as every list shows it: one stored running whose process is gone (its
    worker killed; on another host, its beat lapsed) is interrupted, as `fleet status`
    and `runs list` read it."""
    found = {k: v for k, v in row.items() if k not in ("pid", "pid_started", "beat_age")}
    found["status"] = shown_status(
        row["status"], row["pid"], row["hostname"], row["pid_started"], row["beat_age"]
    )
    return found


def standing_refusal(
    run: Mapping[str, Any], refused: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The refusal of a fleet run's last delivery that still stands (`at`, `hostname`,
    `error`), as `fleet show` and `fleet status` give it; None when there is none. It
    stands while newer than the run's last change (`changed`, an event id) and the run
    is interrupted: one running goes on, whatever a duplicate delivery elsewhere was told."""
    if refused is None or run["status"] != "interrupted":
        return None
    if refused["event"] <= (run["changed"] or 0):
        return None
    return {key: refused[key] for key in ("at", "hostname", "error")}


def _decoded(found: dict[str, Any]) -> dict[str, Any]:
    for key in ("job", "options", "targets"):
        found[key] = loads(found[key])
    return found
