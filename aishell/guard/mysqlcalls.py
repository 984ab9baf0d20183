"""What a MariaDB call may run, as the login sees the server's routines.

MariaDB does not hold a stored function to its READS SQL DATA: any may write. A call
names a stored function (`f()` in the session's database, `db.f()`), a function of a
stored package (`db.pk.f()`, or `pk.f()` under sql_mode ORACLE: information_schema lists
the package and its body, never the functions in them, so a package's name stands for
all of them), or a loadable function (a UDF: C code, which any login may call and only
one that may read mysql.func can list). A login sees in information_schema only the
routines it may run or alter, yet a view of SQL SECURITY DEFINER runs its definer's. So
where the login cannot see every routine (mysql.proc) or every loadable function, a name
that is none of the server's own functions or words (information_schema.SQL_FUNCTIONS
and KEYWORDS) and no routine it sees counts as code that may write, unseen: what the
guard cannot see, it cannot clear.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot.dialects.mysql import MySQL

# The server's "access denied" errors (to a table, a database) and "no such table".
NO_ACCESS = (1142, 1044, 1146)
# No such information_schema table (MySQL has no SQL_FUNCTIONS, MariaDB before 10.6.3
# neither, nor KEYWORDS).
_NO_TABLE = 1109

# (schema or None, name) of one call, as calls.Call.
Named = tuple[str | None, str]


@dataclass(frozen=True)
class Runs:
    """Code a call may run: the schema (or package) and name the site's
    trusted_functions would name it by, and whether the login sees it at all."""

    schema: str | None
    name: str
    unseen: bool = False


@dataclass(frozen=True)
class MysqlRoutines:
    """What the login sees of the routines some calls may name, lower case."""

    # {called name: [(schema, function), ...]} of stored functions.
    functions: dict[str, list[tuple[str, str]]]
    # {a call's qualifier: [(schema, package), ...]} of packages of that name.
    packages: dict[str, list[tuple[str, str]]]
    current: str | None
    # None where the login may not read mysql.func.
    udfs: frozenset[str] | None
    every_routine: bool
    # The server's own functions and words; read only where something may be unseen.
    builtins: frozenset[str] = frozenset()

    def runs(self, call: Named, home: str | None) -> list[Runs]:
        """What the call may run: its stored or package functions (in `home` for a name
        alone, the session's database; None: any database), a loadable function, or the
        name itself where the login cannot tell what it is."""
        schema, name = call
        found = [
            Runs(where, real)
            for where, real in self.functions.get(name, ())
            if (schema or home) in (None, where)
        ]
        if schema is not None:
            found += [Runs(package, name) for _, package in self.packages.get(schema, ())]
        elif self.udfs is not None and name in self.udfs:
            found.append(Runs(home, name))
        if not found and self.unknown(call):
            found.append(Runs(schema, name, unseen=True))
        return found

    def unknown(self, call: Named) -> bool:
        """Whether the call may name a routine or loadable function the login cannot see:
        a qualified name where it sees not every routine, a name alone (none of the
        server's own) where it sees not every routine or loadable function."""
        schema, name = call
        if schema is not None:
            return not self.every_routine
        incomplete = self.udfs is None or not self.every_routine
        return incomplete and name not in self.builtins


def mysql_routines(lookup: Any, calls: Iterable[Named]) -> MysqlRoutines:
    """The routines the calls may name, looked up on `lookup` (a cursor of the statement's
    connection), matched as the server matches names: without case or accents
    (utf8mb3_general_ci: `evíl()` calls evil()), which Python's comparison would not."""
    calls = list(calls)
    names = sorted({name for _, name in calls})
    qualifiers = sorted({schema for schema, _ in calls if schema is not None})
    functions, packages, current = _stored(lookup, names, qualifiers)
    udfs, every = mysql_udfs(lookup), _every(lookup)
    alone = any(schema is None for schema, _ in calls)
    builtins = mysql_builtins(lookup) if alone and (udfs is None or not every) else frozenset()
    return MysqlRoutines(functions, packages, current, udfs, every, builtins)


def _stored(
    lookup: Any, names: Sequence[str], qualifiers: Sequence[str]
) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]], str | None]:
    """Stored functions by the names called, packages by the calls' qualifiers, and the
    session's database (None where nothing matched: then none is needed)."""
    wanted = [(n, "FUNCTION") for n in names] + [(q, "PACKAGE") for q in qualifiers]
    if not wanted:
        return {}, {}, None
    called = " UNION ALL ".join(["SELECT %s AS n, %s AS k"] * len(wanted))
    # A package's functions are listed nowhere but in its body's text: the package (or
    # its body) stands for them.
    lookup.execute(
        "SELECT c.n, c.k, LOWER(r.ROUTINE_SCHEMA), LOWER(r.ROUTINE_NAME), LOWER(DATABASE()) "
        f"FROM ({called}) c JOIN information_schema.ROUTINES r "
        "ON (r.ROUTINE_TYPE = c.k OR c.k = 'PACKAGE' AND r.ROUTINE_TYPE = 'PACKAGE BODY') "
        "AND r.ROUTINE_NAME = CONVERT(c.n USING utf8mb3) COLLATE utf8mb3_general_ci",
        tuple(value for pair in wanted for value in pair),
    )
    functions: dict[str, list[tuple[str, str]]] = {}
    packages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for name, kind, schema, routine, database in lookup.fetchall():
        into = functions if kind == "FUNCTION" else packages
        if (str(schema), str(routine)) not in into.get(str(name), []):
            into.setdefault(str(name), []).append((str(schema), str(routine)))
        current = database
    return functions, packages, current


def mysql_udfs(lookup: Any) -> frozenset[str] | None:
    """The loadable functions (CREATE FUNCTION ... SONAME), lower case: C code that may do
    anything. Only mysql.func lists them: None where the login may not read it."""
    import pymysql  # only a MySQL/MariaDB target has this lookup

    try:
        lookup.execute("SELECT LOWER(name) FROM mysql.func")
    except pymysql.MySQLError as exc:
        if exc.args and exc.args[0] in NO_ACCESS:
            return None
        raise
    return frozenset(str(row[0]) for row in lookup.fetchall())


def _every(lookup: Any) -> bool:
    """Whether information_schema.ROUTINES shows the login every routine: MariaDB shows
    all to a login that may read mysql.proc; MySQL 8 (which has none) to one with the
    global SELECT or SHOW_ROUTINE privilege."""
    import pymysql  # only a MySQL/MariaDB target has this lookup

    try:
        lookup.execute("SELECT 1 FROM mysql.proc LIMIT 0")
        lookup.fetchall()
        return True
    except pymysql.MySQLError as exc:
        if not exc.args or exc.args[0] not in NO_ACCESS:
            raise
        if exc.args[0] != 1146:
            return False
    lookup.execute(
        "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES "
        "WHERE PRIVILEGE_TYPE IN ('SELECT', 'SHOW_ROUTINE') AND GRANTEE = CONCAT("
        "'''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', "
        "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"
    )
    row = lookup.fetchone()
    return bool(row and row[0])


# Where the server does not list its own functions: the words and functions sqlglot
# knows of MySQL's, as a floor.
_KNOWN_TO_THE_PARSER = frozenset(name.lower() for name in MySQL.Parser.FUNCTIONS)


def mysql_builtins(lookup: Any) -> frozenset[str]:
    """The server's own functions and the words its grammar reads before "(" (IF, LEFT,
    DATE), lower case: no call of one runs a routine or a loadable function. Asked one
    table at a time (MariaDB 10.11 crashed on a UNION of information_schema tables)."""
    import pymysql  # only a MySQL/MariaDB target has this lookup

    found: set[str] = set()
    listed = True
    for sql in (
        "SELECT LOWER(FUNCTION) FROM information_schema.SQL_FUNCTIONS",
        "SELECT LOWER(WORD) FROM information_schema.KEYWORDS",
    ):
        try:
            lookup.execute(sql)
        except pymysql.MySQLError as exc:
            if not exc.args or exc.args[0] not in (_NO_TABLE, *NO_ACCESS):
                raise
            listed = False
            continue
        found |= {str(row[0]) for row in lookup.fetchall()}
    return frozenset(found if listed else found | _KNOWN_TO_THE_PARSER)
