"""An archive file's values exactly as the server holds them, where the driver's own
reading would change them: after the purge the file is the rows' only copy.

On PostgreSQL, psycopg parses json and jsonb into Python values (every number a float:
12345678901234567890123 and 0.1000000000000000055511151231257827 lose digits, 1e400
becomes Infinity; a json value's repeated keys are dropped) and reads an interval as a
timedelta (a month as 30 days, a year as 365, all of it as float seconds). So while a
batch's rows are read for its archive file they come as the text the server writes:
JSON text, written into the line as it is (a JSON value still), and an interval's text
(`1 year 2 mons 3 days`), which the server reads back as the same interval. So are the
values the driver reads into what JSON has no type for (ranges, inet), into less than
they hold (an array's lower bounds), or not at all (a date before year 1). Only for
that read: the connection's other readers keep the driver's values.

The server writes text by the session's settings, which code a batch's DELETE runs may
change (a trigger's set_config), for its own rows or the next batch's: each row comes
with the settings it was written under (SETTINGS), and a batch any of whose rows was
written under settings its text is not exact in is rolled back (sent_exactly).

A float that is not finite (NaN, Infinity, which PostgreSQL and SQLite hold) has no
JSON number: it is written as the text `NaN`, `Infinity` or `-Infinity`, as
PostgreSQL's numeric NaN is, so that every line stays JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy.engine import Connection

from aishell.errors import StepFailed
from aishell.targets.searchpath import SESSION_START_KEY


class RawJson(str):
    """JSON text as the server wrote it, spliced into the archive line unchanged."""


@contextmanager
def exact_reads(conn: Connection) -> Iterator[None]:
    """While open, the connection reads PostgreSQL values whose Python form is not the
    server's value (_exact_loaders) as the server's text; its own loaders come back after."""
    if conn.dialect.name != "postgresql":
        yield
        return
    from psycopg.pq import Format

    adapters = conn.connection.dbapi_connection.adapters  # type: ignore[union-attr]
    before = {}
    for oid, loader in _exact_loaders(adapters).items():
        before[oid] = adapters.get_loader(oid, Format.TEXT)
        adapters.register_loader(oid, loader)
    try:
        yield
    finally:
        for oid, old in before.items():
            adapters.register_loader(oid, old)


# Read as an exact Python value, unless the server's value is past what Python holds
# (a year before 1 or after 9999, the time 24:00:00): then as its text.
_CLOCK = frozenset({"date", "timestamp", "timestamptz", "time", "timetz"})


def _exact_loaders(adapters: Any) -> dict[int, type[Any]]:
    """The loaders an archive's read replaces, by type oid (each has one to restore).
    Text: json, jsonb (numbers and repeated keys kept), interval (months and years kept),
    ranges and multiranges and inet and cidr (JSON has no type for the driver's objects).
    An array whose lower bounds are not all 1 is its text, which names them (the driver's
    list drops them); other arrays stay lists of their elements as read here."""
    from psycopg.pq import Format
    from psycopg.types.multirange import MultirangeInfo
    from psycopg.types.range import RangeInfo

    text_loaders = _loaders()
    loaders: dict[int, type[Any]] = {}
    for info in adapters.types:
        old = adapters.get_loader(info.oid, Format.TEXT)
        if old is None:
            pass  # no loader: the driver reads it as its text already
        elif info.name in text_loaders:
            loaders[info.oid] = text_loaders[info.name]
        elif isinstance(info, RangeInfo | MultirangeInfo) or info.name in ("inet", "cidr"):
            loaders[info.oid] = text_loaders["text"]
        elif info.name in _CLOCK:
            loaders[info.oid] = _text_out_of_range(old)
        array = adapters.get_loader(info.array_oid, Format.TEXT) if info.array_oid else None
        if array is not None:
            loaders[info.array_oid] = _bounds_kept(array)
    return loaders


@cache
def _loaders() -> dict[str, type[Any]]:
    # Here, not at the top: a purge of another engine never imports the driver.
    from psycopg.adapt import Loader

    class JsonText(Loader):
        def load(self, data: Any) -> RawJson:
            return RawJson(bytes(data).decode())

    class ServerText(Loader):
        def load(self, data: Any) -> str:
            return bytes(data).decode()

    return {"json": JsonText, "jsonb": JsonText, "interval": ServerText, "text": ServerText}


@cache
def _bounds_kept(base: type[Any]) -> type[Any]:
    def load(inner: Any, data: Any) -> Any:
        # The server writes the bounds (`[2:3]={7,8}`) only where one is not 1.
        return bytes(data).decode() if bytes(data[:1]) == b"[" else inner.load(data)

    return _around(base, load)


@cache
def _text_out_of_range(base: type[Any]) -> type[Any]:
    from psycopg import DataError

    def load(inner: Any, data: Any) -> Any:
        try:
            return inner.load(data)
        except DataError:
            return bytes(data).decode()

    return _around(base, load)


def _around(base: type[Any], load: Callable[[Any, Any], Any]) -> type[Any]:
    """A loader that reads through `base`'s (the driver's compiled loaders take no
    subclass) as `load` says."""
    from psycopg.adapt import Loader

    class Around(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._inner = base(oid, context)

        def load(self, data: Any) -> Any:
            return load(self._inner, data)

    return Around


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


# What the text of a row's values depends on, read with each row a batch archives into
# a file: RETURNING evaluates it just before the row is sent, after whatever code the
# DELETE ran for that row (a BEFORE trigger's set_config), and a row's values are written
# as text by the settings then, which an earlier batch's code may have changed too.
SETTINGS = (
    "pg_catalog.concat_ws('|', pg_catalog.current_setting('DateStyle'), "
    "pg_catalog.current_setting('IntervalStyle'), "
    "pg_catalog.current_setting('extra_float_digits'), "
    "pg_catalog.current_setting('lc_monetary'))"
)
SETTINGS_COLUMN = "aishell_settings"


def inexact_under(settings: str, lc_monetary: str | None, version: int) -> str | None:
    """Which setting a row was sent under (SETTINGS' text) makes its text not the value,
    said; None when none does. `lc_monetary`: the session's as it began, which money's
    text is read back in; `version`: the server's major version. TimeZone and
    bytea_output change no value: an ISO time names its offset, and either bytea form
    reads back as the same bytes."""
    datestyle, intervalstyle, digits, monetary = settings.split("|", 3)
    if not datestyle.startswith("ISO"):
        # Only ISO's dates say which number is the day (`01/02/2000` is either).
        return f"DateStyle was {datestyle}"
    if intervalstyle == "sql_standard":
        # Its text reads back as another interval wherever its fields' signs differ.
        return f"IntervalStyle was {intervalstyle}"
    # From PostgreSQL 12 every positive value writes a float's shortest exact text.
    if int(digits) < (1 if version >= 12 else 3):
        return f"extra_float_digits was {digits}"
    if lc_monetary is not None and monetary != lc_monetary:
        return f"lc_monetary was {monetary}, not {lc_monetary} as the session began"
    return None


def sent_exactly(
    conn: Connection, table: str, columns: list[str], rows: Sequence[Any], settings_last: bool
) -> tuple[list[str], list[Any]]:
    """A batch's archive rows (with `settings_last`, as BatchSql.reads_settings says:
    without the settings each was sent under, their last column, SETTINGS), once every
    row's are settings its text is exact under; else the batch is rolled back and the
    step fails: code the purge ran changed them."""
    if not settings_last:
        return columns, list(rows)
    start = (conn.info.get(SESSION_START_KEY) or {}).get("lc_monetary")
    version = int((conn.dialect.server_version_info or (0,))[0])
    for settings in {row[-1] for row in rows}:
        problem = inexact_under(str(settings), start, version)
        if problem is not None:
            conn.rollback()
            raise StepFailed(
                f"a batch of {table} was read for its archive file while the session's "
                f"{problem}, set by code the purge ran (a trigger's set_config), under "
                "which the server writes values that do not read back as they are; the "
                "batch was rolled back: make that code leave the setting as it was, then "
                "resume"
            )
    return columns[:-1], [tuple(row)[:-1] for row in rows]


# SETTINGS' parts, in order.
_SETTING_NAMES = ("DateStyle", "IntervalStyle", "extra_float_digits", "lc_monetary")


def _text_form(settings: str, version: int) -> tuple[str, ...]:
    """What of SETTINGS' text a value's text depends on once it is exact (inexact_under
    says None): DateStyle's style (ISO writes its day-month order alike), IntervalStyle,
    a float's digits (from PostgreSQL 12 any extra_float_digits over 0 writes its
    shortest exact text), lc_monetary."""
    datestyle, intervalstyle, digits, monetary = settings.split("|", 3)
    shortest = version >= 12 and int(digits) > 0
    return (datestyle.split(",")[0].strip(), intervalstyle, "" if shortest else digits, monetary)


def judged_under(conn: Connection, read: Iterable[str], archived: Sequence[str]) -> str | None:
    """Why the rows of a batch in doubt, read again each with the settings it was sent
    under (`read`, SETTINGS' text), cannot be compared with the text they were archived
    as, said; None when they can. Not under a setting their text is not exact in (as
    sent_exactly holds a batch), nor under one their text is written otherwise in than
    under the batch's own (`archived`, kept in its checkpoint; none from an older
    aishell): an interval or money written otherwise would look changed, or, inexact,
    a changed value the same."""
    start = (conn.info.get(SESSION_START_KEY) or {}).get("lc_monetary")
    version = int((conn.dialect.server_version_info or (0,))[0])
    kept = [_text_form(str(s), version) for s in archived]
    for settings in sorted(set(read)):
        problem = inexact_under(settings, start, version)
        if problem is not None:
            return problem
        form = _text_form(settings, version)
        if kept and form not in kept:
            parts = zip(
                _SETTING_NAMES,
                form,
                kept[0],
                settings.split("|", 3),
                str(archived[0]).split("|", 3),
                strict=True,
            )
            differ = [f"{n} was {now}, not {was}" for n, a, b, now, was in parts if a != b]
            return f"{', '.join(differ)} as its rows were archived under"
    return None
