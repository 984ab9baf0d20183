"""Decide from a SQL parser, not from keywords, whether a statement only reads.

Fail closed: anything the parser does not recognise as a plain query is a write.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Literal

import sqlglot
from sqlglot import exp

from aishell.guard.lex import code_only, disagreement, without_comments
from aishell.guard.sidefunctions import REACHING_FUNCTIONS, READING_BY_NAME, WRITING_FUNCTIONS

# The parser reads statements it has no grammar for as commands, which this module
# classifies itself; its warning about that is not for the person running aishell.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# The read-only pragmas whose argument names what they report on (a table, an index) or
# bounds it; any other's argument is a value it sets, as `PRAGMA auto_vacuum(1)` or
# `PRAGMA page_size(1024)` set what the next VACUUM makes of the file.
_ARGUMENT_PRAGMAS = frozenset(
    {
        "integrity_check",
        "quick_check",
        "foreign_key_check",
        "table_info",
        "table_xinfo",
        "index_list",
        "index_info",
        "index_xinfo",
    }
)
# Pragmas that only report; any other pragma, or any pragma with `=`, may change state.
_READ_PRAGMAS = _ARGUMENT_PRAGMAS | {
    "page_count",
    "page_size",
    "freelist_count",
    "journal_mode",
    "compile_options",
    "database_list",
    "auto_vacuum",
}
_PRAGMA = re.compile(r"^\s*PRAGMA\s+(?:\"?\w+\"?\s*\.\s*)?(\w+)\s*(?P<arg>\(|=)?", re.IGNORECASE)
_WRITE_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Into,
    exp.TruncateTable,
)
SQLGLOT_DIALECT = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}
# Statements that are not queries but only read, per dialect.
_READ_COMMANDS = {
    # CHECK TABLE ... FOR UPGRADE marks the table upgraded: not only a check. A plain
    # CHECK TABLE only reads on InnoDB; on MyISAM and Aria it writes the table's check
    # time, and other engines hold writers off meanwhile. Text alone does not tell the
    # engine, so the check's handler (handlers/mysql/corruption.py) sends a dry run's
    # CHECK TABLE to InnoDB tables only, and the tools declare the lock elsewhere.
    "mysql": re.compile(
        r"^\s*(CHECK\s+TABLE(?!.*\bFOR\s+UPGRADE\b)|SHOW)\b", re.IGNORECASE | re.DOTALL
    ),
    "postgresql": re.compile(r"^\s*SHOW\s+\w+\s*;?\s*$", re.IGNORECASE),
}
# The clause by which a read command runs an expression: MariaDB's SHOW ... WHERE evaluates
# it for each row it shows (NEXTVAL(s) there advances s), as a SELECT's WHERE does. Its
# other clauses take a string (LIKE), a number (LIMIT) or a constant (SHOW EXPLAIN FOR).
_EXPRESSION_CLAUSE = re.compile(r"\bWHERE\b", re.IGNORECASE)
# A MySQL/MariaDB SELECT that writes a file on the server.
_MYSQL_INTO_FILE = re.compile(r"\bINTO\s+(OUTFILE|DUMPFILE)\b", re.IGNORECASE)
# A LOAD that reads a file (MySQL's LOAD DATA and LOAD XML INFILE, the server's or the
# client's) or loads a library (PostgreSQL's LOAD); MySQL's LOAD INDEX INTO CACHE does not.
_LOADS = re.compile(r"\s*LOAD\b(?!\s+INDEX\b)", re.IGNORECASE)
# MariaDB's sequence words that write, read as a column of the sequence: under sql_mode
# ORACLE (a server's global setting too) `s.nextval` is NEXT VALUE FOR s. The parser takes
# it for a column; `s.currval` (and `s.lastval`) only read the value last handed out.
_MYSQL_SEQUENCE_STEPS = {"nextval": "advances", "setval": "sets"}


def _a_read_command(sql: str, dialect: str) -> Literal["reads", "evaluates"] | None:
    """Whether `sql` is one statement of _READ_COMMANDS ("reads"), judged on its code
    alone, as the server reads it: a quoted name or a string holding `;`, WHERE or FOR
    UPGRADE (`x FOR UPGRADE`) is a name, not a second statement, an expression or an
    upgrade. "evaluates": one with an expression the server runs (SHOW ... WHERE), which
    the parser judges as a query's. None when it is none (text the server would not read
    to its end is none: the parser judges it)."""
    command = _READ_COMMANDS.get(dialect)
    if command is None:
        return None
    code = code_only(sql, dialect)
    if code is None or not command.match(code) or ";" in code.strip().rstrip(";"):
        return None
    return "evaluates" if _EXPRESSION_CLAUSE.search(code) else "reads"


@lru_cache(maxsize=4096)
def write_reason(sql: str, dialect: str) -> str | None:
    """None when every statement in `sql` only reads; otherwise why it may write."""
    unseen = disagreement(sql, dialect)
    if unseen is not None:
        return unseen
    # The server skips comments wherever they stand (PRAGMA journal_mode/**/=WAL).
    sql = without_comments(sql, dialect)
    pragma = _PRAGMA.match(sql)
    if pragma:
        code = code_only(sql, dialect)
        if code is None or ";" in code.strip().rstrip(";"):
            return "more than one statement"  # PRAGMA journal_mode; DELETE FROM t
        name = pragma.group(1).lower()
        if name not in _READ_PRAGMAS:
            return f"PRAGMA {name} is not a known read-only pragma"
        arg = pragma.group("arg")
        if arg == "=" or (arg == "(" and name not in _ARGUMENT_PRAGMAS):
            return f"PRAGMA {name} with a value changes a setting"
        return None
    command = _a_read_command(sql, dialect)
    if command == "reads":
        return None
    # Placeholders for quoted identifiers are rendered before parsing by the caller.
    try:
        statements = sqlglot.parse(sql, read=SQLGLOT_DIALECT.get(dialect, dialect))
    except sqlglot.errors.SqlglotError as exc:  # a statement it cannot even tokenize too
        return f"the SQL parser could not read it ({str(exc).splitlines()[0]})"
    for statement in statements:
        if statement is None:
            continue
        # A read command's expression is judged as a query's (the parser's Show).
        shown = command == "evaluates" and isinstance(statement, exp.Show)
        if not isinstance(statement, exp.Query) and not shown:
            if isinstance(statement, exp.Command):
                what = str(statement.this).upper()
            elif isinstance(statement, exp.Alias | exp.Column):
                what = sql.split(None, 1)[0].upper()  # a command the parser does not know
            else:
                what = type(statement).__name__.upper()
            return f"{what} is not a query"
        for node in statement.walk():
            reason = _node_reason(node, dialect)
            if reason is not None:
                return reason
    return None


def _node_reason(node: exp.Expr, dialect: str) -> str | None:
    """Why one node of a query may write, if it may."""
    if isinstance(node, _WRITE_NODES):
        return f"it contains a {type(node).__name__.upper()}"
    if dialect == "mysql" and isinstance(node, exp.Lock) and not node.args.get("update"):
        # MariaDB refuses FOR UPDATE in a read-only transaction, not this.
        return (
            "it takes shared row locks (LOCK IN SHARE MODE), which hold off writers "
            "and which a read-only transaction does not stop"
        )
    if dialect == "mysql" and (stepped := _sequence_step(node)) is not None:
        return stepped
    if isinstance(node, exp.Func):
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if name in REACHING_FUNCTIONS:
            return f"it calls {name}(), {REACHES}"
        if name in WRITING_FUNCTIONS:
            return f"it calls {name}(), which changes server state"
        if name in READING_BY_NAME:
            return (
                f"it calls {name}(), which reads tables and views it names only as "
                "text, running what they run"
            )
    return None


def _sequence_step(node: exp.Expr) -> str | None:
    """Why a MySQL column reference (`s.nextval`, `db.s.nextval`, quoted any way or not)
    may advance or set a sequence, if it may. Under ANSI_QUOTES (which ORACLE sets) a
    `"s"` is a name, which the parser reads as a string: `"s".nextval` is one of its
    dots, not a column."""
    if isinstance(node, exp.Column) and node.table:
        parts = [part.name for part in node.parts]
    elif isinstance(node, exp.Dot) and not isinstance(node.parent, exp.Dot):
        parts = _dotted(node)
    else:
        return None
    word = parts[-1].lower()
    if word not in _MYSQL_SEQUENCE_STEPS:
        return None
    return (
        f"it reads {'.'.join(parts)}, which under sql_mode ORACLE "
        f"{_MYSQL_SEQUENCE_STEPS[word]} sequence {parts[-2]} (a table's column named {word} "
        "is taken for one too: select it without the table's name)"
    )


def _dotted(node: exp.Expr) -> list[str]:
    """The parts of `a.b.c` as the parser nests its dots, whatever each part is."""
    if isinstance(node, exp.Dot):
        return [*_dotted(node.this), *_dotted(node.expression)]
    if isinstance(node, exp.Column):
        return [part.name for part in node.parts]
    return [node.name]


# The words of a reason that make a statement's risk critical (statements._risk_of).
REACHES = "which reaches beyond its own session"


def reaching_call(sql: str, dialect: str) -> str | None:
    """Why `sql` reaches beyond its session (a function of REACHING_FUNCTIONS, a file the
    server writes), by its words alone; None when it does not seem to."""
    if dialect == "mysql" and _MYSQL_INTO_FILE.search(sql):
        return "it writes a file on the server (INTO OUTFILE or DUMPFILE)"
    if _LOADS.match(sql):
        return "it loads a file or a library (LOAD), which reaches beyond its own session"
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", sql)}
    reaching = sorted(words & REACHING_FUNCTIONS)
    return f"it calls {reaching[0]}(), {REACHES}" if reaching else None
