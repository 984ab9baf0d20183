"""Time zones a command names: the IANA name of a place (Europe/Berlin, UTC), as
zoneinfo reads it. A new schedule's is not `localtime` nor `posixrules`, which the zone
database links to whichever zone the machine reading it is set to: the schedule would
move with the machine that serves it (a fleet's, one whose zone is changed), and no list
could say which zone it fires in.

Plain: the command line's checks read it, so it imports nothing but the standard library.
"""

from __future__ import annotations

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The names that stand for the machine's own setting, not for a place.
MACHINE_ZONES = ("localtime", "posixrules")


def zone_problem(name: str, machine_ok: bool = False) -> str | None:
    """Why `name` is no time zone a new schedule may be in, as the end of a sentence
    that names it ("unknown time zone 'Mars/Base' (...)"); None: it is one.
    `machine_ok`: the machine's own zone is taken (a schedule stored before, still
    served as it was)."""
    if name in MACHINE_ZONES and not machine_ok:
        here = machine_zone()
        named = f"this machine's is {here}" if here else "such as Europe/Berlin"
        return (
            f"{name!r} is whichever zone the machine is set to, which no schedule list "
            f"can show; give the zone's own IANA name ({named})"
        )
    try:
        ZoneInfo(name)
    # OSError: a folder of the zone database (America), a name too long for a file.
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin or UTC)"
    return None


def machine_zone() -> str | None:
    """This machine's zone by its IANA name, as /etc/localtime links to it; None where
    it does not say."""
    target = os.path.realpath("/etc/localtime")
    _, found, name = target.partition("/zoneinfo/")
    return name if found and name and zone_problem(name) is None else None
