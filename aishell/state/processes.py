"""Which processes are alive: the holder of a run, a target lock or a scratch entry."""

from __future__ import annotations

import os
from pathlib import Path


def this_host() -> str:
    """This machine's name, as the state store records it with a process."""
    # Here, not at the top: the runs list asks only about runs still marked running.
    import socket

    return socket.gethostname()


def process_alive(pid: int, hostname: str) -> bool:
    if hostname != this_host():
        return True  # cannot see another host's processes: assume the holder is alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return "unknown"


def process_started(pid: int) -> str | None:
    """When a process started (clock ticks after boot, from /proc): with its pid, this
    tells a process from a later one that reused the pid. None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after it do not.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode()


# How often a beating process (one of a fleet worker that runs its tasks) says it is alive, in
# state/beats.py's table, and how long after its last beat, by the state store server's
# clock, a process of another host is taken for gone: a few beats missed, not one slow
# write of a busy store.
BEAT_SECONDS = 5.0
BEAT_LAPSE_SECONDS = 20


def recorder_alive(
    pid: int, hostname: str, started: str | None, beat_age: float | None = None
) -> bool:
    """Is the process that recorded a run or a scratch entry still running? Another
    host's processes cannot be seen from here: one counts as alive unless it beats and
    its last beat is older than BEAT_LAPSE_SECONDS (`beat_age`, seconds by the state
    store server's clock; None: it never beat, or the caller did not read it)."""
    if hostname != this_host():
        return beat_age is None or beat_age <= BEAT_LAPSE_SECONDS
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel about the pid alone
        return process_alive(pid, hostname)
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # exited, not yet reaped
        return False
    return started is None or fields[19].decode() == started
