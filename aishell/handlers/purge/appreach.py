"""A SQLite purge's DELETE and what it sets off beyond its table: the tables its DELETE
triggers write, and those its foreign keys' actions write where the session acts on
them (and their triggers in turn), followed as guard/writereach.py follows them for
every engine. A write there that needs the application's own function, collation or
module (an INSERT into a table whose trigger calls norm(), a cascade into a table
indexed by it) fails when the batch reaches it, so the purge is refused before anything
runs, naming the table reached, how, and the code (handlers/sqlite/appcode.py refuses
the purged table's own)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from aishell.errors import TargetError
from aishell.guard.writereach import write_reach
from aishell.guard.writtentables import Write
from aishell.sqltext import quote_identifier
from aishell.targets.appcode import AppCode, Use, read_app_code, stops_insert

_DOING = {"DELETE": "a DELETE from", "UPDATE": "an UPDATE of", "INSERT": "an INSERT into"}


def refuse_reached_app_code(conn: Connection, table: str) -> None:
    """Refuse a purge of `table` whose DELETE reaches, through triggers or foreign keys,
    a write that needs the application's code; one schema read more only where it
    reaches another write. (An archive table runs no code: archive.py refuses one that
    does.)"""
    reach = write_reach(conn, [f"DELETE FROM {quote_identifier(conn.dialect, table)}"])
    if reach is None:
        return
    beyond = [(w, "a trigger's body") for w in reach.by_bodies]
    beyond += [(w, "a foreign key's action") for w in reach.by_keys]
    code: AppCode | None = None
    for write, how in beyond:
        code = code or read_app_code(conn)
        uses = code.of(write.table, _stops(write))
        if uses:
            said = "; ".join(dict.fromkeys(u.says() for u in uses))
            raise TargetError(
                f"Cannot purge {table}: its DELETE reaches {write.table} through {how}, and "
                f"{_DOING.get(write.event, 'a write of')} {write.table} needs the "
                f"application's own code, which aishell does not have: {said}"
            )


def _stops(write: Write) -> Callable[[Use], bool]:
    """The uses a write reached evaluates. Which columns a trigger's DELETE or UPDATE
    compares or sets is not read: a column's collation counts for either."""
    if write.event == "INSERT":
        return stops_insert

    def stops(use: Use) -> bool:
        if use.kind == "trigger":
            return use.event == write.event
        return use.kind != "view"

    return stops
