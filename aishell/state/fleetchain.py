"""The chain of a fleet job's events for each of its targets: what its deliveries were
told (not_started) and each time a person sent its task again (a resend).

A signature proves a row is what the home's key wrote, never that no row is missing.
So each such event of a job made since chains were kept carries its place in its
target's chain: its number (`seq`, 1 for the first) and the hash of the one before it
(`prev`), signed with the rest of the event; and the chain's newest number and hash are
kept, signed, in one row of `meta` per target (its head), written at the job's making
and moved, compare-and-set, with each event. An event deleted, copied, reordered or
stored from another job or target breaks the walk from the head back to the target's
newest resend (or to the job's making), and no target whose chain is broken begins.
A person's `fleet resend` starts its target's chain anew from that resend.

What no chain inside the store can tell: the head and the events it names put back, as
a whole, as they were earlier (every row saved then): that is the store's own history.
Jobs made before chains were kept (their seal names no chain) are taken as before."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, insert, select, update

from aishell.errors import StateTampered
from aishell.state.schema import meta
from aishell.state.seals import check, seal
from aishell.state.signing import SigningKey
from aishell.state.values import dumps, loads

# How a fleet job's seal says its targets' events are chained (fleet.py).
CHAINED = "chain"


def head_key(fleet_id: str, target: str) -> str:
    """The `meta` key of a target's chain head (a target's name is longer than a key)."""
    digest = hashlib.sha256(f"{fleet_id}\0{target}".encode()).hexdigest()[:40]
    return f"fleet_chain:{digest}"


def link_hash(link_seal: str | None) -> str:
    return hashlib.sha256(str(link_seal).encode()).hexdigest()[:32]


def _head_value(key: SigningKey, fleet_id: str, target: str, seq: int, last: str) -> str:
    row = {"target": target, "seq": seq, "hash": last}
    return dumps({"seq": seq, "hash": last, "seal": seal(key, "fleet_head", fleet_id, row)})


def start_chains(conn: Connection, key: SigningKey, fleet_id: str, targets: list[str]) -> None:
    """Each target's head at the job's making (nothing yet), in the job's transaction."""
    rows = [
        {"key": head_key(fleet_id, t), "value": _head_value(key, fleet_id, t, 0, "")}
        for t in targets
    ]
    if rows:
        conn.execute(insert(meta), rows)


def append(
    conn: Connection,
    key: SigningKey,
    fleet_id: str,
    target: str,
    kind: str,
    at: str,
    body: Mapping[str, Any],
) -> dict[str, Any] | None:
    """The link of a new event of the target's chain, its head moved to it (inside the
    event's transaction). A resend (a person's word) starts anew from a head it cannot
    trust; any other event after one is kept unlinked (None), its chain left broken."""
    k = head_key(fleet_id, target)
    # Held to the transaction's end on a server store: two events of one target (two
    # workers' refusals at once) move its head one after the other.
    stored = conn.execute(select(meta.c.value).where(meta.c.key == k).with_for_update()).scalar()
    try:
        head = _trusted_head(key, fleet_id, target, stored)
    except StateTampered:
        if kind != "resend":
            return None  # kept unlinked: the chain stays broken, its target refused
        head = {"seq": int(_loaded(stored).get("seq") or 0), "hash": ""}
    seq = int(head["seq"]) + 1
    fields = {"target": target, "kind": kind, "seq": seq, "prev": head["hash"], "at": at}
    link_seal = seal(key, "fleet_link", fleet_id, {**fields, "body": dumps(dict(body))})
    value = _head_value(key, fleet_id, target, seq, link_hash(link_seal))
    if stored is None:
        conn.execute(insert(meta).values(key=k, value=value))
    else:
        moved = conn.execute(
            update(meta).where((meta.c.key == k) & (meta.c.value == stored)).values(value=value)
        )
        if moved.rowcount != 1:  # another event moved it first: this one is refused
            raise StateTampered(f"state.db: {_what(fleet_id, target)} moved under this event")
    return {"seq": seq, "prev": head["hash"], "seal": link_seal}


def broken_chains(
    conn: Connection,
    key: SigningKey,
    fleet_id: str,
    chained_events: list[tuple[int, str, str, dict[str, Any]]],
    linked: Mapping[str, str | None],
) -> dict[str, str]:
    """By target of `linked` (its run, as fleet_runs holds it; None: none), the one line
    saying how its chain is broken, or that the run its chain names is not the one
    linked (none: whole). The events (id, at, kind, data) are the job's, oldest first."""
    wanted = list(linked)
    keys = {head_key(fleet_id, t): t for t in wanted}
    heads = dict(conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.in_(keys))).all())
    by_target: dict[str, list[tuple[int, str, str, dict[str, Any]]]] = {}
    for event in chained_events:
        for target in _targets_of(event[3]):
            by_target.setdefault(target, []).append(event)
    broken = {}
    for target in wanted:
        try:
            stored = heads.get(head_key(fleet_id, target))
            head = _trusted_head(key, fleet_id, target, stored)
            named = _walk(key, fleet_id, target, head, by_target.get(target, []))
            if named != linked[target]:
                raise StateTampered(
                    f"state.db: {_what(fleet_id, target)} names run {named or 'none'}, but "
                    f"its target's run is {linked[target] or 'none'} (fleet_runs changed)"
                )
        except StateTampered as exc:
            broken[target] = str(exc)
    return broken


def _walk(
    key: SigningKey,
    fleet_id: str,
    target: str,
    head: Mapping[str, Any],
    found: list[tuple[int, str, str, dict[str, Any]]],
) -> str | None:
    """From the head back to the newest resend, or to the job's making: each number
    once, each hash the one the next names, each event signed as it is, in the order
    the store keeps them. The run the chain names: its newest begun, else the one its
    resend vouched for, else none."""
    what = _what(fleet_id, target)
    by_seq: dict[int, list[tuple[int, str, str, dict[str, Any]]]] = {}
    for event in found:
        link = (event[3].get("links") or {}).get(target) or {}
        by_seq.setdefault(int(link.get("seq") or 0), []).append(event)
    if any(seq > int(head["seq"]) for seq in by_seq):
        raise StateTampered(f"state.db: {what} holds an event past its head (copied in)")
    seq, expected, newer = int(head["seq"]), str(head["hash"]), None
    named: list[str | None] = []
    while seq > 0:
        events = by_seq.get(seq, [])
        if len(events) != 1:
            said = "is missing (deleted)" if not events else "is there twice (copied)"
            raise StateTampered(f"state.db: {what}: its event {seq} {said}{_AGAIN}")
        event_id, at, kind, data = events[0]
        link = data["links"][target]
        if newer is not None and event_id > newer:
            raise StateTampered(f"state.db: {what}: its event {seq} was moved{_AGAIN}")
        body = {k: v for k, v in data.items() if k != "links"}
        fields = {"target": target, "kind": _KINDS.get(kind, kind), "seq": seq}
        row = {**fields, "prev": link.get("prev"), "at": at, "body": dumps(body)}
        check(key, "fleet_link", fleet_id, row, link.get("seal"), f"{what}: its event {seq}")
        if link_hash(link.get("seal")) != expected:
            raise StateTampered(f"state.db: {what}: its event {seq} is not its head's{_AGAIN}")
        if kind == _BEGAN and not named:
            named.append(data.get("run_id"))
        if kind == _RESENT:
            return named[0] if named else (data.get("linked") or {}).get(target)
        seq, expected, newer = seq - 1, str(link.get("prev")), event_id
    return named[0] if named else None


def _trusted_head(
    key: SigningKey, fleet_id: str, target: str, stored: str | None
) -> dict[str, Any]:
    what = _what(fleet_id, target)
    if stored is None:
        raise StateTampered(f"state.db: {what} has no head (deleted){_AGAIN}")
    head = _loaded(stored)
    row = {"target": target, "seq": head.get("seq"), "hash": head.get("hash")}
    again = f"`aishell fleet resend {fleet_id}` starts it anew"
    check(key, "fleet_head", fleet_id, row, head.get("seal"), f"{what}'s head", again)
    return head


def _loaded(stored: str | None) -> dict[str, Any]:
    try:
        found = loads(stored) if stored else {}
    except (ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def _targets_of(data: Mapping[str, Any]) -> list[str]:
    links = data.get("links")
    return list(links) if isinstance(links, dict) else []


def is_chained(stored_seal: str | None) -> bool:
    """Whether a fleet job's seal says its targets' events are chained (not trusted:
    a mark removed leaves a seal the job's fields do not match)."""
    try:
        return bool(json.loads(stored_seal or "{}").get(CHAINED))
    except (ValueError, AttributeError):
        return False


def _what(fleet_id: str, target: str) -> str:
    return f"fleet job {fleet_id}'s event chain of target '{target}'"


# The event kinds as fleet.py stores them, as a link names them.
_RESENT = "fleet_targets_resent"
_BEGAN = "fleet_target_began"
_KINDS = {"fleet_target_not_started": "not_started", _RESENT: "resend", _BEGAN: "began"}
_AGAIN = "; it was changed outside aishell"
