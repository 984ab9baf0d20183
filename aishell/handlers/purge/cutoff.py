"""The age of a row: what a table's date column holds, and the cutoff for a retention.

The cutoff is taken from the database server's clock, in the column's own terms
(a timestamp with or without time zone, a date, Unix seconds or milliseconds, or on
SQLite the one kind the column's values all are: a text format, Julian days or Unix
time; a column of more than one is refused), so that "older than 30 days"
means what the application that wrote the rows meant by it. It is kept as a JSON
value and bound as a parameter, never formatted into SQL.

A cutoff a plan supplies itself (a saved plan edited, a model's draft, the tool's params
given directly) is the value shown, approved and recorded, so it must be the value the
DELETE compares with: DateColumn.bind refuses, in one line, what binding would change,
rather than adjust it: digits past the microsecond (the drivers round or cut them); no
offset on a timestamptz (the session's TimeZone would supply one); an offset on a
column without a zone (PostgreSQL timestamp, MySQL DATETIME and TIMESTAMP, which compare
in the session's time_zone: it would be dropped); a time of day on a DATE column; on
SQLite, where text is compared as text, a zone or a time after another separator than
the column's; a Unix time that is not a number, or a float past 2^53. bind runs in
the preview and the estimate the approval sees, and again before the first batch.

On MySQL a TIMESTAMP column is compared with the cutoff as the session's time_zone
reads it: the zone is shown beside the cutoff (compared_in), and the purge holds its
session to the zone its preview, saved plan or approval showed (resume.py), batch after
batch (batches.py: read after each DELETE in the statement that reads what it set off,
reach.py). Every cutoff without an offset of its own is shown with the clock it was
read on (clock_of): UTC, or the session's time zone, whose wall time it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from aishell.config.options import RETENTION_DAYS
from aishell.dialects import family
from aishell.errors import TargetError, UsageError
from aishell.handlers.purge.tableindexes import TableIndex, indexes_of
from aishell.sqltext import quote_identifier, text
from aishell.targets.catalog import (
    MILLISECONDS_FROM,
    NOT_A_TIME,
    SQLITE_VALUE_KINDS,
    refuse_shadow,
    sqlite_value_counts,
    sqlite_value_kinds,
)
from aishell.units import exact

# Rows an unindexed Unix-time column is sampled in for milliseconds (SQLite's: all read).
_SAMPLE_ROWS = 1000

_PG_KINDS = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "date": "date",
    "bigint": "epoch",
    "integer": "epoch",
    "numeric": "epoch",
    "double precision": "epoch",
}
_MYSQL_KINDS = {
    "datetime": "timestamp",
    "timestamp": "timestamp",
    "date": "date",
    "int": "epoch",
    "bigint": "epoch",
    "decimal": "epoch",
    "double": "epoch",
}
_SQLITE_TEXT = {"text_t": "%Y-%m-%dT%H:%M:%S", "text": "%Y-%m-%d %H:%M:%S", "text_date": "%Y-%m-%d"}
# Kinds whose cutoff is a number: Unix seconds, milliseconds, SQLite's Julian days, whose
# day 2440587.5 is 1970-01-01 00:00 UTC (a Julian cutoff is kept to 10^-8 days, ~1 ms).
_NUMERIC = ("epoch", "epoch_ms", "julian")
_UNIX_EPOCH_JULIAN = 2_440_587.5
_JULIAN_DIGITS = 10**8


@dataclass(frozen=True)
class DateColumn:
    table: str
    column: str
    # timestamptz, timestamp, date, epoch, epoch_ms, julian, text, text_t or text_date
    kind: str
    indexed: bool
    # SQLite: no row holds a date, so none is compared and no format is the column's.
    empty: bool = False
    # MySQL's TIMESTAMP: the cutoff, without an offset, is read in the session's
    # time_zone before it is compared (compared_in names that zone).
    zoned: bool = False

    def bind(self, cutoff: Any) -> Any:
        """The stored cutoff as the value to compare the column with: exactly the value
        stored, or refused (exact_cutoff), never rounded, truncated or given a zone."""
        try:
            if self.kind in ("timestamptz", "timestamp"):
                return _moment(self, cutoff)
            if self.kind == "date":
                if not isinstance(cutoff, str) or not _DATE.match(cutoff):
                    raise _Inexact("a date column is compared with a date, as 2026-01-31")
                return date.fromisoformat(cutoff)
            if self.kind in _NUMERIC:
                if isinstance(cutoff, bool) or not isinstance(cutoff, int | float):
                    raise ValueError(cutoff)
                if not math.isfinite(cutoff):
                    raise ValueError(cutoff)  # NaN: no row is older, nor younger
                if isinstance(cutoff, float) and abs(cutoff) >= _EXACT_FLOAT:
                    raise _Inexact("give a whole number: a float this large is not exact")
                return cutoff
        except _Inexact as why:
            raise TargetError(
                f"cutoff {cutoff!r} is not exactly comparable with {self.table}.{self.column} "
                f"({self.kind}): {why}"
            ) from None
        except ValueError:
            raise TargetError(
                f"cutoff {cutoff!r} is not a valid value for {self.table}.{self.column} "
                f"({self.kind})"
            ) from None
        if not isinstance(cutoff, str):
            raise TargetError(f"cutoff {cutoff!r} for {self.table}.{self.column} must be text")
        formats = _SQLITE_CUTOFF.values() if self.empty else [_SQLITE_CUTOFF[self.kind]]
        if not any(f.match(cutoff) for f in formats):
            raise TargetError(
                f"cutoff {cutoff!r} is not exactly comparable with {self.table}.{self.column}"
                f" ({self.kind}): its text is compared as text, so give it in the column's "
                f"own format ({_SQLITE_EXAMPLE[self.kind]}), with no time zone"
            )
        return cutoff


class _Inexact(ValueError):
    """A cutoff the column's comparison would not take exactly as it is written."""


# A date, and a moment's text: its fraction of a second, its offset.
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_FRACTION = re.compile(r":\d{2}[.,](\d+)")
_MICROSECOND_DIGITS = 6
# Floats from here on are whole numbers apart by 2 or more: a value written with more
# digits than a float holds was rounded when read.
_EXACT_FLOAT = 2**53
# SQLite's text cutoffs, compared as text: a date alone compares as its midnight with
# either format (a prefix sorts first), a time only after the column's own separator
# ('T' sorts after ' ', so another would misplace every row of the cutoff's day).
_SQLITE_CUTOFF = {
    "text": re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2}(\.\d+)?)?$"),
    "text_t": re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d+)?)?$"),
    "text_date": re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}:\d{2}(\.\d+)?)?$"),
}
_SQLITE_EXAMPLE = {
    "text": "2026-01-31 00:00:00",
    "text_t": "2026-01-31T00:00:00",
    "text_date": "2026-01-31",
}


def _moment(column: DateColumn, cutoff: Any) -> datetime:
    """A timestamp cutoff as bound: refused where binding would change it (digits past
    the microsecond, which the driver cuts off), or where the column would read it in a
    zone it does not say (no offset for a timestamptz, which the session's TimeZone
    would supply; an offset for a column without a zone, which would be dropped)."""
    if not isinstance(cutoff, str):
        raise ValueError(cutoff)
    fraction = _FRACTION.search(cutoff)
    if fraction and len(fraction.group(1)) > _MICROSECOND_DIGITS:
        raise _Inexact("the column holds microseconds: give at most 6 decimals")
    moment = datetime.fromisoformat(cutoff)
    if column.kind == "timestamptz" and moment.tzinfo is None:
        raise _Inexact("the column holds moments: give the offset, as +00:00")
    if column.kind == "timestamp" and moment.tzinfo is not None:
        raise _Inexact(
            "the column holds local times with no zone: give the cutoff without an offset"
        )
    return moment


def describe(
    conn: Connection, table: str, column: str, indexes: list[TableIndex] | None = None
) -> DateColumn:
    """What the date column holds; a column that holds no dates is refused. `indexes`:
    the table's (indexes_of), when the caller has them already."""
    dialect = conn.dialect.name
    zoned = False
    if dialect == "postgresql":
        data_type = conn.execute(
            text(
                # The view's names are a domain over name: compared as text, no operator
                # a database defines over that domain is chosen over the catalog's.
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_schema::pg_catalog.text "
                "= pg_catalog.current_schema()::pg_catalog.text "
                "AND table_name::pg_catalog.text = :t AND column_name::pg_catalog.text = :c"
            ),
            {"t": table, "c": column},
        ).scalar()
        kind = _PG_KINDS.get(str(data_type))
    elif family(dialect) == "mysql":
        data_type = conn.execute(
            text(
                "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = :t AND COLUMN_NAME = :c"
            ),
            {"t": table, "c": column},
        ).scalar()
        kind = _MYSQL_KINDS.get(str(data_type).lower())
        zoned = str(data_type).lower() == "timestamp"
    else:
        refuse_shadow(conn, table)
        data_type, kind = _sqlite_kind(conn, table, column)
    if kind is None:
        raise TargetError(
            f"column {table}.{column} holds {data_type}, not dates: a purge needs a date, "
            "timestamp or Unix-time column"
        )
    if indexes is None:
        indexes = indexes_of(conn, table)
    indexed = any(i.columns[0] == column for i in indexes)
    if kind == "epoch" and dialect != "sqlite":  # SQLite's unit: every value read
        kind = _epoch_unit(conn, table, column, indexed)
    return DateColumn(table, column, kind, indexed, empty=data_type == "empty", zoned=zoned)


# The session's time zone; SYSTEM is the server's own, which it names apart. A query
# the purge sends anyway may read them too (reach.py, after each batch's DELETE).
ZONE_COLUMNS = "@@session.time_zone, @@system_time_zone"
_ZONE_SQL = f"SELECT {ZONE_COLUMNS}"
# step_cache: the zone the step's estimate showed beside its cutoff.
ZONE_SHOWN = "purge cutoff zone"


def compared_in(conn: Connection, column: DateColumn) -> str | None:
    """The time zone the server reads the cutoff in before comparing it with the column
    (the session's time_zone, SYSTEM resolved to the server's zone): shown beside the
    cutoff, and held to while the purge runs. None where no zone is read: a zone is part
    of the value (timestamptz), or the value is compared as written."""
    return _session_zone(conn) if column.zoned else None


def zone_moved(conn: Connection, shown: str | None, now: str | None = None) -> str | None:
    """The zone the session compares the cutoff in now, where it is not the one `shown`
    (None: the same, or no zone was shown). `now`: the zone as a statement the caller
    sent anyway read it (ZONE_COLUMNS, through zone_named); else it is read here."""
    if shown is None:
        return None
    if now is None:
        now = _session_zone(conn)
    return None if now == shown else now


def zone_named(zone: Any, system: Any) -> str:
    """The zone ZONE_COLUMNS read, by name: SYSTEM as the server's own zone."""
    return str(system) if str(zone).upper() == "SYSTEM" else str(zone)


def _session_zone(conn: Connection) -> str:
    return zone_named(*conn.execute(text(_ZONE_SQL)).one())


def clock_of(conn: Connection, column: DateColumn, zone: str | None = None) -> str | None:
    """The zone whose clock a cutoff the server's clock made (server_now) reads on, to
    show beside it: UTC for SQLite's and every Unix time, else the session's time zone
    (`zone`, where compared_in read it already). None: the value says its offset."""
    if column.kind == "timestamptz":
        return None
    if column.kind in _NUMERIC or conn.dialect.name == "sqlite":
        return "UTC"
    if conn.dialect.name != "postgresql":
        return zone or _session_zone(conn)
    # The server reports its TimeZone with every answer: no round trip to read it.
    info = getattr(conn.connection.dbapi_connection, "info", None)
    reported = info.parameter_status("TimeZone") if info is not None else None
    return str(reported or conn.execute(text("SHOW TimeZone")).scalar_one())


def cutoff_for(conn: Connection, column: DateColumn, retention_days: float) -> Any:
    """Now on the server, less the retention, as a JSON value in the column's terms."""
    check_retention(retention_days)
    now = server_now(conn, column)
    moment = now - timedelta(days=retention_days)
    if column.kind == "timestamptz":
        return moment.isoformat()
    if column.kind == "timestamp":
        return moment.replace(tzinfo=None).isoformat(sep=" ")
    if column.kind == "date":
        return moment.date().isoformat()
    if column.kind == "epoch":
        return int(moment.timestamp())
    if column.kind == "epoch_ms":
        return int(moment.timestamp() * 1000)
    if column.kind == "julian":  # as julianday() gives it, rounded down
        days = moment.timestamp() / 86_400 + _UNIX_EPOCH_JULIAN
        return math.floor(days * _JULIAN_DIGITS) / _JULIAN_DIGITS
    return moment.strftime(_SQLITE_TEXT[column.kind])


def check_retention(retention_days: Any) -> None:
    """A retention is a finite number of days within the option's bounds (the option
    table's, as the command line and the agent check it); NaN would make every
    comparison false, infinity overflows the date arithmetic."""
    if not RETENTION_DAYS.holds(retention_days):
        raise UsageError(
            f"retention_days {retention_days!r}: give a number of days from "
            f"{RETENTION_DAYS.minimum} to {RETENTION_DAYS.maximum}"
        )


def server_now(conn: Connection, column: DateColumn) -> datetime:
    """The server's clock as the column sees it: aware for timestamptz and Unix time,
    the session's local wall time for timestamps without a time zone."""
    dialect = conn.dialect.name
    now: datetime
    if dialect == "postgresql":
        if column.kind == "timestamp" or column.kind == "date":
            now = conn.execute(text("SELECT localtimestamp")).scalar_one()
        else:
            now = conn.execute(text("SELECT now()")).scalar_one()
        return now
    if family(dialect) == "mysql":
        if column.kind in ("epoch", "epoch_ms"):
            seconds = conn.execute(text("SELECT UNIX_TIMESTAMP(NOW(6))")).scalar_one()
            return datetime.fromtimestamp(float(seconds), UTC)
        now = conn.execute(text("SELECT NOW(6)")).scalar_one()
        return now
    # SQLite writes CURRENT_TIMESTAMP and datetime('now') in UTC.
    stamp = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
    moment = datetime.fromisoformat(stamp)
    return moment.replace(tzinfo=UTC) if column.kind in _NUMERIC else moment


def no_newer_than(conn: Connection, column: DateColumn, cutoff: Any, retention_days: float) -> None:
    """Refuse a cutoff that would delete rows younger than the retention allows."""
    limit = cutoff_for(conn, column, retention_days)
    if column.bind(cutoff) > column.bind(limit):
        raise TargetError(
            f"cutoff {cutoff} is newer than retention_days={exact(retention_days)} allows "
            f"(at most {limit} on the server's clock); refusing to delete younger rows"
        )


def _sqlite_kind(conn: Connection, table: str, column: str) -> tuple[str, str | None]:
    """What a SQLite column holds, every value read (sqlite_value_kinds): its one kind, or
    "empty". Each kind reads a value as another moment, and SQLite sorts numbers before
    text: more than one is refused, naming each; but a date alone sorts as its midnight
    beside times of one form (a prefix sorts first)."""
    found = sqlite_value_kinds(conn, table, column)
    if len(found) > 1 and "number" in found and not {"text", "text_t", "text_date"} & found:
        found.discard("number")  # 0 is older than any cutoff, 10^16 never: in every unit
    if len(found) == 2 and "text_date" in found and found & {"text", "text_t"}:
        found.discard("text_date")
    if not found:
        return "empty", "text"  # nothing to delete either way
    if found == {"other"}:
        return f"values such as {sqlite_value_counts(conn, table, column)['other'][1]}", None
    if len(found) == 1:
        return "one kind", "epoch" if "number" in found else found.pop()
    counted = {k: v for k, v in sqlite_value_counts(conn, table, column).items() if k in found}
    if found == {"epoch", "epoch_ms"}:
        raise _both_units(table, column, counted["epoch"][1], counted["epoch_ms"][1])
    kinds = ", ".join(
        f"{SQLITE_VALUE_KINDS[k]} ({n:,} row{'s' if n > 1 else ''}, such as {v})"
        for k, (n, v) in counted.items()
    )
    raise TargetError(
        f"column {table}.{column} holds values of more than one kind: {kinds}; no one cutoff "
        "finds the old rows of each (SQLite compares text as text and sorts every number "
        "before any text), so nothing is deleted; make the column one format"
    )


def _both_units(table: str, column: str, seconds: Any, millis: Any) -> TargetError:
    return TargetError(
        f"column {table}.{column} holds Unix times in seconds and in milliseconds "
        f"(for example {seconds} and {millis}): no one cutoff is older than the "
        "retention in both, so nothing is deleted; make the column one unit"
    )


def _epoch_unit(conn: Connection, table: str, column: str, indexed: bool) -> str:
    """epoch (seconds) or epoch_ms. Milliseconds only where no value reads as seconds:
    a column of both has no one cutoff (the seconds' rows would all be older than a
    cutoff in milliseconds, and be deleted), and is refused, naming a value of each."""
    millis = _a_millisecond_value(conn, table, column, indexed)
    if millis is None:
        # Seconds: a milliseconds' row, if any went unsampled, is never older than a
        # cutoff in seconds, and stays.
        return "epoch"
    quoted = _quoter(conn)
    seconds = conn.execute(
        text(
            f"SELECT {quoted(column)} FROM {quoted(table)} WHERE {quoted(column)} <> 0 AND "
            f"{quoted(column)} > :low AND {quoted(column)} < :high LIMIT 1"
        ),
        {"low": -MILLISECONDS_FROM, "high": MILLISECONDS_FROM},
    ).scalar()
    if seconds is not None:
        raise _both_units(table, column, seconds, millis)
    return "epoch_ms"


def _a_millisecond_value(conn: Connection, table: str, column: str, indexed: bool) -> Any:
    """A value in milliseconds' range: the largest, of an indexed column; else one of the
    first SAMPLE_ROWS rows found, as a scan of the whole column (before every step of a
    purge) would cost what the purge is meant to avoid."""
    quoted = _quoter(conn)
    in_range = f"{quoted(column)} >= :low AND {quoted(column)} < :high"
    values = (
        f"{quoted(table)} WHERE {in_range}"
        if indexed
        else f"(SELECT {quoted(column)} FROM {quoted(table)} WHERE {quoted(column)} IS NOT "
        f"NULL LIMIT {_SAMPLE_ROWS}) AS aishell_sample WHERE {in_range}"
    )
    return conn.execute(
        text(f"SELECT max({quoted(column)}) FROM {values}"),
        {"low": MILLISECONDS_FROM, "high": NOT_A_TIME},
    ).scalar()


def _quoter(conn: Connection) -> Any:
    return lambda name: quote_identifier(conn.dialect, name)
