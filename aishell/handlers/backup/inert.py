"""What a validation leaves out of its scratch copy so that restoring a backup runs none
of the database's own code, and says so.

A validation restores into a scratch database on the target's server to measure what
the backup holds. The backup's code would run there as aishell's login (pg_restore
--no-owner makes the restoring role the owner of every function, SECURITY DEFINER ones
included), and it can reach out of the copy (dblink, an event writing to another
database). So the copy is built inert, and what could not be built without running code
is left out and named; a table whose data is left out is not compared.

MariaDB: the dump's events are left out (the event scheduler would run them). Triggers
come after each table's data and routines are only created, so the rest runs no code;
but a trigger, routine or view whose SQL names the source database is left out too, as
it would be made in, or act on, that database from the copy (dumpevents.py; a view's
placeholder, its columns as NULLs, stands in its place).

PostgreSQL: a TOC list for pg_restore -L leaves out every materialized view's data (its
REFRESH runs the query), event triggers and subscriptions; every index or constraint
whose building calls code that is not pg_catalog's (a function, an operator, an
operator class, a collation: fail closed); the data of a table whose loading would run
user code (a CHECK constraint, a stored generated column, a domain's check, a
partition key, a column type defined by the archive over user functions); and the
enabling of row level security on a table that forces it (its policies would run as the
copy is measured). It is decided from the archive's own SQL: pg_dump writes it with an
empty search_path, so every name that is not pg_catalog's comes schema-qualified. An
index or constraint that names anything not pg_catalog's (but a cast to a type whose
values run no user code) is left out; a table's stored values run user code when its
definition calls a function or operator that is not pg_catalog's, or uses a type,
domain or parent table the archive defines over such code. Extensions the archive
holds are created: they are installed code the DBA chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aishell.dialects import NAME_CHAR, NAME_START
from aishell.files import make_private_file
from aishell.handlers.backup.pgarchive import ArchiveUnreadable, TocEntry, read_toc
from aishell.handlers.backup.processes import ToolFailed

# --- PostgreSQL: a TOC list without what would run code ------------------------------

_TOKEN = re.compile(
    rf"""(?P<space>\s+|--[^\n]*)
    |(?P<estr>[eE]'(?:[^'\\]|\\.|'')*')
    |(?P<str>'(?:[^']|'')*')
    |(?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
    |(?P<qident>"(?:[^"]|"")*")
    |(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<ident>{NAME_START}{NAME_CHAR}*)
    |(?P<cast>::)
    |(?P<op>[-+*/<>=~!@#%^&|`?]+)
    |(?P<punct>.)""",
    re.S | re.X,
)


@dataclass
class Token:
    kind: str
    value: str


def tokens(sql: str) -> list[Token]:
    """The SQL's tokens without blanks, comments and string contents (a string is one
    token); unquoted names folded to lower case as the server folds them."""
    found = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "punct"
        if kind == "tag":
            kind = "dollar"
        if kind == "space":
            continue
        value = match.group()
        if kind == "ident":
            value = value.lower()
        elif kind == "qident":
            kind, value = "ident", value[1:-1].replace('""', '"')
        elif kind in ("estr", "dollar"):
            kind = "str"
        found.append(Token(kind, value))
    return found


Name = tuple[str, str]


@dataclass
class Ref:
    """A schema-qualified name in a statement: where it stands and what surrounds it."""

    name: Name
    at: int
    before: Token | None
    after: Token | None

    @property
    def shown(self) -> str:
        return f"{self.name[0]}.{self.name[1]}"


def refs(toks: list[Token]) -> list[Ref]:
    """The schema-qualified names (functions, operators, types, tables ...) that are not
    pg_catalog's."""
    found = []
    for i in range(len(toks) - 2):
        first, dot, second = toks[i], toks[i + 1], toks[i + 2]
        if first.kind != "ident" or dot.value != "." or second.kind not in ("ident", "op"):
            continue
        if i and toks[i - 1].value == ".":
            continue
        if first.value == "pg_catalog":
            continue
        before = toks[i - 1] if i else None
        after = toks[i + 3] if i + 3 < len(toks) else None
        found.append(Ref((first.value, second.value), i, before, after))
    return found


# Words after which a name followed by "(" is a function call, not a type's modifier.
_EXPRESSION_WORDS = frozenset(
    {"and", "or", "not", "when", "then", "else", "case", "is", "in", "like", "ilike"}
    | {"similar", "between", "select", "where", "return", "array", "distinct", "any"}
    | {"all", "some", "exists", "check", "by", "using", "with", "on"}
)


def _is_call(ref: Ref) -> bool:
    """Whether a name in a table's, type's or domain's definition runs when a value is
    stored: a function called (not a column's type with its modifier, nor a DEFAULT,
    which COPY never evaluates), or an operator."""
    if ref.name[1][:1] in "-+*/<>=~!@#%^&|`?":
        return True
    if ref.after is None or ref.after.value != "(":
        return False
    if ref.before is None or ref.before.kind == "cast":
        return False
    return not (ref.before.kind == "ident" and ref.before.value not in _EXPRESSION_WORDS)


_CODE_KINDS = frozenset({"FUNCTION", "AGGREGATE", "PROCEDURE", "OPERATOR"})
_CLASS_KINDS = frozenset({"OPERATOR CLASS", "OPERATOR FAMILY"})
_VALUE_KINDS = frozenset({"TYPE", "DOMAIN", "TABLE", "FOREIGN TABLE"})
# What the server builds over stored values: indexes, constraints, and extended
# statistics (which ANALYZE, autovacuum's too, computes over its expressions).
_BUILT_KINDS = frozenset({"INDEX", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "STATISTICS"})
_NEVER = {
    "MATERIALIZED VIEW DATA": "materialized view {tag}: its data (refreshing it runs its query)",
    "EVENT TRIGGER": "event trigger {tag} (it would run on the copy's DDL)",
    "SUBSCRIPTION": "subscription {tag} (it reaches another server)",
}


def _own_name(entry: TocEntry) -> Name:
    return (entry.namespace, re.split(r"\(| USING ", entry.tag, maxsplit=1)[0].strip())


@dataclass
class PgInert:
    """The TOC list of an archive for a restore that runs no user code, what it leaves
    out (each a line a DBA reads), and the tables whose data it leaves out."""

    keep: list[int] = field(default_factory=list)
    not_restored: list[str] = field(default_factory=list)
    tables_left_out: list[str] = field(default_factory=list)

    def list_text(self) -> str:
        return "".join(f"{dump_id};\n" for dump_id in self.keep)


def _code_names(entries: list[TocEntry]) -> dict[Name, str]:
    """Names the archive defines as code, each with the code it runs (shown): its
    functions, operators and operator classes; the types a cast or a default operator
    class of its own applies to; then, until nothing changes, every type, domain and
    table whose stored values would run any of them."""
    code: dict[Name, str] = {}
    for entry in entries:
        name = _own_name(entry)
        if entry.desc in _CODE_KINDS or entry.desc in _CLASS_KINDS:
            code[name] = f"{name[0]}.{name[1]}"
        if entry.desc == "CAST" or (
            entry.desc in _CLASS_KINDS and " DEFAULT FOR TYPE " in entry.defn
        ):
            for ref in refs(tokens(entry.defn)):
                code.setdefault(ref.name, f"the cast or operator class {entry.tag}")
    parents = _attached(entries)
    changed = True
    while changed:
        changed = False
        for entry in entries:
            name = _own_name(entry)
            if entry.desc not in _VALUE_KINDS or name in code:
                continue
            reason = _values_run(entry, code, parents.get(name))
            if reason is not None:
                code[name] = reason
                changed = True
    return code


def _attached(entries: list[TocEntry]) -> dict[Name, Name]:
    """Each partition's parent, from the archive's ATTACH PARTITION entries: a row
    loaded into a partition is checked against its parent's partition key."""
    parents: dict[Name, Name] = {}
    for entry in entries:
        if entry.desc == "TABLE ATTACH":
            found = refs(tokens(entry.defn))
            if len(found) >= 2:
                parents[found[1].name] = found[0].name
    return parents


def _values_run(entry: TocEntry, code: dict[Name, str], parent: Name | None) -> str | None:
    """The user code a value stored in this type, domain or table would run, if any."""
    if parent is not None and parent in code:
        return code[parent]
    for ref in refs(tokens(entry.defn))[1:]:  # the first names the object itself
        if ref.name in code:
            return code[ref.name]
        if _is_call(ref):
            return ref.shown
    return None


def _creating_runs(entry: TocEntry, code: dict[Name, str]) -> str | None:
    """The user code a table's own definition calls (a generated column, a CHECK, a
    partition key): the server may run it as it creates the table (it folds an
    immutable call whose arguments are constants), so such a table is left out whole."""
    for ref in refs(tokens(entry.defn))[1:]:
        if _is_call(ref):
            return code.get(ref.name, ref.shown)
    return None


def _built_runs(entry: TocEntry, code: dict[Name, str]) -> tuple[str | None, Name | None]:
    """The code building an index or constraint would run (None if none), and for a
    foreign key the table it references. Every name that is not pg_catalog's counts
    (a function, an operator, an operator class, a collation), except a cast to a type
    whose values run no user code; so does the table it is on if its values do."""
    found = refs(tokens(entry.defn))
    if not found:
        return None, None
    table, body = found[0], found[1:]
    if table.name in code:
        return f"its table's values run {code[table.name]}", None
    referenced = None
    for ref in body:
        if ref.before is not None and ref.before.value == "references":
            referenced = ref.name
        elif ref.name in code:
            return f"calls {code[ref.name]}", referenced
        elif ref.name == table.name or (ref.before and ref.before.value in _NAMING_WORDS):
            continue  # the table or index itself, in a statement that names it
        elif ref.before is None or ref.before.kind != "cast":
            return f"calls {ref.shown}", referenced
    return None, referenced


# Words before a name in an index's or constraint's SQL that name the object itself
# (ALTER INDEX ... SET STATISTICS, ALTER TABLE ... CLUSTER ON).
_NAMING_WORDS = frozenset({"index", "table", "only"})
_SHOWN_KIND = {"FK CONSTRAINT": "foreign key", "CHECK CONSTRAINT": "constraint"}


def pg_inert(entries: list[TocEntry]) -> PgInert:
    """The entries of an archive a validation restores, and what it leaves out."""
    code = _code_names(entries)
    tables = {_own_name(e): e for e in entries if e.desc == "TABLE"}
    left: dict[int, str] = {}
    data_left: set[Name] = set()
    for entry in entries:
        name = _own_name(entry)
        if entry.desc in _NEVER:
            left[entry.dump_id] = _NEVER[entry.desc].format(tag=entry.tag)
        elif entry.desc == "TABLE" and (reason := _creating_runs(entry, code)) is not None:
            left[entry.dump_id] = f"table {entry.tag} (creating it may run {reason})"
            data_left.add(name)
        elif entry.desc == "TABLE DATA" and name in code:
            left[entry.dump_id] = f"data of table {entry.tag} (loading it runs {code[name]})"
            data_left.add(name)
        elif entry.desc == "ROW SECURITY" and "FORCE ROW LEVEL SECURITY" in (
            tables[name].defn if name in tables else "FORCE ROW LEVEL SECURITY"
        ):
            left[entry.dump_id] = (
                f"row level security of table {entry.tag} (forced: its policies would "
                "run as the copy is measured)"
            )
    for entry in entries:
        if entry.desc in _BUILT_KINDS:
            reason, referenced = _built_runs(entry, code)
            if reason is None and referenced in data_left:
                reason = "its referenced table's data is not restored"
            if reason is not None:
                kind = _SHOWN_KIND.get(entry.desc, entry.desc.lower())
                left[entry.dump_id] = f"{kind} {entry.tag} ({reason})"
    _left_with_what_they_need(entries, left)
    result = PgInert()
    for entry in entries:
        if entry.dump_id in left:
            result.not_restored.append(left[entry.dump_id])
        else:
            result.keep.append(entry.dump_id)
    result.tables_left_out = sorted(n[1] for n in data_left)
    return result


def _left_with_what_they_need(entries: list[TocEntry], left: dict[int, str]) -> None:
    """Leave out, too, every entry that depends on one left out (an index's partition
    attached, a foreign key on a key left out, a comment on it)."""
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.dump_id in left:
                continue
            needed = next((d for d in entry.deps if d in left), None)
            if needed is not None and not left[needed].startswith("data of table"):
                kind = entry.desc.lower()
                left[entry.dump_id] = f"{kind} {entry.tag} (it needs what is not restored)"
                changed = True


def toc_of(path: Path) -> list[TocEntry]:
    """The archive's table of contents, read from its start."""
    with path.open("rb") as handle:
        return read_toc(iter(lambda: handle.read(1 << 16), b""))


@dataclass
class LeftOut:
    """What a validation's restores left out of its scratch copy, over a chain's files:
    each item a line, and the tables whose data is not there to compare. `list_file` is
    where each PostgreSQL archive's TOC list is written for pg_restore -L."""

    list_file: Path
    not_restored: list[str] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)

    def note(self, lines: list[str]) -> None:
        self.not_restored += [line for line in lines if line not in self.not_restored]

    def pg_list(self, archive: Path) -> Path:
        """The TOC list that restores `archive` inert, written to list_file. An archive
        whose table of contents cannot be read is not restored (pg_restore could not
        read it either)."""
        try:
            plan = pg_inert(toc_of(archive))
        except ArchiveUnreadable as exc:
            raise ToolFailed("pg_restore", f"error: {archive.name}: {exc}", 1) from None
        with make_private_file(self.list_file).open("w", encoding="utf-8") as out:
            out.write(plan.list_text())
        self.note(plan.not_restored)
        self.tables.update(plan.tables_left_out)
        return self.list_file

    def events(self, names: list[str]) -> None:
        if names:
            shown = ", ".join(names)
            self.note([f"events {shown}: not restored in the validation (they would run there)"])

    def naming(self, objects: list[str], database: object) -> None:
        """Triggers, routines and views left out because their SQL names the source
        database."""
        self.note(
            [
                f"{shown}: not restored in the validation (its SQL names the database "
                f"'{database}', which the scratch copy must not reach)"
                for shown in objects
            ]
        )
