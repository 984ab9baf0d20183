"""What the handlers and commands read of a target's catalog: its tables (and SQLite's
shadow tables, which are none), one table's columns, the kinds of a SQLite column's
values, how soon each table needs maintenance. The partitions of its partitioned
tables are in partitions.py; the tables with their figures, as planning and a run keep
them, in tablecatalog.py; who holds a lock, in lockholders.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.errors import TargetError
from aishell.sqltext import quote_identifier, text
from aishell.targets.mysqltables import read_mysql


@contextmanager
def sqlite_text_as_bytes(conn: Connection) -> Iterator[None]:
    """SQLite text comes back as its bytes for the queries inside. SQLite keeps a name
    as the bytes it was given, which need not be UTF-8; decoded as a whole, one such
    name fails the whole query, so catalog queries read bytes and decode each name."""
    dbapi: Any = conn.connection.dbapi_connection
    before = dbapi.text_factory
    dbapi.text_factory = bytes
    try:
        yield
    finally:
        dbapi.text_factory = before


def sqlite_name(raw: object, unreadable: list[str] | None = None) -> str | None:
    """A name read under sqlite_text_as_bytes: its text, or None when it is not UTF-8
    (then added to `unreadable` as shown, its bad bytes as \\xNN). Such a table is left
    out, never named by a lossy decoding: a replacement character could name another."""
    if not isinstance(raw, bytes):
        return None if raw is None else str(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        if unreadable is not None:
            unreadable.append(raw.decode("utf-8", "backslashreplace"))
        return None


# Values from this on in a Unix-time column are milliseconds since 1970, not seconds
# (10^11 seconds is the year 5138; 10^11 milliseconds is 1973); nonzero values nearer 0
# are seconds. Values from NOT_A_TIME on (the year 318,857 in milliseconds) are neither,
# nor are 0 and special values (NaN, infinity): no cutoff in either unit reaches them.
MILLISECONDS_FROM = 10**11
NOT_A_TIME = 10**16
# A SQLite column's values by kind, in one CASE that stops at the first test a value
# passes (tests in a value's sum() are all run: ten times the time). Text in one of
# three ISO-8601 shapes compares as text with a cutoff of its shape (after a time, a
# fraction of a second and a Z sort as the moment they are; an offset would not).
# Numbers as SQLite's 'auto' modifier reads them: Julian days below 5373484.5 (the end
# of 9999), else Unix seconds, milliseconds from MILLISECONDS_FROM; 0 and numbers from
# NOT_A_TIME are no date's ("number"). Anything else is "other".
# Digits are where SQLite's date parser finds them: a GLOB of [0-9]s takes thrice as long.
_REST = "rtrim(substr({c}, 20), 'Z')"
_TIME = (
    "{c} GLOB '????-??-??{sep}??:??:??*' AND julianday({c}) IS NOT NULL "
    f"AND (length({{c}}) = 19 OR {_REST} = '' OR {_REST} GLOB '.[0-9]*' "
    f"AND substr({_REST}, 2) NOT GLOB '*[^0-9]*')"
)
_NUMBER = (
    "CASE WHEN {c} < 0 THEN 'epoch' WHEN {c} = 0 THEN 'number' "
    "WHEN {c} < 5373484.5 THEN 'julian' "
    f"WHEN {{c}} < {MILLISECONDS_FROM} THEN 'epoch' "
    f"WHEN {{c}} < {NOT_A_TIME} THEN 'epoch_ms' ELSE 'number' END"
)
_VALUE_KIND = (
    "CASE typeof({c}) WHEN 'text' THEN CASE "
    f"WHEN {_TIME.replace('{sep}', ' ')} THEN 'text' "
    f"WHEN {_TIME.replace('{sep}', 'T')} THEN 'text_t' "
    "WHEN {c} GLOB '????-??-??' AND julianday({c}) IS NOT NULL THEN 'text_date' "
    "ELSE 'other' END "
    f"WHEN 'integer' THEN {_NUMBER} WHEN 'real' THEN {_NUMBER} ELSE 'other' END"
)
# Each kind as a person reads it.
SQLITE_VALUE_KINDS = {
    "text": "text YYYY-MM-DD HH:MM:SS",
    "text_t": "text YYYY-MM-DDTHH:MM:SS",
    "text_date": "text YYYY-MM-DD",
    "julian": "Julian days",
    "epoch": "Unix seconds",
    "epoch_ms": "Unix milliseconds",
    "number": "numbers of no date (0, 10^16 or more)",
    "other": "other values",
}


def sqlite_value_kinds(conn: Connection, table: str, column: str) -> set[str]:
    """The kinds (SQLITE_VALUE_KINDS) of the column's values, NULL aside: one pass over
    the column (its index, where it has one), the kinds found kept in a set of a few."""
    quoted = quote_identifier(conn.dialect, column)
    found = conn.execute(
        text(
            f"SELECT group_concat(DISTINCT {_VALUE_KIND.replace('{c}', quoted)}) "
            f"FROM {quote_identifier(conn.dialect, table)} WHERE {quoted} IS NOT NULL"
        )
    ).scalar()
    return set(str(found).split(",")) if found else set()


def sqlite_value_counts(conn: Connection, table: str, column: str) -> dict[str, tuple[int, str]]:
    """Each kind of the column's values (SQLITE_VALUE_KINDS) with how many there are and
    the least as shown (text quoted, cut at 30 characters; a blob as "a blob"): rows
    sorted by kind, for a refusal to name."""
    quoted = quote_identifier(conn.dialect, column)
    rows = conn.execute(
        text(
            f"SELECT {_VALUE_KIND.replace('{c}', quoted)} AS kind, count(*), min({quoted}) "
            f"FROM {quote_identifier(conn.dialect, table)} WHERE {quoted} IS NOT NULL "
            "GROUP BY kind"
        )
    )
    return {str(kind): (int(n), _shown(least)) for kind, n, least in rows}


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return "a blob"
    return repr(value[:30]) if isinstance(value, str) else str(value)


# Tables named in one query at most (named_rows).
NAMED_AT_MOST = 500


def named_rows(
    conn: Connection,
    each: str,
    every: str,
    names: Sequence[str],
    name_of: Callable[[Any], str | None],
) -> list[Any]:
    """The rows of these tables: `each` with the names bound (`:names`) where they are
    few, else `every` (the same query of every table) with the rows of those named kept
    (`name_of`: a row's table). The guard parses each statement it lets through, and a
    list of 5,000 names cost it a third of a second; the catalog's views and SQLite's
    schema table are read through for either query."""
    if len(names) <= NAMED_AT_MOST:
        listed = text(each).bindparams(bindparam("names", expanding=True))
        return list(conn.execute(listed, {"names": list(names)}))
    wanted = set(names)
    return [r for r in conn.execute(text(every)) if name_of(r) in wanted]


# SQLite's shadow tables: where a virtual table's module (FTS3/4/5, R-Tree) keeps the
# virtual table's data, each with that virtual table. Only the module may change them: a
# row deleted from one corrupts the virtual table (its full-text index), so they are no
# user table. SQLite takes a table named V_SUFFIX (the last underscore) for a shadow of
# virtual table V (rootpage 0) where V's module says SUFFIX is one of its own: PRAGMA
# table_list marks them from SQLite 3.37; before, those of SQLite's own modules are
# known by their suffixes (any module's, for every virtual table: fails closed).
_SHADOW_OWNER = (
    "lower(substr(s.name, 1, length(v.name) + 1)) = lower(v.name) || '_' "
    "AND instr(substr(s.name, length(v.name) + 2), '_') = 0"
)
_SQLITE_SHADOWS = {
    True: "SELECT s.name AS name, v.name AS owner FROM pragma_table_list s "
    "CROSS JOIN sqlite_schema v WHERE s.schema = 'main' AND s.type = 'shadow' "
    f"AND v.type = 'table' AND v.rootpage = 0 AND {_SHADOW_OWNER}",
    False: "SELECT s.name AS name, v.name AS owner FROM sqlite_schema v CROSS JOIN "
    "sqlite_schema s WHERE v.type = 'table' AND v.rootpage = 0 AND s.type = 'table' "
    f"AND {_SHADOW_OWNER} AND lower(substr(s.name, length(v.name) + 2)) IN ('config', "
    "'content', 'data', 'docsize', 'idx', 'segdir', 'segments', 'stat', 'node', 'parent', "
    "'rowid')",
}
_TABLE_LIST_FROM = (3, 37)


def sqlite_shadows_sql(table_list: bool | None = None) -> str:
    """A query of each shadow table (name) with its virtual table (owner); `table_list`:
    read them from PRAGMA table_list (default: where this SQLite has it)."""
    if table_list is None:
        table_list = sqlite3.sqlite_version_info >= _TABLE_LIST_FROM
    return _SQLITE_SHADOWS[table_list]


def shadow_owner(conn: Connection, table: str) -> str | None:
    """The virtual table whose shadow table `table` is, on SQLite; else None."""
    if conn.dialect.name != "sqlite":
        return None
    sql = f"SELECT owner FROM ({sqlite_shadows_sql()}) WHERE name = :t COLLATE NOCASE"
    owner = conn.execute(text(sql), {"t": table}).scalar()
    return None if owner is None else str(owner)


def refuse_shadow(conn: Connection, table: str) -> None:
    """Refuse, in one line, a shadow table named as a table to work on."""
    owner = shadow_owner(conn, table)
    if owner is not None:
        raise TargetError(
            f"Table {table!r} belongs to virtual table {owner!r}: SQLite keeps {owner}'s "
            "data there and only its module may change it (a row deleted there corrupts "
            f"{owner}); name {owner!r} instead"
        )


# A materialized view of the current schema by that name (PostgreSQL).
_MATVIEW = (
    "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND c.relname = :t "
    "AND n.nspname = pg_catalog.current_schema()"
)


def refuse_matview(conn: Connection, table: str) -> None:
    """Refuse, in one line, a PostgreSQL materialized view named as a table to work on:
    no maintenance type plans one (README: materialized views), so it is not one of the
    target's tables, and a DBA told only "not found" would look for a typo."""
    if conn.dialect.name != "postgresql":
        return
    if conn.execute(text(_MATVIEW), {"t": table}).scalar() is not None:
        raise TargetError(
            f"{table!r} is a materialized view, not a table: aishell plans no step on it "
            "(autovacuum vacuums and analyzes it as a table; ANALYZE it after its REFRESH "
            "where its statistics cannot wait)"
        )


def user_tables(
    conn: Connection, unreadable: list[str] | None = None, *, shadows: bool = True
) -> list[str]:
    """User tables of the target, by name; on SQLite those whose names are not UTF-8
    are left out (and listed in `unreadable`), and shadow tables unless `shadows`: a
    backup holds and counts them (as measure.sqlite_tables lists a copy's), but no step
    may work on one."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        sql = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema() ORDER BY 1"
        )
    elif family(dialect) == "mysql":
        sql = (
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1"
        )
    else:
        sql = (
            "SELECT name FROM sqlite_schema WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            + ("" if shadows else f"AND name NOT IN (SELECT name FROM ({sqlite_shadows_sql()})) ")
            + "ORDER BY 1"
        )
        with sqlite_text_as_bytes(conn):
            rows = conn.execute(text(sql)).all()
        return [n for n in (sqlite_name(r[0], unreadable) for r in rows) if n is not None]
    return [r[0] for r in conn.execute(text(sql))]


# Each dialect's columns of a table in order, and the condition that leaves out the
# generated ones (which the table computes itself: a copy names the others). PostgreSQL
# from pg_attribute: information_schema.columns shows only the columns the role has a
# privilege on. MySQL's list has MariaDB's invisible columns, which SELECT * leaves
# out. SQLite's table_xinfo marks generated columns hidden 2 or 3 (table_info leaves
# them out) and a virtual table's hidden columns 1 (FTS5's rank: no row holds them).
_COLUMNS = {
    "postgresql": (
        "SELECT attname FROM pg_attribute WHERE attrelid = "
        "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = :t AND n.nspname = pg_catalog.current_schema()) "
        "AND attnum > 0 AND NOT attisdropped{stored} ORDER BY attnum",
        " AND attgenerated = ''",
    ),
    "mysql": (
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = :t{stored} ORDER BY ORDINAL_POSITION",
        " AND coalesce(GENERATION_EXPRESSION, '') = ''",
    ),
    "sqlite": (
        "SELECT name FROM pragma_table_xinfo(:t) WHERE hidden <> 1{stored} ORDER BY cid",
        " AND hidden = 0",
    ),
}


def table_columns(conn: Connection, table: str, *, stored_only: bool = False) -> list[str]:
    """The table's columns in order; `stored_only`: those a row is inserted with, all
    but the generated ones."""
    dialect = conn.dialect.name
    sql, stored = _COLUMNS[family(dialect)]
    query = sql.replace("{stored}", stored if stored_only else "")
    return [r[0] for r in conn.execute(text(query), {"t": table})]


def check_column(conn: Connection, table: str, column: str) -> None:
    require_column(table, column, table_columns(conn, table))


def require_column(table: str, column: str, columns: Sequence[str]) -> None:
    """The column must be one of the table's; the error lists those there are."""
    if column not in columns:
        raise TargetError(
            f"Table {table!r} has no column {column!r}; columns are: {', '.join(columns)}"
        )


# A partitioned table's relfrozenxid is 0 (no rows of its own): no age, not age(0)'s 2^31 - 1.
_PG_URGENCY = """
SELECT c.relname AS name,
       CASE WHEN c.relfrozenxid <> '0'::xid THEN pg_catalog.age(c.relfrozenxid) END AS xid_age,
       coalesce(s.n_live_tup, 0) AS live, coalesce(s.n_dead_tup, 0) AS dead,
       c.relpages::bigint * pg_catalog.current_setting('block_size')::bigint AS total_bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname = pg_catalog.current_schema()
"""
# What an InnoDB record takes of its page, by column type, in bytes: its header (5),
# transaction ID (6) and roll pointer (7); a value of these types, stored whole; a byte of
# length for a variable one, a bit for a nullable one, and the row ID InnoDB adds to a
# table without a primary key (6).
RECORD_HEADER = 18
FIXED_BYTES = {
    "tinyint": 1,
    "smallint": 2,
    "mediumint": 3,
    "int": 4,
    "bigint": 8,
    "float": 4,
    "double": 8,
    "date": 3,
    "time": 3,
    "year": 1,
    "datetime": 5,
    "timestamp": 4,
}
VARIABLE_TYPES = frozenset(
    {"varchar", "varbinary", "text", "tinytext", "mediumtext", "longtext", "blob"}
    | {"tinyblob", "mediumblob", "longblob", "json"}
)
ROW_ID_BYTES = 6
# The share of a rebuilt page its records fill: InnoDB keeps 1/16 of each free for
# updates, and a tenth more is allowed for what the estimate leaves out (the pages'
# headers and directories, TABLE_ROWS' own error), so that a table as full as a rebuild
# leaves it shows no room to give back.
REBUILT_FILL = 15 / 16 * 0.9
# InnoDB moves a record's long values off its page until the record fits in half of one.
_IN_PAGE_AT_MOST = 8126


def _declared_bytes() -> str:
    """SQL for a column's bytes from its declared type (of COLUMNS): FIXED_BYTES, else its
    declared length in characters (a string's bytes where its text is single-byte), else
    its digits, capped at what InnoDB keeps in the page."""
    fixed = " ".join(f"WHEN '{t}' THEN {n}" for t, n in FIXED_BYTES.items())
    length = "coalesce(CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, 8)"
    return f"CASE DATA_TYPE {fixed} ELSE least({length}, {_IN_PAGE_AT_MOST}) END"


# Each table's record's bytes as its columns declare them (one query for all tables: no
# row is read). The fragmentation step samples the rows instead
# (handlers/mysql/fragmentation.py), which planning cannot do in one query.
_MYSQL_DECLARED = f"""
SELECT TABLE_NAME AS name,
       least(sum({_declared_bytes()}), {_IN_PAGE_AT_MOST}) + {RECORD_HEADER}
       + sum(DATA_TYPE IN ({", ".join(f"'{t}'" for t in sorted(VARIABLE_TYPES))}))
       + (sum(IS_NULLABLE = 'YES') + 7) DIV 8
       + CASE WHEN max(COLUMN_KEY = 'PRI') THEN 0 ELSE {ROW_ID_BYTES} END AS declared
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = DATABASE() AND upper(EXTRA) NOT LIKE '%VIRTUAL%'
GROUP BY TABLE_NAME
"""
# Autovacuum forces a freeze at 200 million transactions.
FREEZE_MAX_AGE = 200_000_000


def pg_urgency(xid_age: int | None, live: int, dead: int, total_bytes: int) -> float:
    """Transaction-ID age toward a forced freeze, the share of dead rows, then size."""
    xid = min((xid_age or 0) / FREEZE_MAX_AGE, 1.0)
    total = (live or 0) + (dead or 0)
    dead_share = (dead or 0) / total if total else 0.0
    return round(3 * xid + 2 * dead_share + min((total_bytes or 0) / 2**30, 1.0), 4)


def mysql_urgency(size_bytes: int, free_bytes: int) -> float:
    """The share of a table's bytes a rebuild would give back, then the bytes in use."""
    free = free_bytes / size_bytes if size_bytes else 0.0
    return round(2 * free + min((size_bytes - free_bytes) / 2**30, 1.0), 4)


def mysql_reclaimable(row: Mapping[str, Any], record: float | None) -> int:
    """What a rebuild gives back of an InnoDB table: its free extents (DATA_FREE) and the
    unused room of its pages, their fill being what its rows need (TABLE_ROWS times
    `record`, an average record's bytes) against DATA_LENGTH as a rebuild fills it; the
    indexes taken to be as full as the table's pages (deletes empty both). DATA_FREE
    alone where `record` is unknown or the table has no pages."""
    pages = row["data_bytes"] + row["index_bytes"]
    if record is None or not row["data_bytes"]:
        return int(row["free_bytes"])
    fill = min(1.0, row["row_count"] * record / REBUILT_FILL / row["data_bytes"])
    return int(row["free_bytes"] + round(pages * (1 - fill)))


def mysql_estimates(
    conn: Connection, figures: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, int]]:
    """Every table's {size_bytes, free_bytes}: mysql_reclaimable with each InnoDB table's
    record as its columns declare it (a value shorter than its declared length makes the
    figure lower than the fragmentation step's, never higher). `figures`: every table's
    row of TABLES as the catalog read it just now (else read here, as it reads them)."""
    if figures is None:
        figures = {name: table.figures for name, table in read_mysql(conn, None).items()}
    declared = {str(r.name): r.declared for r in conn.execute(text(_MYSQL_DECLARED))}
    found = {}
    for name, row in figures.items():
        innodb = str(row["engine"] or "").lower() == "innodb" and row["row_count"]
        record = declared.get(name) if innodb else None
        found[name] = {
            "size_bytes": row["data_bytes"] + row["index_bytes"] + row["free_bytes"],
            "free_bytes": mysql_reclaimable(row, None if record is None else float(record)),
        }
    return found


# Each table's pages with its indexes'. Both sides are read whole first (an aggregate is
# made once, and SQLite joins it by an index of its own): joined as they are, each of
# dbstat's rows scanned sqlite_schema again, 5 s for 10,000 tables.
_SQLITE_SIZES = (
    "SELECT s.tbl_name AS name, sum(d.pgsize) AS bytes "
    "FROM (SELECT name, sum(pgsize) AS pgsize FROM dbstat GROUP BY name) d "
    "JOIN (SELECT name, tbl_name FROM sqlite_schema GROUP BY name, tbl_name) s "
    "ON s.name = d.name GROUP BY s.tbl_name"
)


def urgency(
    conn: Connection, figures: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, float]:
    """How soon each table needs maintenance, higher first, in one query (MySQL: two,
    or one with `figures`, every table's row of TABLES as the catalog just read it).

    PostgreSQL: transaction-ID age toward a forced freeze, then the share of dead
    rows, then size; MySQL/MariaDB: the share a rebuild would give back (mysql_estimates),
    then size; SQLite: size.
    """
    dialect = conn.dialect.name
    scores: dict[str, float] = {}
    if dialect == "postgresql":
        for r in conn.execute(text(_PG_URGENCY)).mappings():
            scores[r["name"]] = pg_urgency(r["xid_age"], r["live"], r["dead"], r["total_bytes"])
    elif family(dialect) == "mysql":
        for name, found in mysql_estimates(conn, figures).items():
            scores[name] = mysql_urgency(found["size_bytes"], found["free_bytes"])
    else:
        try:
            rows = conn.execute(text(_SQLITE_SIZES))
            scores = {r.name: round(min(r.bytes / 2**30, 1.0), 9) for r in rows}
        except DBAPIError:
            scores = {}
    return scores


# dbstat finds each b-tree it is asked for by name by reading sqlite_schema through: for
# many tables of a large schema the whole file's pages are read once instead, and the
# named tables' kept (10,000 tables of one index each: 0.1 s against 5.3 s). The turn is
# where the lookups' cost (tables times schema rows, a few ns each) passes the whole
# read's (a few us a page).
# A few tables are found by name whatever the schema, without a query to decide.
_LOOKUPS_PER_PAGE = 500
_FEW_TABLES = 100
_SCHEMA_AND_PAGES = (
    "SELECT (SELECT count(*) FROM sqlite_schema), (SELECT page_count FROM pragma_page_count())"
)


def sqlite_reads_whole_file(conn: Connection, tables: int) -> bool:
    """Whether reading every page of the file (dbstat) costs less than finding these
    tables' b-trees one by one."""
    if tables <= _FEW_TABLES:
        return False
    schema_rows, pages = conn.execute(text(_SCHEMA_AND_PAGES)).one()
    return tables * int(schema_rows) > _LOOKUPS_PER_PAGE * int(pages)
