"""What each MySQL/MariaDB storage engine does with the maintenance statements, and the
lock each takes there: a step plans, per table, what its engine supports.

ANALYZE TABLE and OPTIMIZE TABLE are answered by an engine without them (MEMORY, CSV,
BLACKHOLE, ...) with a note alone, after the server has opened and locked the table;
aishell sends neither to such a table, and its preview says why instead of showing a
statement that would do nothing. An engine aishell does not know (MRG_MyISAM, ARCHIVE,
CONNECT, SPIDER, S3, a plugin's) may do anything with them, a remote server's work
included: nothing is sent to it either. Where the statement holds the whole table
(OPTIMIZE TABLE of MyISAM and Aria; InnoDB's rebuild of a table with a FULLTEXT or
SPATIAL index, which it does not do online), the preview says so beside it, as it says
where ANALYZE TABLE holds off the table's writers (MyISAM and Aria, whose engine takes its
own table read lock for it; InnoDB samples under its row versions, writes going on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection

from aishell.sqltext import text


@dataclass(frozen=True)
class Ways:
    """What one engine does: ANALYZE TABLE refreshes its statistics; OPTIMIZE TABLE
    rebuilds it; `held`: how OPTIMIZE TABLE holds the table ("" where reads and writes
    go on); `analyze_blocks_writes`: ANALYZE TABLE holds off the table's writes."""

    analyze: bool
    optimize: bool
    held: str = ""
    analyze_blocks_writes: bool = False


_WHOLE = "no read or write of it until OPTIMIZE TABLE ends"
# By the engine's name as information_schema.TABLES gives it, in lower case.
_ENGINES = {
    "innodb": Ways(analyze=True, optimize=True),
    "myisam": Ways(analyze=True, optimize=True, held=_WHOLE, analyze_blocks_writes=True),
    "aria": Ways(analyze=True, optimize=True, held=_WHOLE, analyze_blocks_writes=True),
    "memory": Ways(analyze=False, optimize=False),
    "csv": Ways(analyze=False, optimize=False),
    "blackhole": Ways(analyze=False, optimize=False),
}


def _ways(engine: str | None) -> Ways | None:
    return _ENGINES.get((engine or "").lower())


def _named(engine: str | None) -> str:
    return engine or "an engine the server does not name"


def analyze_refusal(table: str, engine: str | None) -> str | None:
    """Why ANALYZE TABLE is not sent to this table (None: it is)."""
    ways = _ways(engine)
    if ways is None:
        return (
            f"ANALYZE TABLE of {table} not sent: its engine is {_named(engine)}, whose "
            "ANALYZE TABLE aishell does not know"
        )
    if not ways.analyze:
        return (
            f"ANALYZE TABLE of {table} not sent: the {engine} engine keeps no statistics "
            "ANALYZE TABLE refreshes"
        )
    return None


def analyze_lock(tables: Sequence[str], engines: Mapping[str, str | None]) -> str | None:
    """The line a preview shows beside ANALYZE TABLE of these tables where it holds off
    writes to some of them (None: reads and writes of every one go on)."""
    held = [
        t for t in tables if (w := _ways(engines.get(t))) is not None and w.analyze_blocks_writes
    ]
    return writes_wait(held, engines, "ANALYZE TABLE")


def writes_wait(
    held: Sequence[str], engines: Mapping[str, str | None], statement: str, after: str = ""
) -> str | None:
    """The line a preview shows where `statement` holds off writes to the tables `held`
    (the engine's own table read lock, as LOCK TABLES ... READ takes it); None: none."""
    if not held:
        return None
    named = ", ".join(f"{t} ({engines[t] or 'unknown engine'})" for t in held)
    return (
        f"{named}: writes to {'it' if len(held) == 1 else 'each'} wait until {statement} "
        f"ends (the engine's table read lock); reads go on{after}"
    )


def optimize_refusal(table: str, engine: str | None) -> str | None:
    """Why no OPTIMIZE TABLE (nor rebuild) is sent to this table (None: it may be)."""
    ways = _ways(engine)
    if ways is None:
        return (
            f"{table} not rebuilt: its engine is {_named(engine)}, whose OPTIMIZE TABLE "
            "aishell does not know"
        )
    if not ways.optimize:
        return f"{table} not rebuilt: the {engine} engine has no OPTIMIZE TABLE"
    return None


def whole_table_lock(table: str, engine: str | None, offline: Sequence[str]) -> str | None:
    """What a rebuild of this table holds when it holds the whole table (None: reads
    and writes go on), for the line its preview shows beside the statement."""
    ways = _ways(engine)
    if ways is not None and ways.held:
        return f"{table} ({engine}): {ways.held}"
    if offline and (engine or "").lower() == "innodb":
        return (
            f"{table} has {', '.join(offline)}: InnoDB does not rebuild it online, and "
            "writes to it wait until OPTIMIZE TABLE ends"
        )
    return None


# The engine of each table named (a table not there is left out).
ENGINES = (
    "SELECT TABLE_NAME AS name, ENGINE AS engine FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names"
)
# The schema's FULLTEXT and SPATIAL indexes: InnoDB rebuilds no table holding one online
# (ALTER TABLE ... LOCK=NONE is refused, error 1846), only holding off its writers.
# Every table's in one query, whatever the number of tables a step rebuilds.
OFFLINE_INDEXES = (
    "SELECT DISTINCT TABLE_NAME AS tbl, INDEX_TYPE AS kind, INDEX_NAME AS name "
    "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
    "AND INDEX_TYPE IN ('FULLTEXT', 'SPATIAL') ORDER BY TABLE_NAME, INDEX_NAME"
)


def engines_of(conn: Connection, tables: Sequence[str]) -> dict[str, str | None]:
    """Each table's engine (None: the server does not say), in one query."""
    if not tables:
        return {}
    statement = text(ENGINES).bindparams(bindparam("names", expanding=True))
    return {str(r.name): r.engine for r in conn.execute(statement, {"names": list(tables)})}


def offline_indexes(conn: Connection) -> dict[str, list[str]]:
    """Each table's FULLTEXT and SPATIAL indexes, each as "FULLTEXT index name"."""
    found: dict[str, list[str]] = {}
    for r in conn.execute(text(OFFLINE_INDEXES)):
        found.setdefault(str(r.tbl), []).append(f"{r.kind} index {r.name}")
    return found
