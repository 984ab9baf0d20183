"""The target's tables as a plan or a run knows them: names, row estimates, sizes and
indexes read in one query however many tables there are, and columns in one more when a
step names a column. Kept in memory; after a step that may have changed its tables,
only those are read again, in one query, when they are next needed."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause

from aishell.dialects import family
from aishell.errors import TargetError
from aishell.sqltext import quote_identifier, text
from aishell.targets.catalog import (
    refuse_matview,
    refuse_shadow,
    require_column,
    sqlite_name,
    sqlite_reads_whole_file,
    sqlite_shadows_sql,
    sqlite_text_as_bytes,
)
from aishell.targets.mysqltables import read_mysql

# Each query says what it is (/* aishell catalog */), for a DBA reading the server's
# log or pg_stat_statements, and for the tests that count them.
# Sizes come from pg_class's page counts (as of the last VACUUM or ANALYZE), not from
# pg_total_relation_size, which takes a lock and would wait behind a held one. The live
# rows of a table never analyzed come from the statistics function itself: the
# pg_stat_user_tables view computes a dozen figures per table (ten times the time).
# The indexes joined and grouped by table, not looked up by two subqueries a table: a
# third less of the server's time for a thousand tables. Grouped by every column it
# shows, as PostgreSQL before 14 (no primary key on pg_class) requires.
# A table's bytes: its and its indexes' pages as VACUUM or ANALYZE last counted them,
# times how many more rows the statistics counters see now than were counted then (a
# table filled a hundredfold since is not the size it was: the planner reads it so too).
# One never counted (no pages) that has rows is its rows times their columns' widths
# (a variable one taken for 32 bytes). The catalog alone: measuring a file opens the
# relation, and waits behind a lock another session holds on it.
_PG_TABLES = """
/* aishell catalog */ SELECT c.relname AS name,
       CASE WHEN c.reltuples >= '0'::pg_catalog.float4 THEN c.reltuples::bigint
            ELSE pg_catalog.pg_stat_get_live_tuples(c.oid) END AS rows,
       CASE WHEN c.relpages = 0 AND pg_catalog.pg_stat_get_live_tuples(c.oid) > 0
            THEN pg_catalog.pg_stat_get_live_tuples(c.oid) * (SELECT 28 + pg_catalog.sum(
                     CASE WHEN a.attlen > 0 THEN a.attlen ELSE 32 END)::bigint
                 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
            ELSE ((c.relpages + coalesce(pg_catalog.sum(i.relpages), 0))::pg_catalog.float8
                  * pg_catalog.current_setting('block_size')::pg_catalog.float8
                  * GREATEST('1'::pg_catalog.float8,
                             CASE WHEN c.reltuples > '0'::pg_catalog.float4
                                  THEN pg_catalog.pg_stat_get_live_tuples(c.oid)::pg_catalog.float8
                                       / c.reltuples::pg_catalog.float8
                                  ELSE '1'::pg_catalog.float8 END))::bigint
       END AS bytes,
       coalesce(pg_catalog.array_agg(i.relname::text ORDER BY i.relname)
                FILTER (WHERE i.oid IS NOT NULL), '{}') AS indexes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index x ON x.indrelid = c.oid
LEFT JOIN pg_class i ON i.oid = x.indexrelid
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema() {only}
GROUP BY c.oid, c.relname, c.reltuples, c.relpages
"""
_PG_ONLY = "AND c.relname = ANY(CAST(:names AS text[]))"
_PG_COLUMNS = """
/* aishell catalog */ SELECT c.relname AS tbl, a.attname AS name
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
  AND c.relname = ANY(CAST(:names AS text[])) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""

_MYSQL_COLUMNS = """
/* aishell catalog */ SELECT TABLE_NAME AS tbl, COLUMN_NAME AS name FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names
ORDER BY TABLE_NAME, ORDINAL_POSITION
"""

# Tables, their indexes, and each one's pages from dbstat: bytes, and leaf cells, which
# for a table are its rows (a WITHOUT ROWID table keeps a few more in inner pages), so
# no count(*) per table and no stale sqlite_stat1 estimate. dbstat reads the pages of
# the objects named, and only those when the query names them.
_SQLITE_TABLES = """
/* aishell catalog */ SELECT 'table' AS kind, name, tbl_name AS tbl, NULL AS bytes, NULL AS cells
FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' {only}
UNION ALL
SELECT 'index', name, tbl_name, NULL, NULL FROM sqlite_schema
WHERE type = 'index' AND (name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                          OR name LIKE 'sqlite\\_autoindex%' ESCAPE '\\') {only}
UNION ALL
SELECT 'shadow', name, owner, NULL, NULL FROM ({shadows})
{sizes}
"""
_SQLITE_ONLY = "AND tbl_name IN :names"
_SQLITE_SIZES = """
UNION ALL
SELECT 'size', name, NULL, sum(pgsize),
       sum(CASE WHEN pagetype = 'leaf' THEN ncell ELSE 0 END)
FROM dbstat {only} GROUP BY name
"""
_SQLITE_SIZES_ONLY = "WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name IN :names)"


# Without dbstat (an SQLite built without it): sqlite_stat1's estimates, else count(*).
_SQLITE_STAT1 = "SELECT tbl, stat FROM sqlite_stat1"
# Generated columns too (table_info leaves them out); hidden 1 is a virtual table's
# hidden column (FTS5's rank), which no step names.
_SQLITE_COLUMNS = """
/* aishell catalog */
SELECT m.name AS tbl, p.name AS name FROM sqlite_schema m JOIN pragma_table_xinfo(m.name) p
WHERE m.type = 'table' AND m.name IN :names AND p.hidden <> 1
ORDER BY m.name, p.cid
"""
# SQLite's limit on the terms of one compound SELECT, for counts without dbstat.
_SQLITE_COMPOUND = 500


@dataclass
class TableFacts:
    """One table: the catalog's row estimate, bytes with its indexes, its indexes; on
    MySQL and MariaDB its row of TABLES as read (mysqltables.py)."""

    rows: int | None
    bytes: int | None
    indexes: list[str] = field(default_factory=list)
    figures: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "bytes": self.bytes, "indexes": list(self.indexes)}


class TableCatalog:
    """The user tables of one target, read once and kept; see the module's docstring."""

    def __init__(self, dialect: str, tables: dict[str, TableFacts]) -> None:
        self.dialect = dialect
        self.tables = tables
        self._names: list[str] | None = None
        # Tables a step may have changed, read again before anything uses them.
        self._stale: set[str] = set()
        # False after a step that may have changed any table: all are read again.
        self._current = True
        self._columns: dict[str, list[str]] = {}
        # Tables whose columns the next columns query reads too (the plan's purge tables).
        self._wanted_columns: set[str] = set()
        # SQLite tables whose names are not UTF-8, as shown (bad bytes as \\xNN): left
        # out of the catalog, so no step names them.
        self.unreadable: list[str] = []
        # Tables it held that a later read found gone: dropped since the run read them.
        self.dropped: set[str] = set()
        # When every table was last read (time.monotonic()).
        self.read_at = time.monotonic()

    @classmethod
    def read(cls, conn: Connection) -> TableCatalog:
        """Every user table of the target, in a constant number of queries."""
        unreadable: list[str] = []
        started = time.monotonic()
        catalog = cls(conn.dialect.name, _read(conn, None, unreadable))
        catalog.unreadable = unreadable
        catalog.read_at = started
        return catalog

    @property
    def names(self) -> list[str]:
        """The tables' names, sorted."""
        if self._names is None:
            self._names = sorted(self.tables)
        return self._names

    def __contains__(self, table: object) -> bool:
        return table in self.tables

    def rows(self, table: str) -> int | None:
        """The catalog's row estimate (0 for a table it does not hold)."""
        facts = self.tables.get(table)
        return 0 if facts is None else facts.rows

    def size(self, table: str) -> int | None:
        """Bytes the table and its indexes occupy; None where the database cannot say."""
        facts = self.tables.get(table)
        return None if facts is None else facts.bytes

    def fresh_figures(self, max_age: float) -> tuple[float, dict[str, dict[str, Any]]]:
        """When every table was read, and the server's figures (TableFacts.figures) of
        those no step changed since, where that read is at most `max_age` seconds old
        (else none): what another read of the same figures would find, without it."""
        if not self._current or time.monotonic() - self.read_at > max_age:
            return self.read_at, {}
        return self.read_at, {
            name: facts.figures
            for name, facts in self.tables.items()
            if facts.figures is not None and name not in self._stale
        }

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every table as {name: {rows, bytes, indexes}}, sorted by name."""
        return {name: self.tables[name].to_dict() for name in self.names}

    # --- what a step changed ---------------------------------------------------------

    def changed(self, tables: Iterable[str]) -> None:
        """A step may have changed these tables (or, given none, any table)."""
        tables = list(tables)
        if not tables:
            self._current = False
            self._columns.clear()
            return
        self._stale.update(tables)
        for table in tables:
            self._columns.pop(table, None)

    def current(self, conn: Connection, tables: Iterable[str]) -> None:
        """Make what the catalog holds of these tables current: after a step that may
        have changed any table, all are read again; else the stale ones among these, in
        one query."""
        tables = list(tables)
        if not tables:  # nothing to make current
            return
        if not self._current:
            self.unreadable = []
            started = time.monotonic()
            self._replace(_read(conn, None, self.unreadable))
            self.read_at = started
            return
        stale = sorted(self._stale.intersection(tables))
        if stale:
            self._merge(stale, _read(conn, stale))

    # --- names checked against the catalog --------------------------------------------

    def check_tables(
        self, conn: Connection, target: str, tables: Sequence[str], *, dropped_ok: bool = False
    ) -> None:
        """Every name must be a user table (`dropped_ok`: or one dropped since the catalog
        held it); the error lists the ones there are. A name the catalog lacks is looked
        up once more (an earlier step may have made it)."""
        for table in tables:
            if not table.isascii() and not _utf8(table):  # invalid bytes on a command line
                raise TargetError(
                    f"Table name {table!r} is not valid UTF-8 text; no table can have it here"
                )
        self.current(conn, tables)
        missing = sorted({t for t in tables if t not in self.tables})
        if missing:
            self._merge(missing, _read(conn, missing))
        for table in tables:
            if table not in self.tables and not (dropped_ok and table in self.dropped):
                refuse_shadow(conn, table)
                refuse_matview(conn, table)
                known = self.names
                listing = ", ".join(known[:50]) + (" ..." if len(known) > 50 else "")
                raise TargetError(
                    f"Table {table!r} not found in target '{target}'; "
                    f"tables are: {listing or '(none)'}"
                )

    def held_before(self, names: Iterable[str]) -> None:
        """Tables an earlier read held (the plan's, made by another process): those this
        catalog lacks were dropped since, as if it had read them itself."""
        self.dropped.update(t for t in names if t not in self.tables)

    def gone(self, conn: Connection, tables: Sequence[str]) -> list[str]:
        """Those of these tables the catalog held and the server no longer has, looked
        up now (after a step's failure): dropped since the run read them. A name it
        never held is not among them: that is a wrong name, not a dropped table."""
        known = [t for t in tables if t in self.tables or t in self.dropped]
        if known:
            self._merge(known, _read(conn, known))
        return [t for t in tables if t in self.dropped]

    def want_columns(self, tables: Iterable[str]) -> None:
        """Read these tables' columns with the next columns query."""
        self._wanted_columns.update(tables)

    def columns(self, conn: Connection, table: str) -> list[str]:
        """A table's column names, in order; read in one query with those wanted."""
        if table not in self._columns:
            names = sorted({table} | (self._wanted_columns - set(self._columns)))
            found = _columns(conn, names)
            for name in names:
                self._columns[name] = found.get(name, [])
        return self._columns[table]

    def check_column(self, conn: Connection, table: str, column: str) -> None:
        require_column(table, column, self.columns(conn, table))

    def _replace(self, tables: dict[str, TableFacts]) -> None:
        self.dropped.update(t for t in self.tables if t not in tables)
        self.dropped.difference_update(tables)
        self.tables = tables
        self._names = None
        self._stale.clear()
        self._current = True

    def _merge(self, names: Collection[str], found: dict[str, TableFacts]) -> None:
        """What one query found of `names`: those it did not find are gone."""
        for name in names:
            if name in found:
                if name not in self.tables:
                    self._names = None
                self.tables[name] = found[name]
                self.dropped.discard(name)
            elif self.tables.pop(name, None) is not None:
                self._names = None
                self.dropped.add(name)
            self._stale.discard(name)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read(
    conn: Connection, names: Sequence[str] | None, unreadable: list[str] | None = None
) -> dict[str, TableFacts]:
    """The tables (all, or only `names`) with their figures and indexes; SQLite tables
    whose names are not UTF-8 are left out and listed in `unreadable`."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _read_postgresql(conn, names)
    if family(dialect) == "mysql":
        return {
            name: TableFacts(int(t.figures["row_count"]), t.bytes, t.indexes, t.figures)
            for name, t in read_mysql(conn, names).items()
        }
    with sqlite_text_as_bytes(conn):
        return _read_sqlite(conn, names, [] if unreadable is None else unreadable)


def _query(sql: str, only: str, names: Sequence[str] | None, expanding: bool) -> TextClause:
    statement = text(sql.replace("{only}", "" if names is None else only))
    if names is not None and expanding:
        statement = statement.bindparams(bindparam("names", expanding=True))
    return statement


def _read_postgresql(conn: Connection, names: Sequence[str] | None) -> dict[str, TableFacts]:
    params = {} if names is None else {"names": list(names)}
    rows = conn.execute(_query(_PG_TABLES, _PG_ONLY, names, False), params)
    return {name: TableFacts(int(n), int(size), indexes) for name, n, size, indexes in rows}


def _read_sqlite(
    conn: Connection, names: Sequence[str] | None, unreadable: list[str]
) -> dict[str, TableFacts]:
    """Under sqlite_text_as_bytes: every name is decoded here, and a table whose name
    is not UTF-8 is left out with its indexes and sizes."""
    if names is not None and not names:
        return {}
    params = {} if names is None else {"names": list(names)}
    # The whole file's sizes serve too: only the named tables' are kept below.
    whole = names is None or sqlite_reads_whole_file(conn, len(names))
    sizes = _SQLITE_SIZES.replace("{only}", "" if whole else _SQLITE_SIZES_ONLY)
    try:
        raw = conn.execute(_sqlite_query(sizes, names), params).all()
        sized = True
    except DBAPIError:  # an SQLite without dbstat
        raw = conn.execute(_sqlite_query("", names), params).all()
        sized = False
    rows = _decoded(raw, unreadable)
    # A virtual table's shadow tables are its module's, no user table (catalog.py).
    shadows = {n for k, n, *_ in rows if k == "shadow"}
    tables = {
        n: TableFacts(None, 0 if sized else None)
        for k, n, *_ in rows
        if k == "table" and n not in shadows
    }
    owner = {n: t for k, n, t, *_ in rows if k == "index" and t is not None}
    for index, table in sorted(owner.items()):
        if table in tables:
            tables[table].indexes.append(index)
    for kind, name, _, size, cells in rows:
        if kind != "size":
            continue
        facts = tables.get(owner.get(name, name))
        if facts is not None and facts.bytes is not None:
            facts.bytes += int(size or 0)
        if name in tables:
            tables[name].rows = int(cells or 0)
    if not sized:
        _sqlite_estimates(conn, tables)
    return tables


_Row = tuple[str, str, str | None, Any, Any]


def _decoded(raw: Sequence[Any], unreadable: list[str]) -> list[_Row]:
    """The catalog's rows with their names decoded; a row naming a table or an index
    whose name is not UTF-8 is dropped (the table's name listed in `unreadable`)."""
    rows: list[_Row] = []
    for r in raw:
        kind = sqlite_name(r.kind) or ""
        name = sqlite_name(r.name, unreadable if kind == "table" else None)
        owner = sqlite_name(r.tbl)
        if name is not None and (owner is not None or r.tbl is None):
            rows.append((kind, name, owner, r.bytes, r.cells))
    return rows


def _sqlite_query(sizes: str, names: Sequence[str] | None) -> TextClause:
    sql = _SQLITE_TABLES.replace("{sizes}", sizes).replace("{shadows}", sqlite_shadows_sql())
    return _query(sql, _SQLITE_ONLY, names, True)


def _sqlite_estimates(conn: Connection, tables: dict[str, TableFacts]) -> None:
    """Row estimates from sqlite_stat1 where it has them, else count(*)."""
    has_stat1 = conn.execute(
        text("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_stat1'")
    ).scalar_one()
    if has_stat1:
        for tbl, stat in conn.execute(text(_SQLITE_STAT1)):
            facts = tables.get(sqlite_name(tbl) or "")
            if stat and facts is not None and facts.rows is None:
                facts.rows = int(bytes(stat).split()[0])
    uncounted = [name for name, facts in tables.items() if facts.rows is None]
    for name, count in _sqlite_counts(conn, uncounted).items():
        tables[name].rows = count


def _sqlite_counts(conn: Connection, tables: list[str]) -> dict[str, int]:
    """count(*) of tables nothing else could estimate, many to a query."""
    counts: dict[str, int] = {}
    for start in range(0, len(tables), _SQLITE_COMPOUND):
        chunk = tables[start : start + _SQLITE_COMPOUND]
        sql = " UNION ALL ".join(
            f"SELECT {i} AS n, count(*) AS c FROM {quote_identifier(conn.dialect, t)}"
            for i, t in enumerate(chunk)
        )
        for row in conn.execute(text(sql)):
            counts[chunk[row.n]] = int(row.c)
    return counts


def _columns(conn: Connection, names: list[str]) -> dict[str, list[str]]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement = text(_PG_COLUMNS)
    else:
        sql = _MYSQL_COLUMNS if family(dialect) == "mysql" else _SQLITE_COLUMNS
        statement = text(sql).bindparams(bindparam("names", expanding=True))
    found: dict[str, list[str]] = {}
    if dialect == "sqlite":
        with sqlite_text_as_bytes(conn):
            rows = [
                (sqlite_name(t), sqlite_name(n))
                for t, n in conn.execute(statement, {"names": names})
            ]
        for table, column in rows:
            # A column whose name is not UTF-8 is left out: no step can name it.
            if table is not None and column is not None:
                found.setdefault(table, []).append(column)
        return found
    for row in conn.execute(statement, {"names": names}):
        found.setdefault(row.tbl, []).append(row.name)
    return found
