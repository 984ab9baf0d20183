"""A step's statements as data: what each one does, how risky that is, and the shapes a
handler may send.

The risk of a statement comes from a SQL parser (sqlglot), never from what a tool
declares. Anything the parser cannot classify counts as a write of high risk, so a
tool whose SQL is unusual must be reviewed and tagged for what it may do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import sqlglot
from sqlalchemy.engine import Dialect
from sqlglot import exp

from aishell.guard.lex import disagreement, read, without_comments
from aishell.guard.sqlcheck import SQLGLOT_DIALECT, reaching_call, write_reason
from aishell.risk import RiskLevel
from aishell.sqltext import text

# Statements that are commands to the server rather than queries, by their first word,
# with the least risk each implies.
_COMMAND_RISK: dict[str, RiskLevel] = {
    "ANALYZE": RiskLevel.LOW,
    "OPTIMIZE": RiskLevel.MEDIUM,
    "REINDEX": RiskLevel.MEDIUM,
    "REFRESH": RiskLevel.MEDIUM,
    "LOCK": RiskLevel.MEDIUM,
    "REPAIR": RiskLevel.HIGH,
    "CLUSTER": RiskLevel.HIGH,
    # Their effects are whatever the code they run does: nothing the parser can see.
    "DO": RiskLevel.HIGH,
    "CALL": RiskLevel.HIGH,
    "EXECUTE": RiskLevel.HIGH,
    "PREPARE": RiskLevel.HIGH,
    "LOAD": RiskLevel.HIGH,
}
_TRANSACTION_CONTROL = (exp.Commit, exp.Rollback, exp.Transaction)
_TRANSACTION_WORDS = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK|END|SAVEPOINT|RELEASE|ABORT)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Classification:
    """What one statement does: whether it writes, why, and the least risk that implies."""

    writes: bool
    risk: RiskLevel
    reason: str
    # Changes no row and no definition, and sending it twice does no harm (ANALYZE, a
    # plain VACUUM, OPTIMIZE TABLE): a crash while it runs needs no record that it was
    # sent, since running it again is the whole recovery.
    repeatable: bool = False
    # The server would read the text otherwise than the parser did (lex.disagreement):
    # what it runs is not what was judged, so no approval or shape lets it through.
    misread: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"writes": self.writes, "risk": self.risk.value, "reason": self.reason}


READS = Classification(False, RiskLevel.SAFE, "only reads")

# The maintenance statements steps send most, read without the parser (which takes
# milliseconds for an ANALYZE of a hundred tables): a command and quoted names, nothing
# else, so nothing can hide in them. What each means is what the parser finds in it
# (tests/guard/test_plain_maintenance.py holds them to that).
_QUOTED = {
    "postgresql": r'"(?:[^"]|"")+"',
    "sqlite": r'"(?:[^"]|"")+"',
    "mysql": r"`(?:[^`]|``)+`",
}
_MAINTENANCE_COMMANDS: dict[str, Classification] = {
    "ANALYZE": Classification(True, RiskLevel.LOW, "ANALYZE is not a query", True),
    "VACUUM": Classification(True, RiskLevel.MEDIUM, "VACUUM is not a query", True),
    "OPTIMIZE": Classification(True, RiskLevel.MEDIUM, "OPTIMIZE is not a query", True),
    # ALTER TABLE ... FORCE and nothing else: InnoDB's rebuild, what OPTIMIZE TABLE does.
    "ALTER": Classification(True, RiskLevel.MEDIUM, "ALTER is not a query", True),
    # Not repeatable: an interrupted REINDEX CONCURRENTLY leaves an invalid index behind.
    "REINDEX": Classification(True, RiskLevel.MEDIUM, "REINDEX is not a query"),
}


# The rebuild's options, as the rebuild tool sends them (the parser reads the same).
_FORCE = (
    r"\s+FORCE(?:\s*,\s*ALGORITHM\s*=\s*(?:DEFAULT|INPLACE|COPY))?"
    r"(?:\s*,\s*LOCK\s*=\s*(?:DEFAULT|NONE|SHARED|EXCLUSIVE))?"
)
# Per dialect, each command read this way, whether it takes a list of names, and what
# may follow the names.
_PLAIN_COMMANDS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "postgresql": (
        (r"ANALYZE", True, ""),
        (r"VACUUM\s*\(\s*ANALYZE\s*\)", True, ""),
        (r"REINDEX\s+INDEX(?:\s+CONCURRENTLY)?", False, ""),
    ),
    "sqlite": ((r"ANALYZE", False, ""), (r"REINDEX", False, "")),
    "mysql": (
        (r"ANALYZE\s+TABLE", True, ""),
        (r"OPTIMIZE\s+TABLE", True, ""),
        (r"ALTER\s+TABLE", False, _FORCE),
    ),
}


def _maintenance_pattern(dialect: str) -> re.Pattern[str]:
    # A schema's name before the table's; on SQLite only `main.`, which its tools send so
    # that a name is read as a table or index, not a schema or collation (the parser
    # cannot read `REINDEX main."i"`: the fast reading must be its).
    schema = r"(?:main\.)?" if dialect == "sqlite" else rf"(?:{_QUOTED[dialect]}\.)?"
    name = rf"{schema}{_QUOTED[dialect]}"
    forms = [
        rf"{command}\s+{name}" + (rf"(?:\s*,\s*{name})*" if many else "") + after
        for command, many, after in _PLAIN_COMMANDS[dialect]
    ]
    return re.compile("(?i)(?:" + "|".join(forms) + ")")


_MAINTENANCE = {dialect: _maintenance_pattern(dialect) for dialect in _QUOTED}

# The count of one table by its quoted name, which a corruption check without amcheck
# (a full read) sends for every table: a read the parser need not take apart each time.
_PLAIN_COUNTS = {
    "postgresql": re.compile(
        rf"(?i)SELECT\s+pg_catalog\.count\(\*\)\s+FROM\s+{_QUOTED['postgresql']}"
    ),
    "sqlite": re.compile(rf"(?i)SELECT\s+count\(\*\)\s+FROM\s+{_QUOTED['sqlite']}"),
}


def plain_maintenance(sql: str, dialect: str) -> bool:
    """Whether `sql` is one of the maintenance commands read without the parser: a
    command and quoted names, in which nothing is an expression the server evaluates."""
    pattern = _MAINTENANCE.get(dialect)
    return pattern is not None and pattern.fullmatch(sql.strip()) is not None


def _plain_maintenance(sql: str, dialect: str) -> Classification | None:
    pattern = _MAINTENANCE.get(dialect)
    found = pattern.fullmatch(sql.strip()) if pattern is not None else None
    if found is None:
        return None
    return _MAINTENANCE_COMMANDS[found.group().split(None, 1)[0].split("(")[0].upper()]


@lru_cache(maxsize=8192)
def classify(sql: str, dialect: str) -> Classification:
    """The effect and least risk of `sql` (text()-style, `:name` for values)."""
    plain = _plain_maintenance(sql, dialect)
    if plain is not None:
        return plain
    count = _PLAIN_COUNTS.get(dialect)
    if count is not None and count.fullmatch(sql.strip()):
        return READS
    if _only_a_line_comment(sql, dialect):
        # What a tool says it decided ("-- no index of t is over the threshold"), one per
        # table of a plan: the server runs nothing of it, so no parser need agree.
        return READS
    unseen = disagreement(sql, dialect)
    if unseen is not None:
        # What the server would run is not what the parser read: judge none of it.
        return Classification(True, RiskLevel.HIGH, unseen, misread=True)
    code = without_comments(sql, dialect)
    if not code.strip():
        return READS
    reaching = reaching_call(code, dialect)
    if reaching is not None:
        return Classification(True, RiskLevel.CRITICAL, reaching)
    if _TRANSACTION_WORDS.match(without_leading_comments(sql, dialect)):
        return Classification(True, RiskLevel.HIGH, "transaction control inside a step")
    return parsed(sql, dialect)


def _only_a_line_comment(sql: str, dialect: str) -> bool:
    """Whether the server reads the whole statement as one `--` comment. It skips the
    parser's agreement, so only a comment every engine's server (and the parser) reads
    as one line is one: nothing in it that Python splits lines at (a carriage return,
    a form feed, U+2028 and the like) and no NUL, where one server or another ends a
    comment (PostgreSQL at a carriage return, MariaDB at a NUL)."""
    text_ = sql.rstrip()
    if not text_.startswith("--") or len(text_.splitlines()) != 1 or "\x00" in text_:
        return False
    whole = ((0, len(text_)),)
    readings = [read(text_, dialect)]
    if dialect == "mysql":
        readings.append(read(text_, dialect, backslash=False))
    return all(r.problem is None and not r.literals and r.comments == whole for r in readings)


def parsed(sql: str, dialect: str) -> Classification:
    """classify() by the parser alone."""
    reason = write_reason(sql, dialect)
    if reason is None:
        return READS
    try:
        statements = [s for s in sqlglot.parse(sql, read=SQLGLOT_DIALECT[dialect]) if s]
    except sqlglot.errors.SqlglotError:
        return Classification(True, RiskLevel.HIGH, reason)
    if len(statements) != 1:
        return Classification(True, RiskLevel.HIGH, "more than one statement")
    # sqlglot types its parse as its base Expr; every statement node is an Expression.
    node = cast(exp.Expression, statements[0])
    return Classification(True, _risk_of(node, sql), reason, _repeatable(node, sql))


def _repeatable(node: exp.Expression, sql: str) -> bool:
    """Whether the one statement `node` only refreshes statistics or reorganises storage
    (see Classification.repeatable)."""
    if isinstance(node, exp.Analyze):
        return True
    if isinstance(node, exp.Alter):
        # ALTER TABLE ... FORCE with at most its algorithm and lock: a rebuild in place.
        actions = node.args.get("actions") or []
        options = node.args.get("options") or []
        return (
            str(node.args.get("kind", "")).upper() == "TABLE"
            and len(actions) == 1
            and isinstance(actions[0], exp.ForceProperty)
            and all(isinstance(o, exp.AlgorithmProperty | exp.LockProperty) for o in options)
        )
    if isinstance(node, exp.Pragma):
        return _risk_of(node, sql) is RiskLevel.LOW
    if isinstance(node, exp.Command):
        word = str(node.this).upper()
        rest = node.text("expression").upper()
        if word == "VACUUM":
            return not re.search(r"\b(FULL|INTO)\b", rest)
        return word in ("ANALYZE", "OPTIMIZE")
    if isinstance(node, exp.Alias | exp.Column | exp.Identifier):
        return sql.split(None, 1)[0].upper() in ("ANALYZE", "OPTIMIZE")
    return False


def without_leading_comments(sql: str, dialect: str) -> str:
    """The statement from its first word: comments before it hide nothing. Where each
    ends is `dialect`'s server's rule (lex.py: MariaDB's `#`, PostgreSQL's nested
    `/* */` and its `--` ended at a carriage return), never a guess that fits none."""
    reading = read(sql, dialect)
    start = 0
    for begin, end in reading.comments:
        if sql[start:begin].strip():
            break
        start = end
    return sql[start:].lstrip()


# A pragma's name as SQLite reads it: after its schema (`main.`, spaced or quoted), up to
# its `=` or `(`.
_PRAGMA_NAME = re.compile(r"PRAGMA\s+(?:[\"`\[]?\w+[\"`\]]?\s*\.\s*)?[\"`\[]?(\w+)", re.IGNORECASE)


def _pragma_risk(sql: str) -> RiskLevel:
    """A pragma that sets: writable_schema makes sqlite_master a table that DELETE and
    UPDATE change (dropping a table, rewriting a view) past the risk their DDL would
    carry, and schema_version set back leaves other connections on a stale schema that
    corrupts the file, so each is as critical as DROP TABLE; optimize and
    analysis_limit gather statistics; the rest change the file's or session's settings.
    Its name is read past any comment, as SQLite reads it (PRAGMA/**/writable_schema)."""
    code = without_comments(sql, "sqlite")
    found = _PRAGMA_NAME.search(code)
    name = found.group(1).lower() if found else ""
    sets = found is not None and code[found.end() :].lstrip()[:1] in ("=", "(")
    if name == "writable_schema" or (name == "schema_version" and sets):
        return RiskLevel.CRITICAL
    return RiskLevel.LOW if name in ("optimize", "analysis_limit") else RiskLevel.MEDIUM


def _risk_of(node: exp.Expression, sql: str) -> RiskLevel:
    """The least risk a writing statement implies."""
    if isinstance(node, _TRANSACTION_CONTROL):
        return RiskLevel.HIGH
    if isinstance(node, exp.Pragma):
        return _pragma_risk(sql)
    if isinstance(node, exp.Command):
        word = str(node.this).upper()
        rest = node.text("expression").upper()
        if word == "VACUUM":
            if rest.lstrip().startswith("INTO"):
                return RiskLevel.LOW  # writes a new file, not the database
            return RiskLevel.HIGH if re.search(r"\bFULL\b", rest) else RiskLevel.MEDIUM
        if word == "EXPLAIN":
            # EXPLAIN ANALYZE runs the statement it explains.
            return RiskLevel.HIGH
        if word == "COPY":
            return RiskLevel.CRITICAL  # one the parser cannot read may name a file
        return _COMMAND_RISK.get(word, RiskLevel.HIGH)
    if isinstance(node, exp.Copy):
        return _copy_risk(node)
    if isinstance(node, exp.Analyze):
        return RiskLevel.LOW
    if isinstance(node, exp.TruncateTable | exp.Attach) or _schema_table(node):
        # ATTACH opens (or makes) any file the process may at a path the SQL names: another
        # database of the machine, aishell's own store, as the server's files are reached.
        return RiskLevel.CRITICAL
    if isinstance(node, exp.Drop):
        kind = str(node.args.get("kind") or "").upper()
        return RiskLevel.MEDIUM if kind == "INDEX" else RiskLevel.CRITICAL
    if isinstance(node, exp.Grant | exp.Revoke) or type(node).__name__ in ("Grant", "Revoke"):
        return RiskLevel.CRITICAL
    if isinstance(node, exp.Alter):
        # ALTER TABLE t FORCE (its algorithm and lock at most) rebuilds the table as it
        # is; anything beside FORCE changes it (ENGINE=MRG_MyISAM empties it), whatever
        # words a comment holds.
        return RiskLevel.MEDIUM if _repeatable(node, sql) else RiskLevel.HIGH
    if isinstance(node, exp.Create):
        kind = str(node.args.get("kind") or "").upper()
        return RiskLevel.MEDIUM if kind in ("INDEX", "TABLE") else RiskLevel.HIGH
    if isinstance(node, exp.Delete | exp.Update):
        return RiskLevel.MEDIUM if node.args.get("where") is not None else RiskLevel.HIGH
    if isinstance(node, exp.Insert | exp.Merge):
        return RiskLevel.MEDIUM
    if isinstance(node, exp.Set):
        return RiskLevel.MEDIUM
    if isinstance(node, exp.Alias | exp.Column | exp.Identifier):
        # A command the parser does not know, read as an expression (REINDEX "t").
        word = sql.split(None, 1)[0].upper()
        return _COMMAND_RISK.get(word, RiskLevel.HIGH)
    if isinstance(node, exp.Query):
        # A query that writes: a data-modifying CTE, SELECT ... INTO, a writing function.
        inner = [
            _risk_of(n, sql)
            for n in node.walk()
            if n is not node and isinstance(n, exp.Delete | exp.Update | exp.Insert | exp.Merge)
        ]
        return max(inner, key=lambda r: r.rank) if inner else RiskLevel.MEDIUM
    return RiskLevel.HIGH


def _copy_risk(node: exp.Copy) -> RiskLevel:
    """COPY to or from the client (STDIN, STDOUT, unquoted: quoted, each is a file of that
    name) is high; to or from a server file, or a PROGRAM, it reaches the server's files
    (its own configuration among them) or commands: critical."""
    files = node.args.get("files") or []
    streams = [
        f
        for f in files
        if isinstance(f, exp.Identifier) and not f.quoted and f.name.upper() in ("STDIN", "STDOUT")
    ]
    return RiskLevel.HIGH if files and len(streams) == len(files) else RiskLevel.CRITICAL


# SQLite's table of the schema, by each of its names: a write of it (with writable_schema
# on, which may have been set by an earlier statement of the session) drops or rewrites
# tables past what DROP TABLE's own risk would say.
_SCHEMA_TABLES = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema"}
)


def _schema_table(node: exp.Expression) -> bool:
    """Whether `node` is a row write of SQLite's schema table."""
    if not isinstance(node, exp.Delete | exp.Update | exp.Insert):
        return False
    target = node.this
    if isinstance(target, exp.Schema):  # INSERT INTO t (columns)
        target = target.this
    return isinstance(target, exp.Table) and target.name.lower() in _SCHEMA_TABLES


def highest(risks: list[RiskLevel]) -> RiskLevel:
    return max(risks, key=lambda r: r.rank) if risks else RiskLevel.SAFE


# --- shapes -----------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SLOT = "aishellslot{}x"


@dataclass(frozen=True)
class Shape:
    """A statement a step may send, as the driver receives it: fixed text, quoted
    identifiers where the template has {name}, and bound values where it has :name."""

    template: str
    pattern: re.Pattern[str] | None = None
    # Final SQL (a rendered statement, nothing left open): its words, compared as text.
    # Any run of whitespace matches any run, as in a pattern.
    exact: str | None = None

    def matches(self, statement: str, words: str | None = None) -> bool:
        """`words`: the statement's words joined by one space, when the caller has them
        (a step over many tables holds each write against hundreds of shapes)."""
        if self.pattern is None:
            return (words or " ".join(statement.split())) == self.exact
        return self.pattern.fullmatch(statement.strip()) is not None


def compile_shape(
    template: str, dialect: Dialect, known: dict[str, str] | None = None, *, literal: bool = False
) -> Shape:
    """The shape of `template` for `dialect`: {name} is the quoted identifier in `known`,
    or any one quoted identifier; :name is a bound value in the driver's style. A
    `literal` template is final SQL whose braces are text."""
    # Every write step compiles its tool's templates: the same template with the same
    # identifiers is compiled once (a template naming none, once per dialect).
    used = set() if literal else set(_PLACEHOLDER.findall(template))
    names = tuple(sorted((k, v) for k, v in (known or {}).items() if k in used))
    return _compiled_shape(template, dialect, names, literal)


@lru_cache(maxsize=4096)
def _compiled_shape(
    template: str, dialect: Dialect, names: tuple[tuple[str, str], ...], literal: bool
) -> Shape:
    known = dict(names)
    slots: dict[str, str] = {}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in known:
            return known[name]
        slot = _SLOT.format(len(slots))
        slots[slot] = name
        return slot

    filled = template.strip() if literal else _PLACEHOLDER.sub(fill, template.strip())
    compiled = str(text(filled).compile(dialect=dialect)).strip()
    if not slots:
        return Shape(template=template, exact=" ".join(compiled.split()))
    pattern = re.escape(compiled)
    quoted = _quoted_identifier_pattern(dialect)
    for slot in slots:
        pattern = pattern.replace(re.escape(slot), quoted)
    pattern = re.sub(r"(\\\s)+", r"\\s+", pattern)
    return Shape(template=template, pattern=re.compile(pattern, re.DOTALL))


def _quoted_identifier_pattern(dialect: Dialect) -> str:
    preparer = dialect.identifier_preparer
    first, last = re.escape(preparer.initial_quote), re.escape(preparer.final_quote)
    # One quoted identifier: its quote character only ever doubled inside.
    return f"{first}(?:[^{last}]|{last}{last})+{last}"


def driver_to_text(statement: str, paramstyle: str) -> str:
    """A statement as the driver received it, back in text() style for the parser."""
    if paramstyle in ("pyformat", "format"):

        def swap(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            return f":{match.group(1)}" if match.group(1) else ":p"

        return re.sub(r"%%|%\((\w+)\)s|%s", swap, statement)
    return statement
