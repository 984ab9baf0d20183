"""An archive file's values exactly as the server holds them, where the driver's own
reading would change them: after the purge the file is the rows' only copy.

On PostgreSQL, psycopg parses json and jsonb into Python values (every number a float:
12345678901234567890123 and 0.1000000000000000055511151231257827 lose digits, 1e400
becomes Infinity; a json value's repeated keys are dropped) and reads an interval as a
timedelta (a month as 30 days, a year as 365, all of it as float seconds). So while a
batch's rows are read for its archive file they come as the text the server writes:
JSON text, written into the line as it is (a JSON value still), and an interval's text
(`1 year 2 mons 3 days`), which the server reads back as the same interval. Only for
that read: the connection's other readers keep the driver's values.

A float that is not finite (NaN, Infinity, which PostgreSQL and SQLite hold) has no
JSON number: it is written as the text `NaN`, `Infinity` or `-Infinity`, as
PostgreSQL's numeric NaN is, so that every line stays JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy.engine import Connection


class RawJson(str):
    """JSON text as the server wrote it, spliced into the archive line unchanged."""


@contextmanager
def exact_reads(conn: Connection) -> Iterator[None]:
    """While open, the connection reads json, jsonb and interval values (arrays of them
    too) as the server's text (PostgreSQL only); the driver's own loaders come back after."""
    if conn.dialect.name != "postgresql":
        yield
        return
    from psycopg.pq import Format

    adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
    loaders = _loaders()
    before = {}
    for name in loaders:
        info = adapters.types.get(name)
        if info is not None:
            before[name] = adapters.get_loader(info.oid, Format.TEXT)
    for name in before:
        adapters.register_loader(name, loaders[name])
    try:
        yield
    finally:
        for name, old in before.items():
            if old is not None:
                adapters.register_loader(name, old)


@cache
def _loaders() -> dict[str, type[Any]]:
    # Here, not at the top: a purge of another engine never imports the driver.
    from psycopg.adapt import Loader

    class JsonText(Loader):
        def load(self, data: Any) -> RawJson:
            return RawJson(bytes(data).decode())

    class IntervalText(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode()

    return {"json": JsonText, "jsonb": JsonText, "interval": IntervalText}


# A float no JSON number holds, as its text.
_NOT_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def encoded(value: Any, default: Callable[[Any], Any]) -> str:
    """One value as the archive line holds it: JSON, as json.dumps writes it (with
    `default` for what JSON has no type for), RawJson as the server wrote it."""
    if isinstance(value, RawJson):
        # The line is the row: JSON's line breaks are whitespace outside its strings,
        # where the server refuses a raw one.
        return value.replace("\r", " ").replace("\n", " ")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(encoded(v, default) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(_member(k, v, default) for k, v in value.items()) + "}"
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(_NOT_FINITE.get(value, "NaN"))
    return json.dumps(value, default=default, allow_nan=False)


def encoded_row(columns: Mapping[str, Any], default: Callable[[Any], Any]) -> str:
    """A row as one JSON object, its columns by name in order."""
    return "{" + ", ".join(_member(k, v, default) for k, v in columns.items()) + "}"


def _member(key: Any, value: Any, default: Callable[[Any], Any]) -> str:
    return f"{json.dumps(str(key))}: {encoded(value, default)}"
