"""What of a SQLite database only the application that made it can evaluate.

An application registers SQL functions and collations on its own connections
(sqlite3_create_function, Python's create_function and create_collation) and may name
them in an index's expression or WHERE clause, a column's collation, a CHECK constraint,
a generated column, a trigger or a view. The file keeps only their names: any other
connection that needs one fails ("no such function", "unknown function", "no such
collation sequence"). aishell has not the application's code and never puts a stand-in
in its place on the database (another function would make integrity_check report false
corruption and REINDEX build wrong indexes), so each operation leaves out what needs it,
naming what and why.

Found without evaluating anything in the database: its schema is read in one query and
made again in an empty database in memory, where SQLite itself names each function and
collation it lacks (no parse of ours decides what a function is); each object's text then
says which of those it names, and the copy's index key collations which indexes sort by
one. A copy aishell reads itself is read with tripwires in their place (`tripwires`): a
read that would need one fails, so no result ever depends on them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aishell.sqltext import quote_plain_identifier, text
from aishell.targets.appgroups import groups
from aishell.targets.catalog import sqlite_name, sqlite_text_as_bytes

# The schema, in the order it was made (an index after its table). No app code runs.
SCHEMA = "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid"

_MISSING = (
    (re.compile(r"no such function: (.+)$"), False),
    (re.compile(r"unknown function: (.+)\(\)$"), False),
    (re.compile(r"no such collation sequence: (.+)$"), True),
)
_NO_MODULE = re.compile(r"no such module: (.+)$")
_TOKEN = re.compile(
    r"'(?:[^']|'')*'|--[^\n]*|/\*.*?(?:\*/|$)|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|\w+|\S",
    re.S,
)
_TABLE_CONSTRAINT = {"CONSTRAINT", "CHECK", "PRIMARY", "UNIQUE", "FOREIGN"}
# The kinds of use that live in a table's own definition (not a trigger's, a view's).
KEYS = ("index", "primary key")
# A virtual table whose module the application registers (sqlite3_create_module): the
# file holds its CREATE VIRTUAL TABLE, and any statement that opens it fails with
# "no such module" on every other connection.
VIRTUAL = "virtual table"
_VIRTUAL = re.compile(r"\s*CREATE\s+VIRTUAL\b", re.I)
# Tries per object to make it in memory: each names one more function or collation.
_TRIES = 32


@dataclass(frozen=True)
class Use:
    """One object of `table` naming a function or collation the application defines."""

    table: str
    # index, primary key, column, CHECK constraint, generated column, ..., or virtual
    # table (a table whose module, `code`, the application defines)
    kind: str
    name: str  # the index's, column's, constraint's, trigger's or view's name
    code: str  # the function's or collation's name
    collation: bool
    column: str = ""  # the key column an index or primary key sorts by the collation
    event: str = ""  # a trigger's: DELETE, INSERT or UPDATE

    def says(self) -> str:
        if self.kind == "virtual table":
            return (
                f"it is a virtual table of module {self.code}, which the application "
                "defines, not SQLite"
            )
        what = f"its {self.kind} {self.name}".rstrip()
        if self.collation and self.column:
            return (
                f"{what} sorts column {self.column} by collation {self.code}, which the "
                "application defines, not SQLite"
            )
        if self.collation:
            return f"{what} uses collation {self.code}, which the application defines, not SQLite"
        return f"{what} calls {self.code}(), a function the application defines, not SQLite"


@dataclass(frozen=True)
class AppCode:
    """Every use of application-defined code in a database's schema."""

    uses: tuple[Use, ...] = ()

    def of(self, table: str, stops: Callable[[Use], bool]) -> list[Use]:
        return [u for u in self.uses if u.table == table and stops(u)]

    def reason(self, table: str, what: str, stops: Callable[[Use], bool]) -> str | None:
        """'TABLE: WHAT: its index ... calls f(), ...' for the uses `stops` says stop
        the operation on the table; None when nothing does."""
        found = self.of(table, stops)
        if not found:
            return None
        return f"{table}: {what}: " + "; ".join(dict.fromkeys(u.says() for u in found))

    def tables(self, stops: Callable[[Use], bool]) -> list[str]:
        return list(dict.fromkeys(u.table for u in self.uses if stops(u)))

    def said(self, stops: Callable[[Use], bool]) -> str:
        """Each table with the uses `stops` says stop an operation of the whole file."""
        return "; ".join(
            f"{t}: " + "; ".join(dict.fromkeys(u.says() for u in self.of(t, stops)))
            for t in self.tables(stops)
        )


# Which uses stop which operation, as SQLite evaluates them.
def stops_check(use: Use) -> bool:
    """integrity_check, quick_check and REINDEX of the table evaluate its index keys
    and expressions, CHECK constraints and virtual generated columns."""
    return use.kind in (*KEYS, "CHECK constraint", "generated column", "table", VIRTUAL)


def stops_reading(use: Use) -> bool:
    """Any read of the table's rows (a count, a copy) opens its module."""
    return use.kind == VIRTUAL


def stops_analyze(use: Use) -> bool:
    """ANALYZE compares each index's keys: a collation there."""
    return use.kind in KEYS and use.collation


def stops_rewrite(use: Use) -> bool:
    """VACUUM (and VACUUM INTO) makes every table and index again: all but triggers'
    and views' uses."""
    return use.kind not in ("trigger", "view")


def stops_delete(columns: Sequence[str]) -> Callable[[Use], bool]:
    """A DELETE comparing `columns` updates every index and fires DELETE triggers."""

    def stops(use: Use) -> bool:
        if use.kind == "column":
            return use.name in columns
        if use.kind == "trigger":
            return use.event == "DELETE"
        return use.kind in (*KEYS, "table", VIRTUAL)

    return stops


def stops_insert(use: Use) -> bool:
    """An INSERT (of a purge's rows into an archive table) updates every index, checks
    every CHECK constraint, computes generated columns and the defaults of the columns
    it leaves out, and fires INSERT triggers."""
    if use.kind == "trigger":
        return use.event == "INSERT"
    return use.kind not in ("column", "view")


def missing_code(exc: BaseException) -> tuple[str, bool] | None:
    """The function or collation (its name, whether a collation) an error of SQLite's
    says this connection lacks; None for any other error."""
    message = str(getattr(exc, "orig", None) or exc).strip()
    for pattern, collation in _MISSING:
        found = pattern.search(message)
        if found:
            return found.group(1), collation
    return None


# --- reading the schema ------------------------------------------------------------------


def read_app_code(conn: Connection) -> AppCode:
    """The target's uses of application code, from one read of its schema."""
    with sqlite_text_as_bytes(conn):
        rows = conn.execute(text(SCHEMA)).all()
    return find_app_code(_decoded(rows))


def file_app_code(conn: sqlite3.Connection) -> AppCode:
    """The same, of a SQLite file aishell opened itself (a backup's copy)."""
    before, conn.text_factory = conn.text_factory, bytes
    try:
        rows = conn.execute(SCHEMA).fetchall()
    finally:
        conn.text_factory = before
    return find_app_code(_decoded(rows))


def _decoded(rows: Sequence[Any]) -> list[tuple[str, str, str, str]]:
    """Objects whose names are UTF-8 (no statement can name another)."""
    found = []
    for kind, name, table, sql in rows:
        names = (sqlite_name(kind), sqlite_name(name), sqlite_name(table))
        if None not in names and isinstance(sql, bytes):
            found.append((*names, sql.decode("utf-8", "replace")))
    return found  # type: ignore[return-value]


def find_app_code(objects: Sequence[tuple[str, str, str, str]]) -> AppCode:
    """The uses of application code among these (type, name, tbl_name, sql) objects."""
    made: list[sqlite3.Connection] = []  # the groups whose index keys are read below
    located: Located = []
    try:
        for group in groups(objects):
            made.append(sqlite3.connect(":memory:"))
            found_here = _make_again(made[-1], group)
            if not found_here:
                # Made fresh, a group lacking nothing names none of the code in its keys.
                made.pop().close()
            located += found_here
        made.append(sqlite3.connect(":memory:"))
        modules = _app_modules(made[-1], objects)
        names = {(code.lower(), collation) for _, code, collation in located}
        if not names:
            return AppCode(tuple(modules))
        uses: list[Use] = []
        for obj in objects:
            found = _uses_in_text(obj, names)
            if not found:
                # Named in a way our reading of its text missed: SQLite's word stands.
                found = [_located(obj, code, coll) for o, code, coll in located if o == obj]
            uses += found
        keys = [use for db in made for use in _key_collations(db, names)]
        # An index's own COLLATE is said with the column it sorts, once.
        sorted_by = {(u.table, u.name, u.code) for u in keys}
        uses = [u for u in uses if not (u.collation and (u.table, u.name, u.code) in sorted_by)]
        uses += keys + modules
        return AppCode(tuple(dict.fromkeys(uses)))
    finally:
        for db in made:
            db.close()


Located = list[tuple[tuple[str, str, str, str], str, bool]]


def _make_again(made: sqlite3.Connection, objects: Sequence[tuple[str, str, str, str]]) -> Located:
    """Each object made again in memory, each function or collation SQLite says it
    lacks given an empty stand-in there (nothing in memory has rows to evaluate), and
    each trigger and view prepared as a statement would fire or read it."""
    located: Located = []
    for obj in objects:
        kind, name, table, sql = obj
        if name.startswith("sqlite_") or _VIRTUAL.match(sql):
            continue  # SQLite's own; a virtual table's module is not ours to make
        for statement in [sql, *_exercises(made, kind, name, table, sql)]:
            located += [(obj, *found) for found in _prepared(made, statement)]
    return located


def _app_modules(
    made: sqlite3.Connection, objects: Sequence[tuple[str, str, str, str]]
) -> list[Use]:
    """Each virtual table whose module this process's SQLite lacks (fts5, rtree and the
    like it has): SQLite names the module when the table is made again in memory."""
    found = []
    for kind, name, _table, sql in objects:
        if kind != "table" or not _VIRTUAL.match(sql):
            continue
        try:
            made.execute(sql)
        except sqlite3.Error as exc:
            module = _NO_MODULE.search(str(exc))
            if module:
                found.append(Use(name, VIRTUAL, name, module.group(1), False))
    return found


def _prepared(made: sqlite3.Connection, statement: str) -> list[tuple[str, bool]]:
    found: list[tuple[str, bool]] = []
    for _ in range(_TRIES):
        try:
            made.execute(statement).fetchall()
            return found
        except sqlite3.Error as exc:
            lacked = missing_code(exc)
            if lacked is None:
                return found  # another reason (a module it lacks): not application code
            found.append(lacked)
            if lacked[1]:
                made.create_collation(lacked[0], _never_compared)
            else:
                made.create_function(lacked[0], -1, _never_called, deterministic=True)
    return found


def _exercises(made: sqlite3.Connection, kind: str, name: str, table: str, sql: str) -> list[str]:
    """The statements that would fire a trigger or read a view, to be prepared only."""
    quoted = quote_plain_identifier(table)
    if kind == "view":
        return [f"EXPLAIN SELECT * FROM {quote_plain_identifier(name)}"]
    if kind != "trigger":
        return []
    columns = [
        quote_plain_identifier(r[0])
        for r in made.execute("SELECT name FROM pragma_table_xinfo(?) WHERE hidden = 0", (table,))
    ]
    sets = ", ".join(f"{c} = {c}" for c in columns)
    return [
        f"EXPLAIN DELETE FROM {quoted}",
        f"EXPLAIN INSERT INTO {quoted} DEFAULT VALUES",
        *([f"EXPLAIN UPDATE {quoted} SET {sets}"] if sets else []),
    ]


def _never_called(*args: object) -> None:
    raise sqlite3.OperationalError("an application's function has no stand-in")


def _never_compared(left: str, right: str) -> int:
    return 0  # never called in memory: its tables have no rows


# --- which object names which -------------------------------------------------------------

Named = set[tuple[str, bool]]


def _tokens(sql: str) -> list[str]:
    """The statement's words and marks, comments dropped, quoted names unquoted and a
    string literal as a lone quote (never a name)."""
    found = []
    for match in _TOKEN.finditer(sql):
        token = match.group()
        if token.startswith(("--", "/*")):
            continue
        if token[0] in '"`[':
            token = token[1:-1].replace('""', '"') if token[0] == '"' else token[1:-1]
        elif token[0] == "'":
            token = "'"
        found.append(token)
    return found


def _named(tokens: Sequence[str], names: Named) -> list[tuple[int, str, bool]]:
    """(position, name, is a collation) of each call of a function and each COLLATE."""
    found = []
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if after == "(" and (token.lower(), False) in names:
            found.append((i, token, False))
        elif i and tokens[i - 1].upper() == "COLLATE" and (token.lower(), True) in names:
            found.append((i, token, True))
    return found


def _uses_in_text(obj: tuple[str, str, str, str], names: Named) -> list[Use]:
    kind, name, table, sql = obj
    tokens = _tokens(sql)
    named = _named(tokens, names)
    if kind == "table":
        return _table_uses(table, tokens, names)
    if kind == "index":
        return [Use(table, "index", name, code, coll) for _, code, coll in named]
    if kind == "trigger":
        event = _event(tokens)
        return [Use(table, "trigger", name, c, coll, event=event) for _, c, coll in named]
    if kind == "view":
        return [Use(name, "view", name, code, coll) for _, code, coll in named]
    return []


def _located(obj: tuple[str, str, str, str], code: str, collation: bool) -> Use:
    kind, name, table, sql = obj
    if kind == "table":
        return Use(table, "table", "definition", code, collation)
    if kind == "view":
        return Use(name, "view", name, code, collation)
    return Use(table, kind, name, code, collation, event=_event(_tokens(sql)))


def _event(tokens: Sequence[str]) -> str:
    return next((t.upper() for t in tokens if t.upper() in ("DELETE", "INSERT", "UPDATE")), "")


def _table_uses(table: str, tokens: Sequence[str], names: Named) -> list[Use]:
    """Each column's or constraint's use, from the definition's parts between commas."""
    uses = []
    for part in _parts(tokens):
        named = _named(part, names)
        if not named or not part:
            continue
        words = [t.upper() for t in part]
        if words[0] in _TABLE_CONSTRAINT:
            # A key's collation is read from the key itself (_key_collations).
            name = part[1] if words[0] == "CONSTRAINT" else ""
            uses += [Use(table, "CHECK constraint", name, c, k) for _, c, k in named if not k]
            continue
        column = part[0]
        for at, code, collation in named:
            clause = next((w for w in reversed(words[:at]) if w in ("CHECK", "AS", "DEFAULT")), "")
            if collation:
                uses.append(Use(table, "column", column, code, True))
            elif clause == "CHECK":
                uses.append(Use(table, "CHECK constraint", f"on column {column}", code, False))
            elif clause == "AS":
                generated = "stored generated column" if "STORED" in words else "generated column"
                uses.append(Use(table, generated, column, code, False))
            else:
                uses.append(Use(table, "default of column", column, code, False))
    return uses


def _parts(tokens: Sequence[str]) -> list[list[str]]:
    """A CREATE TABLE's column definitions and table constraints."""
    parts: list[list[str]] = [[]]
    depth = 0
    for token in tokens:
        if token == "(":
            depth += 1
            if depth == 1:
                continue
        elif token == ")":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and token == ",":
            parts.append([])
        elif depth >= 1:
            parts[-1].append(token)
    return parts


# Every key column of every index (a WITHOUT ROWID table's primary key among them),
# read from the copy in memory: a key sorted by a column's collation names none itself.
_KEYS = (
    "SELECT m.name, l.name, l.origin, x.cid, x.name, x.coll, x.key FROM sqlite_schema m "
    "JOIN pragma_index_list(m.name) l JOIN pragma_index_xinfo(l.name) x "
    "WHERE m.type = 'table'"
)


def _key_collations(made: sqlite3.Connection, names: Named) -> list[Use]:
    rows = made.execute(_KEYS).fetchall()
    # A WITHOUT ROWID table's primary key is the table: its index holds no rowid.
    with_rowid = {(r[0], r[1]) for r in rows if r[3] == -1}
    uses = []
    for table, index, origin, _, column, coll, key in rows:
        if key and coll and (coll.lower(), True) in names:
            if origin == "pk" and (table, index) not in with_rowid:
                uses.append(Use(table, "primary key", "", coll, True, column=column))
            else:
                uses.append(Use(table, "index", index, coll, True, column=column))
    return uses


# --- reading a copy aishell opened itself ------------------------------------------------


def tripwires(conn: sqlite3.Connection, code: AppCode) -> Callable[[], None]:
    """Registered on a connection of aishell's own before it reads rows: each of the
    application's functions fails when called, and each collation is watched. A full scan
    never compares keys, so counts and checksums read through an index sorted by such a
    collation need it only to exist; the check returned raises if one was ever called,
    so no result read on the connection depends on a stand-in."""
    compared: list[str] = []
    for use in code.uses:
        if use.kind == VIRTUAL:
            continue  # a module: nothing of it can be registered as a tripwire
        if use.collation:
            conn.create_collation(use.code, _watched(use.code, compared))
        else:
            conn.create_function(use.code, -1, _never_called, deterministic=True)

    def check() -> None:
        if compared:
            raise sqlite3.OperationalError(
                f"reading it needed collation {compared[0]}, which the application defines"
            )

    return check


def _watched(name: str, compared: list[str]) -> Callable[[str, str], int]:
    def compare(left: str, right: str) -> int:
        compared.append(name)
        return 0

    return compare


def readable_columns(conn: sqlite3.Connection, table: str, code: AppCode) -> str:
    """What `SELECT ... FROM table` reads: every column, but a virtual generated column
    computed by the application's function (never stored, it cannot be read)."""
    computed = {u.name for u in code.of(table, lambda u: u.kind == "generated column")}
    if not computed:
        return "*"
    rows = conn.execute("SELECT name FROM pragma_table_xinfo(?)", (table,)).fetchall()
    return ", ".join(quote_plain_identifier(r[0]) for r in rows if r[0] not in computed)
