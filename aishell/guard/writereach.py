"""What a step's writes do beyond the rows their statements name.

Another table's foreign key acts on that table's rows when rows it references go or
change: ON DELETE CASCADE deletes them, SET NULL and SET DEFAULT update them, ON UPDATE
CASCADE (and SET NULL, SET DEFAULT) updates them when a referenced column is set, and
PostgreSQL's TRUNCATE ... CASCADE empties every table whose foreign key references the
one truncated. What such an action writes may act on further tables in turn, and it
fires that table's triggers (on PostgreSQL and SQLite; InnoDB's cascades fire none). A
trigger (and on PostgreSQL a rule) on the statement's own table runs whatever its code
writes: the tables its body, and the routines it calls, write (bodywrites.py) are
followed as the statement's own are, their triggers, keys and bodies in turn (each write
once, so a cycle ends). None of these are rows a statement of the step names, and a
purge neither counts nor archives them. The statements the approval shows are the step's
own; these are part of what they run, so the step's estimate names them
(executor/estimates.py), its preview shows them and the policy asks for them
(policy._reaches_beyond): a cascade only by a person's yes for that very step. The other
code each write runs on its table (defaults, generated columns, constraints, policies,
index expressions) is named by usercode.py, for every write found here, the cascades'
too.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.dialects import family
from aishell.guard.bodysources import IN_FAMILY, PG_EVENTS, PG_FAMILY, PG_TABLE
from aishell.guard.bodywrites import body_writes
from aishell.guard.calls import vouched_for
from aishell.guard.eventtriggers import Fired, fired_event_triggers
from aishell.guard.sqlitetriggers import EVENTS, SQLITE_TRIGGERS, trigger_events
from aishell.guard.writtentables import Write, view_bases, written
from aishell.sqltext import text


@dataclass(frozen=True)
class Reach:
    """cascades: "deleting from t also acts on child.column (ON DELETE CASCADE, name)",
    one per foreign key that acts, followed through the tables it writes; fires:
    "deleting from t fires trigger x (runs f)", one per trigger or rule."""

    cascades: list[str] = field(default_factory=list)
    fires: list[str] = field(default_factory=list)
    # Every table write the step makes, its own and its cascades' (what else those run
    # is usercode.py's part), and the event triggers its DDL fires.
    writes: list[Write] = field(default_factory=list)
    event_triggers: list[Fired] = field(default_factory=list)
    # Those of `writes` only a foreign key's action makes (InnoDB fires no trigger for
    # them; PostgreSQL and SQLite do), and those the bodies of the triggers, rules and
    # routines the writes set off make (bodywrites.py).
    by_keys: list[Write] = field(default_factory=list)
    by_bodies: list[Write] = field(default_factory=list)
    # Code whose text does not show what it writes (bodyunknowns.py), each with its
    # function's (schema, name): said with the cascades unless the target's
    # trusted_functions vouches for the function (cascades_said).
    unseen: list[tuple[str, tuple[str, str] | None]] = field(default_factory=list)

    def cascades_said(self, trusted: Iterable[str]) -> list[str]:
        """The cascades, and the code whose writes are not known but for the functions
        `trusted` (a target's trusted_functions) vouches for as only reading."""
        trusted = list(trusted)
        return self.cascades + [
            said
            for said, function in self.unseen
            if function is None or not vouched_for(*function, trusted, fold=False)
        ]


_DOING = {
    "DELETE": "deleting from",
    "UPDATE": "updating",
    "INSERT": "inserting into",
    "TRUNCATE": "truncating",
}
# How many tables a cascade is followed through before the rest is only said to exist.
MAX_TABLES = 100


def write_reach(conn: Connection, statements: Iterable[str]) -> Reach | None:
    """What the statements' writes also do, followed through the tables their cascades
    write, and the event triggers their DDL fires (eventtriggers.py); None when none
    of them writes rows or fires one."""
    dialect, statements = conn.dialect.name, list(statements)
    writes = dict.fromkeys(w for sql in statements for w in written(sql, dialect))
    ddl_fires = fired_event_triggers(conn, statements)
    if not writes and not ddl_fires:
        return None
    reach = Reach(fires=[f.said for f in ddl_fires], event_triggers=ddl_fires)
    return follow_writes(conn, writes, reach)


def follow_writes(conn: Connection, writes: Iterable[Write], reach: Reach) -> Reach:
    """`reach` with what the writes do, followed through the tables their cascades and
    the bodies of the code they set off write (bodywrites.py)."""
    dialect, relations = conn.dialect.name, _Relations(conn)
    # Each write with how it came about (None for a statement's own), and what makes it:
    # the statement (""), a foreign key's action ("key") or a body ("body").
    queue: deque[tuple[Write, str | None, str]] = deque((w, None, "") for w in writes)
    seen: set[Write] = set()
    while queue:
        write, how, by = queue.popleft()
        cascaded = by == "key"
        if write in seen:
            continue
        if len(seen) == MAX_TABLES:
            reach.cascades.append(
                f"and further: the cascades were followed through {MAX_TABLES} writes and "
                "go on beyond them"
            )
            break
        seen.add(write)
        reach.writes.append(write)
        if by:
            (reach.by_keys if cascaded else reach.by_bodies).append(write)
        doing = f"{_DOING[write.event]} {write.table}" + (f" ({how})" if how else "")
        found = relations.on(write)
        for key, action, then in _acting(found.keys, write):
            reach.cascades.append(f"{doing} also acts on {key.shown} ({action})")
            queue.append((then, f"by the cascade from {write.table}", "key"))
        if write.event in ("DELETE", "TRUNCATE"):
            reach.cascades.extend(
                f"{doing} leaves rows of {key.shown} pointing at rows it removes: their "
                f"foreign key (ON DELETE {key.on_delete}) is not acted on, as SQLite's "
                "foreign_keys is off in aishell's session"
                for key in found.unenforced
            )
        if write.event != "TRUNCATE":
            # Which of a view's columns map to which base column is not read: any.
            for schema, base in found.bases:
                through = f"through the view {write.table}"
                queue.append((Write(write.event, schema, base), through, by))
            if found.unread_view:
                reach.cascades.append(
                    f"{doing}: a view whose definition the parser cannot read, so the tables "
                    "it writes through to are not known"
                )
        # InnoDB runs no trigger for the rows a foreign key's action writes.
        if not (cascaded and family(dialect) == "mysql"):
            reach.fires.extend(f"{doing} fires {f}" for f in _fires(conn, write))
            bodies = body_writes(conn, write)
            reach.cascades.extend(f"{doing}: {said}" for said in bodies.unread)
            reach.unseen.extend((f"{doing}: {said}", function) for said, function in bodies.unseen)
            queue.extend((then, f"by {who}", "body") for who, then in bodies.writes)
    return reach


class _Key(NamedTuple):
    """Another table's foreign key that references the table written."""

    schema: str | None
    table: str
    name: str | None
    on_delete: str
    on_update: str
    columns: tuple[str, ...]
    referenced: frozenset[str]  # the written table's columns, as _column names them
    own: frozenset[str]  # its own columns, as _column names them
    shown_table: str

    @property
    def shown(self) -> str:
        return f"{self.shown_table}.{', '.join(self.columns)}"


_ACTING = ("CASCADE", "SET NULL", "SET DEFAULT")


def _acting(keys: list[_Key], write: Write) -> Iterator[tuple[_Key, str, Write]]:
    """Each foreign key that acts on the write, how, and what its action writes."""
    for key in keys:
        named = f", {key.name}" if key.name else ""
        if write.event == "TRUNCATE" and write.cascade:
            then = Write("TRUNCATE", key.schema, key.table, cascade=True)
            yield key, f"TRUNCATE ... CASCADE empties it{named}", then
            continue
        if write.event == "DELETE":
            action, on = key.on_delete, "ON DELETE"
        elif write.event == "UPDATE" and (write.columns is None or write.columns & key.referenced):
            action, on = key.on_update, "ON UPDATE"
        else:
            continue
        if action not in _ACTING:
            continue
        if action == "CASCADE" and write.event == "DELETE":
            then = Write("DELETE", key.schema, key.table)
        else:
            then = Write("UPDATE", key.schema, key.table, key.own, defaults=action == "SET DEFAULT")
        yield key, f"{on} {action}{named}", then


def _pg_columns(relation: str, numbers: str) -> str:
    return (
        f"ARRAY(SELECT a.attname::text "
        f"FROM pg_catalog.unnest(c.{numbers}) WITH ORDINALITY u(num, i) "
        f"JOIN pg_catalog.pg_attribute a ON a.attrelid = c.{relation} AND a.attnum = u.num "
        "ORDER BY u.i)"
    )


# A partition's copy of a key of its parent's, or of a key that references its parent,
# is that key, named once.
# A view's rows are its base relations' (those its _RETURN rule depends on: the one an
# auto-updatable view writes, and any a subquery of it reads), in the same round trip.
_PG_KEYS = (
    f"{PG_FAMILY}SELECT 'key', n.nspname, k.relname, c.conname, c.confdeltype::text, "
    "c.confupdtype::text, "
    f"{_pg_columns('conrelid', 'conkey')}, {_pg_columns('confrelid', 'confkey')}, "
    "c.conrelid::regclass::text "
    "FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class k ON k.oid = c.conrelid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace "
    f"WHERE c.contype = 'f' AND c.confrelid {IN_FAMILY} AND NOT EXISTS (SELECT 1 FROM "
    f"pg_catalog.pg_constraint p WHERE p.oid = c.conparentid AND p.confrelid {IN_FAMILY}) "
    "UNION ALL SELECT DISTINCT 'base', n.nspname, b.relname, NULL, NULL, NULL, "
    "NULL::text[], NULL::text[], b.oid::regclass::text FROM pg_catalog.pg_rewrite r "
    "JOIN pg_catalog.pg_depend d"
    " ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass "
    "AND d.objid = r.oid"
    " AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass "
    "JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND b.oid <> r.ev_class "
    "JOIN pg_catalog.pg_namespace n ON n.oid = b.relnamespace "
    f"WHERE r.ev_class = {PG_TABLE} AND r.rulename = '_RETURN' "
    "AND b.relkind IN ('r', 'p', 'v', 'f') ORDER BY 1, 9, 4"
)
_PG_ACTIONS = {
    "c": "CASCADE",
    "n": "SET NULL",
    "d": "SET DEFAULT",
    "r": "RESTRICT",
    "a": "NO ACTION",
}
# A view's definition names its base tables, each qualified by its database.
_MYSQL_VIEW = (
    "SELECT 'view', NULL, NULL, NULL, NULL, NULL, VIEW_DEFINITION, NULL, 0 "
    "FROM information_schema.VIEWS WHERE TABLE_SCHEMA = coalesce(:s, DATABASE()) "
    "AND TABLE_NAME = :t"
)
_MYSQL_KEYS = (
    "SELECT 'key', r.CONSTRAINT_SCHEMA, r.TABLE_NAME, r.CONSTRAINT_NAME, r.DELETE_RULE, "
    "r.UPDATE_RULE, k.COLUMN_NAME, k.REFERENCED_COLUMN_NAME, k.ORDINAL_POSITION "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS r "
    "JOIN information_schema.KEY_COLUMN_USAGE k ON k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA "
    "AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME AND k.TABLE_NAME = r.TABLE_NAME "
    "WHERE r.UNIQUE_CONSTRAINT_SCHEMA = coalesce(:s, DATABASE()) "
    f"AND r.REFERENCED_TABLE_NAME = :t UNION ALL {_MYSQL_VIEW} ORDER BY 1, 2, 3, 4, 9"
)
# MariaDB reads REFERENTIAL_CONSTRAINTS by opening every table of every database on the
# server (its referenced side has no lookup key): a cost that grows with the server's
# tables, and a wait on any of them being altered. InnoDB's own dictionary of foreign
# keys answers without opening a table. It needs the PROCESS privilege, and names a
# table as its file (database/table, other characters than [A-Za-z0-9_] @-encoded): the
# row 'database' says which database an unqualified name is in, so that an encoded one
# is asked the other way.
_MARIADB_KEYS = (
    "SELECT 'key', SUBSTRING_INDEX(f.FOR_NAME, '/', 1), SUBSTRING_INDEX(f.FOR_NAME, '/', -1), "
    "SUBSTRING_INDEX(f.ID, '/', -1), "
    "CASE WHEN f.TYPE & 1 THEN 'CASCADE' WHEN f.TYPE & 2 THEN 'SET NULL' ELSE 'NO ACTION' END, "
    "CASE WHEN f.TYPE & 4 THEN 'CASCADE' WHEN f.TYPE & 8 THEN 'SET NULL' ELSE 'NO ACTION' END, "
    "c.FOR_COL_NAME, c.REF_COL_NAME, c.POS FROM information_schema.INNODB_SYS_FOREIGN f "
    "JOIN information_schema.INNODB_SYS_FOREIGN_COLS c ON c.ID = f.ID "
    "WHERE IF(@@lower_case_table_names = 0, "
    "BINARY f.REF_NAME = CONCAT(coalesce(:s, DATABASE()), '/', :t), "
    "f.REF_NAME = LOWER(CONCAT(coalesce(:s, DATABASE()), '/', :t))) "
    "UNION ALL SELECT 'database', coalesce(:s, DATABASE()), NULL, NULL, NULL, NULL, NULL, "
    f"NULL, 0 UNION ALL {_MYSQL_VIEW} ORDER BY 1, 2, 3, 4, 9"
)
_FILE_NAME = re.compile(r"[A-Za-z0-9_]+")
_ENCODED = re.compile(r"@([0-9a-f]{4})")
_SQLITE_KEYS = (
    'SELECT m.name, f.id, f."from", f."to", f.on_delete, f.on_update FROM sqlite_master m '
    "JOIN pragma_foreign_key_list(m.name) f "
    "WHERE m.type = 'table' AND f.\"table\" = :t COLLATE NOCASE ORDER BY 1, 2, f.seq"
)
_SQLITE_PRIMARY_KEY = "SELECT name FROM pragma_table_info(:t) WHERE pk > 0 ORDER BY pk"


class _Found(NamedTuple):
    """What the catalog says of a relation written: the foreign keys that reference it,
    and, for a view, the relations it writes through to (schema, name)."""

    keys: list[_Key]
    bases: list[tuple[str | None, str]]
    unread_view: bool = False  # a view whose base tables could not be told
    # SQLite's keys that reference it where the session does not act on foreign keys:
    # rows of theirs are left pointing at rows a DELETE removes.
    unenforced: tuple[_Key, ...] = ()


class _Relations:
    """The catalog's answer for each relation written, read once per relation (SQLite's
    keys only where the session acts on foreign keys; a SQLite view is written only by
    its INSTEAD OF triggers, which _fires names)."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.dialect = conn, conn.dialect.name
        self._read: dict[tuple[str | None, str, bool], _Found] = {}
        self._enforced: bool | None = None
        # Whether InnoDB's dictionary of foreign keys is asked (MariaDB; see _MARIADB_KEYS).
        self._innodb = bool(getattr(conn.dialect, "is_mariadb", False))

    def on(self, write: Write) -> _Found:
        """What the catalog says of the write's table (and, on PostgreSQL, of the tables
        that share its rows: partitions, and but for an INSERT inheritance children)."""
        inherited = write.event != "INSERT"
        found = (write.schema, write.table, inherited)
        if found not in self._read:
            self._read[found] = self._found(write.schema, write.table, inherited)
        return self._read[found]

    def _found(self, schema: str | None, table: str, inherited: bool) -> _Found:
        names = {"t": table, "s": schema}
        if self.dialect == "postgresql":
            keys, bases = [], []
            for kind, ns, rel, name, d, u, own, ref, shown in self.conn.execute(
                text(_PG_KEYS), {**names, "inherited": inherited}
            ):
                if kind == "base":
                    bases.append((ns, rel))
                    continue
                keys.append(
                    _Key(
                        ns,
                        rel,
                        name,
                        _PG_ACTIONS[d],
                        _PG_ACTIONS[u],
                        tuple(own),
                        frozenset(ref),
                        frozenset(own),
                        shown,
                    )
                )
            return _Found(keys, bases)
        if family(self.dialect) == "mysql":
            return self._mysql(names)
        keys = self._sqlite_keys(table)
        if self._enforced:
            return _Found(keys, [])
        return _Found([], [], unenforced=tuple(keys))

    def _mysql(self, names: dict[str, str | None]) -> _Found:
        rows = self._mariadb_rows(names) if self._innodb else None
        if rows is None:
            rows = list(self.conn.execute(text(_MYSQL_KEYS), names))
        grouped: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
        bases: list[tuple[str | None, str]] | None = []
        for kind, db, child, name, d, u, own, ref, _ in rows:
            if kind == "view":
                bases = view_bases(str(own))
            elif kind == "key":
                grouped.setdefault((db, child, name, d, u), []).append((own, ref))
        keys = [
            _Key(
                db,
                child,
                name,
                d,
                u,
                tuple(o for o, _ in pairs),
                frozenset(r.lower() for _, r in pairs),
                frozenset(o.lower() for o, _ in pairs),
                f"{db}.{child}",
            )
            for (db, child, name, d, u), pairs in grouped.items()
        ]
        return _Found(keys, bases or [], unread_view=bases is None)

    def _mariadb_rows(self, names: dict[str, str | None]) -> list[Any] | None:
        """The keys from InnoDB's dictionary, their names decoded; None where it cannot
        say (not MariaDB, no PROCESS privilege, a name its files encode)."""
        if not _FILE_NAME.fullmatch(names["t"] or ""):
            return None
        try:
            rows = list(self.conn.execute(text(_MARIADB_KEYS), names))
        except DBAPIError:
            self._innodb = False  # the catalog view from here on
            return None
        found = []
        for kind, db, child, name, *rest in rows:
            if kind == "database" and not _FILE_NAME.fullmatch(str(db or "")):
                return None
            if kind == "key":
                db, child, name = (
                    _ENCODED.sub(lambda m: chr(int(m[1], 16)), v) for v in (db, child, name)
                )
                if "@" in db + child + name:
                    return None
            found.append((kind, db, child, name, *rest))
        return found

    def _sqlite_keys(self, table: str) -> list[_Key]:
        if self._enforced is None:
            pragma = text("SELECT foreign_keys FROM pragma_foreign_keys")
            self._enforced = bool(self.conn.execute(pragma).scalar())
        grouped: dict[tuple[Any, ...], list[tuple[str, str | None]]] = {}
        for child, number, own, ref, d, u in self.conn.execute(text(_SQLITE_KEYS), {"t": table}):
            grouped.setdefault((child, number, d, u), []).append((own, ref))
        primary: list[str] | None = None
        keys = []
        for (child, _number, d, u), pairs in grouped.items():
            referenced = [r for _, r in pairs]
            if None in referenced:  # REFERENCES t without columns: t's primary key
                if primary is None:
                    found = self.conn.execute(text(_SQLITE_PRIMARY_KEY), {"t": table})
                    primary = [str(name) for (name,) in found]
                referenced = list(primary)
            keys.append(
                _Key(
                    None,
                    child,
                    None,
                    d,
                    u,
                    tuple(o for o, _ in pairs),
                    frozenset(str(r).lower() for r in referenced),
                    frozenset(o.lower() for o, _ in pairs),
                    child,
                )
            )
        return keys


# A partition's copy of a trigger of a table in the family is that trigger.
_PG_FIRES = (
    f"{PG_FAMILY}SELECT 'trigger ' || t.tgname::pg_catalog.text || ' (runs ' "
    "|| t.tgfoid::pg_catalog.regproc::pg_catalog.text || ')' "
    f"|| CASE WHEN t.tgrelid <> {PG_TABLE} THEN ' on ' || t.tgrelid::regclass::text ELSE '' "
    f"END FROM pg_catalog.pg_trigger t WHERE t.tgrelid {IN_FAMILY} AND NOT t.tgisinternal "
    f"AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger p WHERE p.oid = t.tgparentid "
    f"AND p.tgrelid {IN_FAMILY}) "
    "AND t.tgenabled <> 'D' AND t.tgtype::pg_catalog.int4 & CAST(:bit AS pg_catalog.int4) <> 0 "
    "UNION ALL SELECT 'rule ' || r.rulename::pg_catalog.text || CASE WHEN r.is_instead "
    "THEN ' (DO INSTEAD: the statement does what the rule says)' ELSE ' (DO ALSO)' END "
    f"FROM pg_catalog.pg_rewrite r WHERE r.ev_class = {PG_TABLE} AND r.ev_type = :ev "
    "AND r.ev_enabled <> 'D' ORDER BY 1"
)
_MYSQL_FIRES = (
    "SELECT TRIGGER_NAME, ACTION_TIMING FROM information_schema.TRIGGERS "
    "WHERE EVENT_OBJECT_SCHEMA = coalesce(:s, DATABASE()) AND EVENT_OBJECT_TABLE = :t "
    "AND EVENT_MANIPULATION = :event ORDER BY 1"
)
_SQLITE_FIRES = (
    f"SELECT name, sql FROM {SQLITE_TRIGGERS} WHERE tbl_name = :t COLLATE NOCASE ORDER BY 1"
)


def _fires(conn: Connection, write: Write) -> list[str]:
    """The triggers (and PostgreSQL rules) that run on the write's event of its table
    (MySQL runs none on TRUNCATE; SQLite has no TRUNCATE)."""
    dialect, names = conn.dialect.name, {"t": write.table, "s": write.schema}
    event = write.event
    if dialect == "postgresql":
        bit, ev = PG_EVENTS[event]
        values = {**names, "bit": bit, "ev": ev, "inherited": event != "INSERT"}
        return [str(r[0]) for r in conn.execute(text(_PG_FIRES), values)]
    if event not in EVENTS:
        return []
    if family(dialect) == "mysql":
        rows = conn.execute(text(_MYSQL_FIRES), {**names, "event": event})
        return [f"trigger {name} ({timing} {event})" for name, timing in rows]
    return [
        f"trigger {name}"
        for name, sql in conn.execute(text(_SQLITE_FIRES), {"t": write.table})
        if event in trigger_events(sql)
    ]
