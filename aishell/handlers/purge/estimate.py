"""How many rows a table holds, and how many are older than a cutoff, without reading the
table: from the engine's statistics where they still describe it, else from a small
sample. A purge's counts cost a few short statements, not a scan of the rows it is
about to delete; every figure says it is an estimate and how it was made.

- PostgreSQL: the planner's own arithmetic, from pg_class (rows per page times the
  table's pages now) and the date column's histogram and most common values in
  pg_stats, as long as fewer rows changed since ANALYZE than would make autovacuum
  analyze again. Missing or stale statistics: a block sample (TABLESAMPLE SYSTEM) of
  about SAMPLE_PAGES pages.
- MySQL and MariaDB keep no histogram unless asked: SAMPLE_RANGES short key ranges
  spread evenly along an integer key, each as wide as should hold about SAMPLE_ROWS
  rows by the table's row estimate, read in one statement of index range reads; each
  range's rows and old rows stand for its stretch of the key. Where that disagrees
  with the engine's row estimate by more than AGREE times, the keys are too unevenly
  spread for ranges of equal width, and the table is counted.
- A MySQL key that is not an integer cannot be spread evenly, and SQLite keeps no
  statistics to estimate from: those tables are counted (count_older), and say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.handlers.purge.batchsql import is_integer
from aishell.handlers.purge.cutoff import DateColumn
from aishell.sqltext import text
from aishell.tool.context import ToolContext, fill_template

COUNT = "SELECT count(*), sum(CASE WHEN {date_column} < :cutoff THEN 1 ELSE 0 END) FROM {table}"
# What an estimate may send ({array}: the type a histogram of the date column is read
# back as); a sample of key ranges sends one range per stretch of the key.
_PG_TABLE = (
    "SELECT c.reltuples, c.relpages, pg_catalog.pg_relation_size(c.oid) / "
    "pg_catalog.current_setting('block_size')::pg_catalog.int4 AS pages, s.n_mod_since_analyze, "
    "greatest(s.last_analyze, s.last_autoanalyze) AS analyzed "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE c.relname = :t AND n.nspname = pg_catalog.current_schema()"
)
# The engine's own row estimate, made from its pages.
_MYSQL_ROWS = (
    "SELECT TABLE_ROWS FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
)
_PG_HISTOGRAM = (
    "SELECT null_frac, most_common_vals::text::{array} AS mcv, most_common_freqs, "
    "histogram_bounds::text::{array} AS bounds FROM pg_stats "
    "WHERE schemaname = pg_catalog.current_schema() AND tablename = :t AND attname = :c"
)
_PG_SAMPLE = (
    "SELECT count(*), coalesce(sum(CASE WHEN {date_column} < :cutoff THEN 1 ELSE 0 END), 0) "
    "FROM {table} TABLESAMPLE SYSTEM (:percent) REPEATABLE (0)"
)
_RANGES = (
    "SELECT {key} AS aishell_k, CASE WHEN {date_column} < :cutoff THEN 1 ELSE 0 END "
    "AS aishell_old FROM {table} WHERE {ranges}"
)
_RANGE = "{key} BETWEEN :a{i} AND :b{i}"
PG_STATISTICS_SQL = (_PG_TABLE, _PG_HISTOGRAM, _PG_SAMPLE)
SAMPLE_SQL = _RANGES.replace("{ranges}", _RANGE.format(key="{key}", i=0))

SAMPLE_PAGES = 400
# The key ranges' estimate of the rows stands only within this factor of the engine's.
AGREE = 2.0
SAMPLE_RANGES = 32
SAMPLE_ROWS = 32
# PostgreSQL's statistics are used while fewer rows changed since ANALYZE than
# autovacuum's default analyze threshold (50 + 10% of the rows): past that autovacuum
# would analyze the table again, and the histogram may no longer describe it.
STALE_SHARE = 0.1
STALE_ROWS = 50
# The array types a histogram of each kind of date column is read back as.
_PG_ARRAY = {
    "timestamptz": "timestamptz[]",
    "timestamp": "timestamp[]",
    "date": "date[]",
    "epoch": "float8[]",
    "epoch_ms": "float8[]",
}


@dataclass(frozen=True)
class RowEstimate:
    """A table's rows and those older than the cutoff, estimated, and how."""

    rows: int
    older: int
    how: str


# remember(key, read): read(), or a reading an earlier step made (readings.py).
Remember = Callable[[Hashable, Callable[[], Any]], Any]


def count_older(
    ctx: ToolContext, params: Mapping[str, Any], column: DateColumn, cut: Any
) -> tuple[int, int]:
    """The table's rows, and those older than the cutoff, counted exactly in one scan."""
    total, older = ctx.connection.execute(
        text(fill_template(COUNT, params, ctx)), {"cutoff": column.bind(cut)}
    ).one()
    return int(total), int(older or 0)


def estimate_rows(
    conn: Connection,
    quote: Any,
    table: str,
    key: str,
    column: DateColumn,
    bound: Any,
    span: Callable[[], tuple[Any, Any]],
    remember: Remember,
) -> RowEstimate | None:
    """The rows of `table` and those whose date is before `bound` (the cutoff as the
    column's value); `key` is the table's walk key and `span()` its least and greatest
    value (read only where a sample needs it). None when there is no way to estimate
    but counting (a MySQL table whose key is not an integer, or an empty one).
    `remember(key, read)`: read() or what an earlier step read of the table (the
    statistics the count before a purge and the purge both estimate from)."""
    names = {"table": quote(table), "date_column": quote(column.column), "key": quote(key)}
    if conn.dialect.name == "postgresql":
        stats = remember("pg_class", lambda: conn.execute(text(_PG_TABLE), {"t": table}).one())
        found = _pg_statistics(conn, stats, table, column, bound, remember)
        if found is not None:
            return found
        return _pg_sample(conn, stats, names, bound)
    if family(conn.dialect.name) != "mysql":
        return None  # SQLite keeps no estimate worth the name: it is counted
    rows = int(
        remember("table_rows", lambda: conn.execute(text(_MYSQL_ROWS), {"t": table}).scalar()) or 0
    )
    if rows <= 0:
        return None
    low, high = span()
    if not (is_integer(low) and is_integer(high)):
        return None
    found = _key_ranges(conn, names, key, rows, bound, (int(low), int(high)))
    if not 1 / AGREE <= found.rows / rows <= AGREE:
        # Keys spread unevenly (long gaps, dense clusters) fool ranges of equal width;
        # the engine's own estimate, made from its pages, says so: count instead.
        return None
    return found


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_statistics(
    conn: Connection, stats: Any, table: str, column: DateColumn, bound: Any, remember: Remember
) -> RowEstimate | None:
    """From pg_class and pg_stats, as the planner reckons; None when they are missing or
    too many rows changed since ANALYZE."""
    reltuples = float(stats.reltuples)
    if reltuples < 0:
        return None  # never analyzed
    changed = int(stats.n_mod_since_analyze or 0)
    if changed > STALE_ROWS + STALE_SHARE * reltuples:
        return None
    histogram = remember(
        ("pg_stats", column.column),
        lambda: conn.execute(
            text(_PG_HISTOGRAM.format(array=_PG_ARRAY[column.kind])),
            {"t": table, "c": column.column},
        ).first(),
    )
    if histogram is None or (not histogram.mcv and not histogram.bounds):
        return None
    # The rows now: rows per page at ANALYZE, times the pages the table has now.
    relpages, pages = int(stats.relpages), int(stats.pages)
    rows = reltuples * pages / relpages if relpages > 0 else reltuples
    when = f"ANALYZE of {stats.analyzed:%Y-%m-%d %H:%M}" if stats.analyzed else "ANALYZE"
    return RowEstimate(
        round(rows),
        round(rows * _share_older(histogram, _number(bound))),
        f"PostgreSQL's statistics ({when}, {changed:,} rows changed since)",
    )


def _share_older(histogram: Any, cutoff: float) -> float:
    """The share of rows older than the cutoff, as the planner reckons a `<`: the most
    common values that are older, and the older part of the histogram of the rest
    (interpolated within its bucket)."""
    values = [_number(v) for v in histogram.mcv or []]
    freqs = [float(f) for f in histogram.most_common_freqs or []]
    share = sum(f for v, f in zip(values, freqs, strict=False) if v < cutoff)
    bounds = [_number(b) for b in histogram.bounds or []]
    rest = max(0.0, 1.0 - float(histogram.null_frac or 0) - sum(freqs))
    if len(bounds) < 2:
        return min(1.0, share)
    if cutoff <= bounds[0]:
        part = 0.0
    elif cutoff > bounds[-1]:
        part = 1.0
    else:
        i = max(n for n, b in enumerate(bounds) if b < cutoff)
        width = bounds[i + 1] - bounds[i]
        inside = (cutoff - bounds[i]) / width if width > 0 else 0.5
        part = (i + inside) / (len(bounds) - 1)
    return min(1.0, share + rest * part)


def _number(value: Any) -> float:
    """A date column's value on one scale, to compare and interpolate."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return float(value.toordinal() * 86_400)
    if isinstance(value, Decimal | int | float):
        return float(value)
    return float(str(value))


def _pg_sample(conn: Connection, stats: Any, names: Mapping[str, str], bound: Any) -> RowEstimate:
    """A block sample of about SAMPLE_PAGES pages (all of a smaller table)."""
    # Here, not at the top: every target's run imports this module, and psycopg costs
    # a SQLite or MySQL run about 60 ms.
    from psycopg.types.numeric import Float4

    pages = max(1, int(stats.pages))
    percent = min(100.0, 100.0 * SAMPLE_PAGES / pages)
    sampled, old = conn.execute(
        text(_PG_SAMPLE.format(**names)),
        # TABLESAMPLE takes a real, to which a double precision does not cast implicitly.
        {"cutoff": bound, "percent": Float4(percent)},
    ).one()
    scale = 100.0 / percent
    stale = "none" if float(stats.reltuples) < 0 else "stale"
    return RowEstimate(
        round(int(sampled) * scale),
        round(int(old) * scale),
        f"a block sample of {int(sampled):,} rows in about {min(pages, SAMPLE_PAGES):,} of "
        f"the table's {pages:,} pages (statistics: {stale})",
    )


# --- MySQL: key ranges --------------------------------------------------------------------


def _key_ranges(
    conn: Connection,
    names: Mapping[str, str],
    key: str,
    rows: int,
    bound: Any,
    span: tuple[int, int],
) -> RowEstimate:
    """SAMPLE_RANGES stretches of equal key width; from the start of each, a range of
    keys that should hold about SAMPLE_ROWS rows (by the engine's row estimate), read
    and scaled to its stretch."""
    low, high = span
    stretch = (high - low + 1) / SAMPLE_RANGES
    starts = sorted({low + int(i * stretch) for i in range(SAMPLE_RANGES)})
    ends = [*starts[1:], high + 1]
    # Keys per row, by the row estimate; a range never reaches past its stretch.
    density = max(1.0, (high - low + 1) / rows) if rows > 0 else 1.0
    width = max(1, math.ceil(SAMPLE_ROWS * density))
    ranges = [(start, min(end, start + width)) for start, end in zip(starts, ends, strict=True)]
    either = " OR ".join(_RANGE.format(key=names["key"], i=i) for i in range(len(ranges)))
    sql = _RANGES.format(ranges=either, **names)
    values: dict[str, Any] = {"cutoff": bound}
    for i, (a, b) in enumerate(ranges):
        values[f"a{i}"], values[f"b{i}"] = a, b - 1
    found = conn.execute(text(sql), values).all()
    total = older = 0.0
    for (a, b), end, start in zip(ranges, ends, starts, strict=True):
        inside = [int(r.aishell_old) for r in found if a <= r.aishell_k < b]
        scale = (end - start) / (b - a)
        total += len(inside) * scale
        older += sum(inside) * scale
    return RowEstimate(
        round(total),
        round(older),
        f"a sample of {len(found):,} rows in {len(ranges)} key ranges spread along {key}",
    )
