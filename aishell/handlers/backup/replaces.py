"""What a restore drops or overwrites in its target, read from the backup itself.

A restore replaces more than the tables its manifest names: pg_restore --clean drops every
object of the archive's table of contents (tables, views, sequences, routines, types,
triggers, ...), and a MariaDB dump drops each table, view, sequence, routine and event
it creates, whatever the target holds under that name. A view in the backup is preceded
by `DROP TABLE IF EXISTS` of its name, so a table of that name in the target goes with
its rows. So the restore's estimate lists what the backup's own drop statements reach in
the target's catalog: the objects replaced, those of them that hold data (a person names
that approval), and the objects in the way that a drop does not remove (the restore
would stop part way, so it is refused before it starts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.handlers.backup.manifest import Chain
from aishell.handlers.backup.processes import run_tool, server_env
from aishell.sqltext import text
from aishell.tool.context import ToolContext

# Kinds of object that hold rows or state a restore would lose.
DATA_KINDS = frozenset({"table", "sequence", "materialized view"})


@dataclass
class Replaced:
    """What a restore replaces in its target, each as 'kind name'."""

    objects: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    # The tables among them, by name as the target's catalog spells it (PostgreSQL:
    # schema.name), whose identity and size an approval of the restore covers.
    tables: list[str] = field(default_factory=list)
    # Objects the restore would meet in its way, each with why.
    clashes: list[str] = field(default_factory=list)


@dataclass
class _Catalog:
    """The target's objects by (kind, key); removed as the simulated drops reach them."""

    objects: dict[tuple[str, str], str]
    done: Replaced = field(default_factory=Replaced)

    def drop(self, kinds: Iterable[str], key: str, note: str = "") -> bool:
        for kind in kinds:
            shown = self.objects.pop((kind, key), None)
            if shown is not None:
                label = f"{kind} {shown}{note}"
                self.done.objects.append(label)
                if kind in DATA_KINDS:
                    self.done.data.append(label)
                if kind == "table":
                    self.done.tables.append(shown)
                return True
        return False


def restore_replaces(chain: Chain, conn: Connection, ctx: ToolContext) -> Replaced:
    """Every object of the target the restore of `chain` drops or overwrites."""
    return _BY_DIALECT.get(family(conn.dialect.name), _mysql)(chain, conn, ctx)


# --- SQLite ---------------------------------------------------------------------------------

_HAS_SEQUENCES = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'"


def _sqlite(chain: Chain, conn: Connection, ctx: ToolContext) -> Replaced:
    """A full backup replaces the whole file; an increment its changed and dropped tables,
    with their triggers and indexes."""
    rows = conn.execute(
        text(
            "SELECT type, name, tbl_name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\' AND type IN ('table', 'view', 'trigger') ORDER BY type, name"
        )
    ).all()
    full = any(manifest["kind"] == "full" for _, manifest in chain)
    reached = {t for _, m in chain for t in [*(m.get("changed") or []), *(m.get("dropped") or [])]}
    done = Replaced()
    for kind, name, table in rows:
        if full or table in reached:
            label = f"{kind} {name}" + (f" on {table}" if kind == "trigger" else "")
            done.objects.append(label)
            if kind == "table":
                done.data.append(label)
                done.tables.append(name)
    counters = _sqlite_counters(conn, full, reached)
    if counters:
        # State a restore loses (the next id each table hands out), so named as data.
        label = f"AUTOINCREMENT counters (sqlite_sequence) of {', '.join(counters)}"
        done.objects.append(label)
        done.data.append(label)
    return done


def _sqlite_counters(conn: Connection, full: bool, reached: set[str]) -> list[str]:
    """The tables whose AUTOINCREMENT counter in the target the restore puts back as the
    backup has it: every one when the chain copies a whole file (a chain starts with
    one), else those of the tables it reloads or drops."""
    if conn.execute(text(_HAS_SEQUENCES)).first() is None:
        return []
    found = conn.execute(text("SELECT name FROM sqlite_sequence ORDER BY name"))
    names = [str(name) for (name,) in found]
    return names if full else [n for n in names if n in reached]


# --- MariaDB / MySQL -----------------------------------------------------------------------

# A dump's drops, as mariadb-dump writes them (some inside executable comments).
_MY_DROP = re.compile(
    rb"^(?:/\*!\d+ )?DROP (TABLE|VIEW|SEQUENCE|FUNCTION|PROCEDURE|EVENT) IF EXISTS "
    rb"`((?:[^`]|``)+)`"
)
# What each drop removes when the target has it: DROP TABLE also drops a sequence, and
# neither DROP TABLE nor DROP VIEW removes the other's kind (a note, not an error).
_MY_DROPS = {
    "TABLE": ("table", "sequence"),
    "VIEW": ("view",),
    "SEQUENCE": ("sequence",),
    "FUNCTION": ("function",),
    "PROCEDURE": ("procedure",),
    "EVENT": ("event",),
}
_MY_RELATIONS = ("table", "view", "sequence")


def _mysql_drops(path: Path) -> list[tuple[str, str]]:
    """Each DROP the dump runs, in order: its kind and the object's name."""
    drops: list[tuple[str, str]] = []
    with path.open("rb") as dump:
        for line in dump:
            if line.startswith((b"DROP ", b"/*!")):
                found = _MY_DROP.match(line)
                if found:
                    name = found.group(2).decode("utf-8", "replace").replace("``", "`")
                    drops.append((found.group(1).decode(), name))
    return drops


def _mysql_catalog(conn: Connection) -> tuple[dict[tuple[str, str], str], dict[str, list[str]]]:
    """The target's objects by (kind, key), and each table's triggers. Routine and event
    names are keyed folded: the server compares them without case."""
    objects: dict[tuple[str, str], str] = {}
    kinds = {"VIEW": "view", "SEQUENCE": "sequence"}
    for name, kind in conn.execute(
        text(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE()"
        )
    ):
        objects[(kinds.get(kind, "table"), name)] = name
    for name, kind in conn.execute(
        text(
            "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = DATABASE()"
        )
    ):
        objects[(str(kind).lower(), name.lower())] = name
    for (name,) in conn.execute(
        text("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()")
    ):
        objects[("event", name.lower())] = name
    triggers: dict[str, list[str]] = {}
    for name, table in conn.execute(
        text(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() ORDER BY TRIGGER_NAME"
        )
    ):
        triggers.setdefault(table, []).append(name)
    return objects, triggers


def _mysql(chain: Chain, conn: Connection, ctx: ToolContext) -> Replaced:
    objects, triggers = _mysql_catalog(conn)
    catalog = _Catalog(objects)
    for link, manifest in chain:
        drops = _mysql_drops(link) if link.stat().st_size else []
        drops += [("TABLE", t) for t in manifest.get("dropped") or []]
        views = {name for kind, name in drops if kind == "VIEW"}
        sequences = {name for kind, name in drops if kind == "SEQUENCE"}
        for kind, name in drops:
            folded = name if kind in ("TABLE", "VIEW", "SEQUENCE") else name.lower()
            present = [k for k in _MY_DROPS[kind] if (k, folded) in catalog.objects]
            if not present:
                continue
            became = "view" if name in views else "sequence" if name in sequences else "table"
            mismatch = kind in ("TABLE", "VIEW", "SEQUENCE") and present[0] != became
            catalog.drop(present[:1], folded, f" (a {became} in the backup)" if mismatch else "")
            if present[0] == "table":
                # A table's triggers go with it.
                catalog.done.objects += [f"trigger {t} on {name}" for t in triggers.pop(name, [])]
        for name in {n for kind, n in drops if kind in ("TABLE", "VIEW", "SEQUENCE")}:
            left = [k for k in _MY_RELATIONS if (k, name) in catalog.objects]
            if left and name not in (manifest.get("dropped") or []):
                became = "view" if name in views else "sequence" if name in sequences else "table"
                catalog.done.clashes.append(
                    f"the backup creates {became} {name} and the target has a {left[0]} "
                    "of that name, which the dump's drop statements leave in place"
                )
    return catalog.done


# --- PostgreSQL ----------------------------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")*"|[^".\s(]+)'
_PG_DROP = re.compile(
    rf"^DROP (?P<kind>[A-Z]+(?: [A-Z]+)*?) IF EXISTS (?:(?P<sub>{_IDENT}) ON )?"
    rf"(?P<name>{_IDENT}(?:\.{_IDENT})?)(?:\((?P<args>.*)\))?(?: CASCADE)?;$"
)
_PG_RELATIONS = {
    "r": "table",
    "p": "table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "f": "foreign table",
    "i": "index",
    "I": "index",
}
_PG_ROUTINES = {"f": "function", "w": "function", "p": "procedure", "a": "aggregate"}
# The schemas of the system, which no archive of a database restores into.
# A name matched by LIKE as text: the catalog has no LIKE of name against name, which a
# database could define.
_PG_USER = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_%'"
)


def _name(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def _qualified(text_: str) -> str:
    """schema.name as the catalog spells it, from an archive's quoted form."""
    return ".".join(_name(part) for part in re.findall(_IDENT, text_))


def _pg_drops(link: Path, conn: Connection, ctx: ToolContext) -> list[re.Match[str]]:
    """The DROP statements pg_restore --clean runs for the archive, as it prints them (the
    schema only: no row of the archive is read)."""
    url = conn.engine.url
    argv = ["pg_restore", "--clean", "--if-exists", "--schema-only", "-f", "-", str(link)]
    script = run_tool(argv, server_env(url), ctx).stdout.decode("utf-8", "replace")
    return [m for line in script.splitlines() if (m := _PG_DROP.match(line))]


def _pg_catalog(conn: Connection) -> _Catalog:
    not_extension = (
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
        "WHERE d.classid OPERATOR(pg_catalog.=) {cls}::pg_catalog.regclass "
        "AND d.objid = {oid} AND d.deptype = 'e')"
    )
    objects: dict[tuple[str, str], str] = {}
    for nsp, name, kind in conn.execute(
        text(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I') AND {_PG_USER} AND "
            + not_extension.format(cls="'pg_catalog.pg_class'", oid="c.oid")
        )
    ):
        objects[(_PG_RELATIONS[kind], f"{nsp}.{name}")] = f"{nsp}.{name}"
    for nsp, name, kind, types in conn.execute(
        text(
            "SELECT n.nspname, p.proname, p.prokind, pg_catalog.oidvectortypes(p.proargtypes) "
            "FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
            f"WHERE {_PG_USER} AND " + not_extension.format(cls="'pg_catalog.pg_proc'", oid="p.oid")
        )
    ):
        objects[(_PG_ROUTINES[kind], f"{nsp}.{name}({types})")] = f"{nsp}.{name}({types})"
    for nsp, name, kind in conn.execute(
        text(
            "SELECT n.nspname, t.typname, t.typtype FROM pg_catalog.pg_type t "
            "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
            "LEFT JOIN pg_catalog.pg_class c ON c.oid = t.typrelid "
            f"WHERE {_PG_USER} AND t.typcategory <> 'A' AND coalesce(c.relkind, 'c') = 'c' AND "
            + not_extension.format(cls="'pg_catalog.pg_type'", oid="t.oid")
        )
    ):
        objects[("domain" if kind == "d" else "type", f"{nsp}.{name}")] = f"{nsp}.{name}"
    for kind, name, nsp, table in conn.execute(
        text(
            "SELECT 'trigger', t.tgname, n.nspname, c.relname FROM pg_catalog.pg_trigger t "
            "JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n "
            f"ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND {_PG_USER} "
            "UNION ALL SELECT 'rule', r.rulename, n.nspname, c.relname "
            "FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE r.rulename <> '_RETURN' AND {_PG_USER} "
            "UNION ALL SELECT 'policy', p.polname, n.nspname, c.relname "
            "FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid "
            f"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {_PG_USER} "
            "UNION ALL SELECT 'schema', n.nspname, '', '' FROM pg_catalog.pg_namespace n "
            f"WHERE {_PG_USER} AND n.nspname <> 'public' "
            "UNION ALL SELECT 'extension', e.extname, '', '' FROM pg_catalog.pg_extension e "
            "WHERE e.extname <> 'plpgsql'"
        )
    ):
        key = f"{name} on {nsp}.{table}" if table else name
        objects[(kind, key)] = key
    return _Catalog(objects)


def _same_arguments(archived: str, types: str) -> bool:
    """Whether an archive's identity arguments ('x integer, VARIADIC y text[]') are the
    types the catalog lists ('integer, text[]'): DROP FUNCTION ignores names and modes."""
    given = [a.strip() for a in archived.split(",")] if archived.strip() else []
    wanted = [t.strip() for t in types.split(",")] if types.strip() else []
    return len(given) == len(wanted) and all(
        g == w or g.endswith(f" {w}") for g, w in zip(given, wanted, strict=True)
    )


def _pg_drop(catalog: _Catalog, drop: re.Match[str]) -> None:
    kind, name = drop.group("kind").lower(), _qualified(drop.group("name"))
    if drop.group("sub"):
        catalog.drop([kind], f"{_name(drop.group('sub'))} on {name}")
    elif drop.group("args") is not None:
        for k, key in list(catalog.objects):
            signature = key[len(name) + 1 : -1]
            if (
                k == kind
                and key.startswith(f"{name}(")
                and key.endswith(")")
                and _same_arguments(drop.group("args"), signature)
            ):
                catalog.drop([kind], key)
    elif not catalog.drop([kind], name):
        relations = set(_PG_RELATIONS.values())
        other = [k for k in relations if (k, name) in catalog.objects]
        if kind in relations and other:
            catalog.done.clashes.append(
                f"pg_restore --clean would stop at DROP {kind.upper()} {name}: the target's "
                f"{name} is a {other[0]}"
            )


def _postgresql(chain: Chain, conn: Connection, ctx: ToolContext) -> Replaced:
    catalog = _pg_catalog(conn)
    for link, _manifest in chain:
        if link.stat().st_size:
            for drop in _pg_drops(link, conn, ctx):
                _pg_drop(catalog, drop)
    # What the target hangs on a relation the restore drops goes with it, though the
    # archive does not name it.
    dropped = set()
    for label in catalog.done.objects:
        for host in _HOSTS:
            if label.startswith(f"{host} "):
                dropped.add(label[len(host) + 1 :])
    for kind, key in list(catalog.objects):
        if kind in ("trigger", "rule", "policy") and key.split(" on ", 1)[-1] in dropped:
            catalog.drop([kind], key)
    return catalog.done


# The kinds of object that triggers, rules and policies hang on.
_HOSTS = ("table", "view", "materialized view", "foreign table")


_BY_DIALECT: dict[str, Callable[[Chain, Connection, ToolContext], Replaced]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mysql": _mysql,
}
