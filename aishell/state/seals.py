"""Signatures over what the state store says about a run: the run's plan, its hash, its
tool fingerprints and what else resume trusts, every approval and every request for one;
over a fleet job, whose job and options every worker runs its targets' runs with, and
over each resend of it, which lets a target's run begin; over a schedule, whose job
and options every trigger runs with; and over a backup catalog row, whose path, checksum
and manifest restore, validation and retention trust.

Each field of a row gets its own HMAC (the home's plan-signing key, aishell/state/signing.py)
over the run, the row's kind, the field's name and its stored text, so an edit is named
by the field it changed, and a value copied from another run, step or field does not
match. A store opened without the key (commands that only list) neither signs nor
checks; resume, approve and show open it with the key and refuse an edited row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from aishell.errors import StateTampered
from aishell.state.signing import SigningKey, canonical

# What resume, approve and show trust of a run row, and of the approval rows.
RUN_FIELDS = (
    "agent",
    "target",
    "dialect",
    "job",
    "plan",
    "plan_hash",
    "tool_fingerprints",
    "dry_run",
    "safety_level",
)
APPROVAL_FIELDS = (
    "step_idx",
    "decision",
    "decided_by",
    "how",
    "reason",
    "at",
    "named",
    "given_for",
)
REQUEST_FIELDS = ("step_idx", "named", "given_for", "at")
# What a worker trusts of a fleet job: a safety level, --force or --ignore-window written
# into the store would otherwise loosen every target's run.
FLEET_FIELDS = ("agent", "job", "options", "selector", "targets", "created_by", "schedule", "due")
# What a worker trusts of a fleet job's resend (an event): which targets, when (a late
# trigger's age is counted from it), and the last event before it, past which the
# reasons it clears were kept (a copy of it stored later clears none kept since).
RESEND_FIELDS = ("targets", "at", "after")
# A fleet job's event's place in its target's chain, and the chain's head (fleetchain.py).
LINK_FIELDS = ("target", "kind", "seq", "prev", "at", "body")
HEAD_FIELDS = ("target", "seq", "hash")
# What `schedule serve` trusts of a schedule: its job, options, target, agent and cron
# (and whether it is paused) are what each trigger runs, unattended.
SCHEDULE_FIELDS = (
    "cron",
    "timezone",
    "words",
    "agent",
    "job",
    "target",
    "options",
    "paused",
    "created_at",
    "created_by",
)
# What restore, validation, retention and an incremental's choice of parent trust of a
# backup's catalog row (keyed by its id): which file it is, of which database, what it
# holds, when it was taken, how far it was proven, and whether it was deleted.
BACKUP_FIELDS = (
    "target",
    "run_id",
    "kind",
    "path",
    "sha256",
    "size_bytes",
    "manifest",
    "created_at",
    "verified_at",
    "verification",
    "deleted_at",
)

# How the one line names a field that changed.
_FIELD_NAMES = {
    "plan_hash": "plan hash",
    "tool_fingerprints": "tool fingerprints",
    "dry_run": "dry-run flag",
    "safety_level": "safety level",
    "step_idx": "step",
    "decided_by": "decider",
    "given_for": "verdict",
    "size_bytes": "size",
    "verified_at": "verification time",
    "deleted_at": "deletion",
}


def seal(key: SigningKey, kind: str, run_id: str, row: Mapping[Any, Any]) -> str:
    """The signature of `row`'s fields of `kind` (run, approval, request), as stored."""
    fields = {name: _mac(key, kind, run_id, name, row.get(name)) for name in _fields(kind)}
    return json.dumps({"key_id": key.key_id, "fields": fields}, sort_keys=True)


def check(
    key: SigningKey,
    kind: str,
    run_id: str,
    row: Mapping[Any, Any],
    stored: str | None,
    what: str,
    again: str = "start the job again",
) -> None:
    """Refuse, in one line, a row whose fields are not what this home's key signed.

    `what` names the row ("run 12", "run 12's approval of step 1"); `again`, how a person
    makes it anew (said of a row stored unsigned or with another key)."""
    if not stored:
        raise StateTampered(
            f"state.db: {what} carries no signature: it was stored before signing and could "
            f"not be signed then, or it was written outside aishell; {again}"
        )
    try:
        parsed = json.loads(stored)
        signed_by, fields = parsed["key_id"], parsed["fields"]
    except (ValueError, TypeError, KeyError):
        raise StateTampered(
            f"state.db: {what}'s signature is damaged; it was changed outside aishell"
        ) from None
    if signed_by != key.key_id:
        raise StateTampered(
            f"state.db: {what} is signed by another key ({signed_by}), not this home's "
            f"({key.key_id}): it was stored in another aishell home or before "
            f"`aishell plan rotate-key`; {again}"
        )
    for name in _fields(kind):
        expected = _mac(key, kind, run_id, name, row.get(name))
        if not hmac.compare_digest(expected, str(fields.get(name))):
            field = _FIELD_NAMES.get(name, name)
            row_of = kind in ("approval", "request", "resend", "fleet_link", "fleet_head")
            changed = f"{what} ({field})" if row_of else f"{what}'s {field}"
            # A schedule, a backup and a resend say how to make them anew; a run's row,
            # only that it changed.
            anew = ("schedule", "backup", "resend", "fleet_link", "fleet_head")
            tail = f"; {again}" if kind in anew else ""
            raise StateTampered(
                f"state.db: {changed} does not match its signature; it was changed outside "
                f"aishell{tail}"
            )


def step_seal(key: SigningKey, run_id: str, index: int, field: str, value: str | None) -> str:
    """The signature of a step's status or output (as stored), which resume trusts."""
    return _mac(key, "step", run_id, f"{index}.{field}", value)


def check_step(key: SigningKey, run_id: str, index: int, row: Mapping[Any, Any], what: str) -> None:
    """Refuse a step whose status, or output, is not what this home's key signed (an
    output never written needs no signature)."""
    for field in ("status", "output"):
        value, stored = row[field], row[f"{field}_seal"]
        if field == "output" and value is None:
            continue
        if not stored or not hmac.compare_digest(
            step_seal(key, run_id, index, field, value), str(stored)
        ):
            raise StateTampered(
                f"state.db: {what} ({field}) does not match its signature; "
                "it was changed outside aishell"
            )


def _fields(kind: str) -> tuple[str, ...]:
    return {
        "run": RUN_FIELDS,
        "approval": APPROVAL_FIELDS,
        "request": REQUEST_FIELDS,
        "fleet": FLEET_FIELDS,
        "fleet_chained": FLEET_FIELDS,
        "fleet_link": LINK_FIELDS,
        "fleet_head": HEAD_FIELDS,
        "schedule": SCHEDULE_FIELDS,
        "backup": BACKUP_FIELDS,
        "resend": RESEND_FIELDS,
    }[kind]


def _mac(key: SigningKey, kind: str, run_id: str, name: str, value: Any) -> str:
    # Booleans come back from some engines as 0/1: signed as what they mean.
    if isinstance(value, bool) or name in ("dry_run", "named", "paused"):
        value = None if value is None else bool(value)
    body = {"kind": kind, "run": run_id, "field": name, "value": value}
    return hmac.new(key.secret, canonical(body), hashlib.sha256).hexdigest()
