"""What a limit or an approval is judged on: a table's bytes and rows as measured, not
as the planner's statistics last saw them.

A table's statistics (PostgreSQL's reltuples, InnoDB's TABLE_ROWS) are as old as its
last ANALYZE, and a table written since, or never analyzed, can hold any number of rows
the catalog does not show. So:

- bytes are the table's files as they are now: PostgreSQL's pg_total_relation_size
  (table, indexes and TOAST); on MariaDB the file-per-table tablespace's file
  (INNODB_SYS_TABLESPACES), else DATA_LENGTH + INDEX_LENGTH, an estimate and said so;
  on SQLite dbstat's pages, which the catalog reads already.
- rows are bounded by the size where the size proves it: a PostgreSQL heap page holds at
  most (block size - 24) / 28 rows (MaxHeapTuplesPerPage, 291 for 8 kB pages), an
  InnoDB record takes at least 18 bytes of its file (a 5-byte header, the transaction
  id and the roll pointer). Where that bound is over the figure asked about, the rows
  are counted, and the count stops one row past it:
  `SELECT count(*) FROM (SELECT 1 FROM t LIMIT :n) s` reads at most n rows, so it
  says "exactly N" under the figure and "at least N" past it, at a cost the figure
  bounds. SQLite's dbstat rows are counted already.
- a count takes every row a step reads or rewrites, not only those the login sees: a
  MariaDB system-versioned table's history (FOR SYSTEM_TIME ALL); on PostgreSQL, a
  table whose row-level security is in force for the login cannot be counted so
  (VACUUM and ANALYZE read every row; the count, the policies' rows), and its rows are
  unknown (RowsHidden) where its heap does not bound them. A partitioned table or an
  inheritance parent is counted with its partitions or children, as its reads are.

Every statement is a read sent through the guard (the caller's `GuardedRead`): a read
the guard refuses (the table's row policy may run code that writes) leaves the rows
unknown, and an unknown figure is judged as over the limit: a person says yes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import StatementRefused
from aishell.guard.connection import Guard, guarded
from aishell.guard.memory import GuardMemory
from aishell.policy.mysqlsizes import mysql_sizes
from aishell.sqltext import quote_identifier, text
from aishell.targets.lockholders import is_lock_timeout

if TYPE_CHECKING:
    from aishell.tool.readings import TableReadings

_T = TypeVar("_T")

# A PostgreSQL heap page: a 24-byte header, then per row a line pointer (4 bytes) and
# at least a 24-byte tuple header (MaxHeapTuplesPerPage in htup_details.h).
_PG_PAGE_HEADER = 24
_PG_LEAST_PER_ROW = 28
# An InnoDB clustered index record takes at least its 5-byte header, the 6-byte
# transaction id and the 7-byte roll pointer of its file's bytes.
_INNODB_LEAST_PER_ROW = 18

# The heap's size alone bounds a table's rows, and reads only the table: the row
# limits' reads take it; its indexes and TOAST relations are opened only where the whole
# size is kept (an approval's subject: executor/covered.py). On a new session the server
# builds a cache entry for each relation it opens: 0.12 s for 10,000 heaps, 0.77 s with
# their indexes and TOAST.
_PG_SIZES = """
/* aishell measure */ SELECT c.relname AS name, c.relkind AS kind, c.relhassubclass AS parent,
       pg_catalog.pg_relation_size(c.oid) AS heap,{total}
       pg_catalog.current_setting('block_size')::bigint AS block
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
  AND c.relname = ANY(CAST(:names AS text[]))
"""
_PG_HEAP_SIZES = _PG_SIZES.replace("{total}", "")
_PG_WHOLE_SIZES = _PG_SIZES.replace(
    "{total}", "\n       pg_catalog.pg_total_relation_size(c.oid) AS total,"
)
_COUNT = "/* aishell measure */ SELECT count(*) FROM (SELECT 1 FROM {table}{every} LIMIT :n) s"
# A count sees the rows the login may read; a step's work reads or rewrites them all.
# PostgreSQL: row-level security in force for the login hides rows from the count (not
# from VACUUM, ANALYZE or a rebuild), asked in the count's own statement.
_PG_COUNT = (
    "/* aishell measure */ SELECT pg_catalog.row_security_active(CAST(:t AS "
    "pg_catalog.regclass)), (SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT :n) s)"
)
# MariaDB keeps a system-versioned table's history in the table itself: a rebuild
# (ALTER TABLE ... FORCE, OPTIMIZE) rewrites those rows too, which only FOR SYSTEM_TIME
# ALL counts (an error on any other table, hence the look first).
_MARIADB_VERSIONED = (
    "/* aishell measure */ SELECT TABLE_TYPE = 'SYSTEM VERSIONED' FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
)


class RowsHidden(StatementRefused):
    """A count of a table's rows would not see them all (row-level security hides some
    from the login): the rows are unknown, judged as over a limit."""


@dataclass(frozen=True)
class TableSize:
    """A table's bytes now, and the most rows they can hold (None: no bound). On
    PostgreSQL `bytes` is its heap's alone unless its whole size was read (read_sizes)."""

    bytes: int | None
    estimated: bool = False
    most_rows: int | None = None
    # Rows the size reading counted (SQLite's dbstat), when it did.
    rows: int | None = None


@dataclass(frozen=True)
class _Held(TableSize):
    """What a table's size reading gives when another session holds the table past the
    lock wait: no size, and the lock's error."""

    error: DBAPIError | None = None


@dataclass(frozen=True)
class TableMeasure:
    """A table's rows and bytes as measured: `rows` exact, or at least that many when
    `at_least`; at most `most_rows` where only its size bounds them; `unknown` says
    why neither could be read."""

    rows: int | None = None
    at_least: bool = False
    most_rows: int | None = None
    bytes: int | None = None
    bytes_estimated: bool = False
    unknown: str = ""

    def over(self, limit: int) -> bool | None:
        """Whether the table has more rows than `limit`; None when not known."""
        if self.rows is not None and self.rows > limit:
            return True
        if self.rows is not None and not self.at_least:
            return False
        if self.most_rows is not None and self.most_rows <= limit:
            return False
        return None

    @property
    def shown(self) -> str:
        """'N rows', 'at least N rows', 'at most N rows', as measured."""
        if self.rows is not None:
            return f"{'at least ' if self.at_least else ''}{self.rows:,} rows"
        if self.most_rows is not None:
            return f"at most {self.most_rows:,} rows"
        return "an unmeasured number of rows"

    def to_dict(self) -> dict[str, Any]:
        """As an approval's subject keeps it (covered.py)."""
        found: dict[str, Any] = {"rows": self.rows, "bytes": self.bytes}
        if self.at_least:
            found["rows_at_least"] = True
        if self.most_rows is not None:
            found["rows_at_most"] = self.most_rows
        if self.bytes_estimated:
            found["bytes_estimated"] = True
        if self.unknown:
            found["unknown"] = self.unknown
        return found


class GuardedRead(Protocol):
    """Runs a read on the target's connection under the guard; raises StatementRefused
    when the guard refuses one of its statements."""

    def __call__(self, read: Callable[[Connection], _T]) -> _T: ...


class CatalogSizes(Protocol):
    """What the target's catalog (tables.py) holds of a table: its figures as read."""

    def rows(self, table: str) -> int | None: ...

    def size(self, table: str) -> int | None: ...

    def __contains__(self, table: object) -> bool: ...


# {table: measure} of the tables named, each counted up to one row past the limit.
Measure = Callable[[Sequence[str], int], dict[str, TableMeasure]]


def measurer(
    dialect: str,
    read: GuardedRead,
    catalog: CatalogSizes,
    readings: TableReadings | None = None,
    held: dict[str, DBAPIError | None] | None = None,
) -> Measure:
    """A measure of tables for a limit: sizes of every table the plan names in one
    read (`readings`: shared by the run's steps; kept while no step writes to a table
    and for a minute), a count only for a table whose size does not settle it.

    A table another session holds past the lock wait is not measured: it goes into
    `held` with the lock's error, and the step may not do it (executor/prepare.py
    leaves it out of a shared step, or fails the step on that error, retried as a lock
    wait is), as its rows were never counted against the limit."""

    def measure(tables: Sequence[str], limit: int) -> dict[str, TableMeasure]:
        sizes = _sizes(dialect, read, catalog, tables, readings)
        measured = {}
        for table in tables:
            size = sizes.get(table)
            if isinstance(size, _Held):
                if held is not None:
                    held[table] = size.error
                continue
            try:
                measured[table] = measure_rows(dialect, read, catalog, table, size, limit)
            except DBAPIError as exc:
                # Its size was read (from the catalog, or a partitioned table's own), but
                # its rows, to be counted, are held: as held as a size that was.
                if exc.connection_invalidated or not is_lock_timeout(exc):
                    raise
                if held is not None:
                    held[table] = exc
        return measured

    return measure


# The key of a table's size in the run's readings (tool/readings.py).
MEASURED_SIZE = "measured_size"


def measure_rows(
    dialect: str,
    read: GuardedRead,
    catalog: CatalogSizes,
    table: str,
    size: TableSize | None,
    limit: int,
) -> TableMeasure:
    """The table's rows against `limit`: proved under by its size, else counted up to one
    row past the limit (a read the guard refuses: unknown)."""
    if size is None:
        return TableMeasure(unknown=f"table {table!r} is not in the catalog")
    known = TableMeasure(bytes=size.bytes, bytes_estimated=size.estimated, most_rows=size.most_rows)
    if size.rows is not None:
        return TableMeasure(rows=size.rows, bytes=size.bytes, bytes_estimated=size.estimated)
    if size.most_rows is not None and size.most_rows <= limit:
        return known
    if table not in catalog:  # only a name the catalog holds is quoted into a count
        return TableMeasure(unknown=f"table {table!r} is not in the catalog")
    try:
        counted = read(lambda conn: bounded_count(conn, table, limit + 1))
    except StatementRefused as exc:
        return TableMeasure(
            bytes=size.bytes, bytes_estimated=size.estimated, unknown=str(exc).strip()
        )
    except DBAPIError as exc:
        # A table the server cannot read (a discarded tablespace, a damaged page): its
        # rows are unknown, so the step needs a person's yes; a lost server or a table
        # held past the lock wait is the step's, as any read's.
        if exc.connection_invalidated or is_lock_timeout(exc):
            raise
        said = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        unknown = f"the server could not count them ({said[0] if said else 'no reason given'})"
        return TableMeasure(bytes=size.bytes, bytes_estimated=size.estimated, unknown=unknown)
    at_least = counted > limit
    return TableMeasure(
        rows=counted,
        at_least=at_least,
        most_rows=None if at_least else size.most_rows,
        bytes=size.bytes,
        bytes_estimated=size.estimated,
    )


def bounded_count(conn: Connection, table: str, most: int) -> int:
    """The table's rows, every one a step on it reads or rewrites (a system-versioned
    table's history too), reading at most `most` of them (the name is one the caller
    checked against the catalog, quoted by the dialect; the bound is a bound value).
    RowsHidden where the login cannot see them all (row-level security)."""
    quoted, bound = quote_identifier(conn.dialect, table), {"n": max(most, 0)}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        hidden, counted = conn.execute(
            text(_PG_COUNT.replace("{table}", quoted)), {**bound, "t": quoted}
        ).one()
        if hidden:
            raise RowsHidden(
                f"row-level security hides rows of {table!r} from this login (not the "
                "table's owner, or the table forces it, and no BYPASSRLS), and its size "
                "does not bound them"
            )
        return int(counted)
    every = ""
    if family(dialect) == "mysql" and conn.execute(text(_MARIADB_VERSIONED), {"t": table}).scalar():
        every = " FOR SYSTEM_TIME ALL"
    sql = _COUNT.replace("{table}", quoted).replace("{every}", every)
    return int(conn.execute(text(sql), bound).scalar_one())


def read_sizes(
    conn: Connection, tables: Sequence[str], catalog: CatalogSizes, whole: bool = True
) -> dict[str, TableSize]:
    """The tables' sizes as they are now, in one query (SQLite: the catalog's dbstat).
    `whole`: on PostgreSQL each table's size with its indexes and TOAST; False: its
    heap's alone, which is all that bounds its rows (the row limits' reads)."""
    if not tables:
        return {}
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = _PG_WHOLE_SIZES if whole else _PG_HEAP_SIZES
        rows = conn.execute(text(sql), {"names": list(tables)})
        return {r.name: _pg_size(r, whole) for r in rows}
    if family(dialect) == "mysql":
        return {
            name: TableSize(size, estimated=estimated, most_rows=most)
            for name, (size, estimated, most) in mysql_sizes(conn, tables).items()
        }
    return _sqlite_sizes(tables, catalog)


def _pg_size(r: Any, whole: bool) -> TableSize:
    size = int((r.total if whole else r.heap) or 0)
    if r.kind != "r" or r.parent:
        # A partitioned table's rows are in its partitions, and an inheritance parent's
        # reads (count(*), ANALYZE) take its children's: its heap bounds none of them.
        return TableSize(size)
    per_page = (int(r.block) - _PG_PAGE_HEADER) // _PG_LEAST_PER_ROW
    return TableSize(size, most_rows=int(r.heap) // int(r.block) * per_page)


def _sqlite_sizes(tables: Sequence[str], catalog: CatalogSizes) -> dict[str, TableSize]:
    """dbstat's pages and leaf cells, as the catalog read them; without dbstat (bytes
    None) the rows are sqlite_stat1's estimate, so they are counted."""
    sizes: dict[str, TableSize] = {}
    for table in tables:
        if table not in catalog:
            continue
        size = catalog.size(table)
        sizes[table] = TableSize(size, rows=catalog.rows(table) if size is not None else None)
    return sizes


def _sizes(
    dialect: str,
    read: GuardedRead,
    catalog: CatalogSizes,
    tables: Sequence[str],
    readings: TableReadings | None,
) -> dict[str, TableSize]:
    if dialect == "sqlite":
        return _sqlite_sizes(tables, catalog)
    if readings is None:
        return read(lambda conn: read_sizes(conn, tables, catalog, whole=False))

    def together(names: Sequence[str]) -> dict[str, TableSize]:
        return read(lambda conn: _sizes_or_none(conn, names, catalog))

    found: dict[str, TableSize] = {}
    for table in tables:
        alone = partial(_one_size, read, catalog, table, readings)
        size = readings.get_each(table, MEASURED_SIZE, alone, together)
        if size is not None:
            found[table] = size
    return found


def _sizes_or_none(
    conn: Connection, names: Sequence[str], catalog: CatalogSizes
) -> dict[str, TableSize]:
    """The sizes of many tables in one query, or none when the server refused it (a table
    held by another session past the lock wait): each is then read alone, and is held
    alone. A lost server is raised: the step's failure, never an empty answer."""
    try:
        return read_sizes(conn, names, catalog, whole=False)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        with suppress(DBAPIError):
            conn.rollback()
        return {}


def _one_size(
    read: GuardedRead, catalog: CatalogSizes, table: str, readings: TableReadings
) -> TableSize | None:
    """The table's size alone; _Held when another session holds it past the lock wait
    (or a preview found it held before: tool/readings.py)."""
    known = readings.held(table)
    if isinstance(known, DBAPIError):
        return _Held(None, error=known)
    try:
        return read(lambda conn: read_sizes(conn, [table], catalog, whole=False)).get(table)
    except DBAPIError as exc:
        if exc.connection_invalidated or not is_lock_timeout(exc):
            raise
        readings.found_held(table, exc)
        return _Held(None, error=exc)


# A table grown by fewer rows than this past what a plan assumed is not counted for it:
# the catalog's own estimates show such drift where they are current, and small tables
# (whose size bounds their rows) cost no count.
PLAN_SLACK_ROWS = 1_000


def grown_past(
    conn: Connection,
    catalog: CatalogSizes,
    assumed: Mapping[str, Any],
    tolerance: float,
    trusted: tuple[str, ...] = (),
) -> list[str]:
    """The tables measured to hold more rows than a plan assumed (`assumed`: {table:
    rows}), by more than `tolerance` of them and PLAN_SLACK_ROWS: their sizes in one
    query, a count up to that bound only where the size does not settle it. `trusted`:
    the target's trusted_functions, which the count's guard takes as a run's does."""
    tables = [t for t, rows in assumed.items() if isinstance(rows, int) and t in catalog]
    if not tables:
        return []
    read = connection_reads(conn, "checking the plan's tables", GuardMemory(trusted=trusted))
    sizes = read(lambda c: read_sizes(c, tables, catalog, whole=False))
    found = []
    for table in tables:
        then = int(assumed[table])
        bound = then + max(int(tolerance * max(then, 1)), PLAN_SLACK_ROWS)
        measured = measure_rows(conn.dialect.name, read, catalog, table, sizes.get(table), bound)
        over = measured.over(bound)
        if over:
            found.append(f"'{table}' has {measured.shown}, the plan assumed {then:,}")
        elif over is None:
            found.append(
                f"the rows of '{table}' could not be counted against the plan's {then:,} "
                f"({measured.unknown or 'its size does not bound them'})"
            )
    return found


# --- the guard on a connection that runs no step ---------------------------------------

# Where connection_measure keeps what its guards learned, in the cache a preview's steps
# share: the server's catalog is asked what may make a read write once, not per step.
_GUARD_MEMORY = "measured.guard_memory"


def connection_measure(
    conn: Connection,
    catalog: CatalogSizes,
    readings: TableReadings | None,
    shared: dict[str, Any],
    trusted: tuple[str, ...] = (),
    memory: GuardMemory | None = None,
) -> Measure:
    """A measure on a connection outside any run (a plan's preview): `shared` is the
    cache the preview's steps share; `trusted`, the target's trusted_functions, which
    the guard takes here as in a run; `memory`, what the preview's own guards learned,
    shared as a run's guards share theirs."""
    if memory is None:
        memory = shared.setdefault(_GUARD_MEMORY, GuardMemory(trusted=trusted))
    read = connection_reads(conn, "measuring a table for its row limit", memory)
    return measurer(conn.dialect.name, read, catalog, readings)


def connection_reads(
    conn: Connection, label: str, memory: GuardMemory | None = None
) -> GuardedRead:
    """Reads on a connection outside any step (a preview, `apply`'s check of its plan),
    each statement passed by a guard of its own that lets no write through."""
    return _ConnectionReads(conn, label, memory or GuardMemory())


class _ConnectionReads:
    def __init__(self, conn: Connection, label: str, memory: GuardMemory) -> None:
        self.conn, self.label, self.memory = conn, label, memory

    def __call__(self, read: Callable[[Connection], _T]) -> _T:
        with guarded(self.conn, Guard(label=self.label, memory=self.memory)):
            return read(self.conn)
