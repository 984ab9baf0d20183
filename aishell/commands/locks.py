"""The run lock: one run per database at a time, taken by every run that writes."""

from __future__ import annotations

from aishell.errors import TargetLocked
from aishell.state.store import StateStore
from aishell.targets.engines import Target
from aishell.targets.identity import backup_identity, database_identity
from aishell.targets.locks import RunLock, run_lock_key


def take_run_lock(
    store: StateStore, handle: Target, target: str, agent: str, run_id: str
) -> RunLock:
    """One run per database at a time, whatever name or agent reaches it: the server's
    lock keyed by the database's identity, and a lease row naming the run.

    The server lock is the authority (the server frees it when a process dies);
    the lease says who holds it, since a lost network shows only after keepalives.
    Held, the database reached (its backup_identity) is recorded with the target.
    """
    with handle.connect() as conn:
        identity = database_identity(conn)
        reached = backup_identity(conn, identity)
    lock = handle.try_lock(run_lock_key(identity))
    if lock is None:
        holder = store.lock_holder(identity)
        who = (
            f"run {holder['run_id']} (pid {holder['pid']} on {holder['hostname']}, "
            f"since {holder['acquired_at']})"
            if holder
            else "another aishell process"
        )
        raise TargetLocked(
            f"Target '{target}' is locked for {agent}: its database is in use by {who}"
        )
    try:
        store.acquire_lock(identity, run_id, held_by_server=True)
    except TargetLocked:
        lock.release()
        holder = store.lock_holder(identity) or {}
        raise TargetLocked(
            f"Target '{target}' is locked for {agent}: its database is in use by run "
            f"{holder.get('run_id')} (pid {holder.get('pid')} on {holder.get('hostname')})"
        ) from None
    lock.lease = identity
    store.record_reached(handle.name, reached, handle.fingerprint, run_id)
    return lock


def note_reached(store: StateStore, handle: Target, run_id: str) -> None:
    """Record which database the target reaches now, for a run that takes no run lock (a
    dry run): what the listings judge its backups by (state/reached.py)."""
    with handle.connect() as conn:
        reached = backup_identity(conn)
    store.record_reached(handle.name, reached, handle.fingerprint, run_id)


def release_run_lock(store: StateStore, lock: RunLock, run_id: str) -> None:
    """Free the server's lock, then the lease row that named the run."""
    lock.release()
    store.release_lock(lock.lease, run_id)
