"""A statement's text as the server reads it: where its comments and literals are.

The guard judges a statement by what a SQL parser (sqlglot) makes of it; the server runs
what its own lexer makes of it. Where the two read the text apart, a call can hide from
the parser: MariaDB runs the code in `/*! ... */` and `/*M! ... */`, which the parser
drops as a comment; MySQL's `--x` is two minus signs, not a comment; a backslash ends a
MySQL string or does not, by the session's sql_mode; PostgreSQL ends a `--` comment at a
carriage return too, MariaDB and SQLite at a line feed alone. The parser takes whatever
Python calls white space for white space; the servers read U+00A0 or U+2028 as part of a
name, so `zap` and U+00A0 before `(1)` call a function of that name, not zap. So each
engine's lexical rules are kept here, and a statement whose comments, literals or white
space the parser places differently from them (or that holds code the server runs from a
comment) is not judged by the parser at all: it counts as a write (sqlcheck.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import TokenType

from aishell.dialects import NAME_CHAR, NAME_START, NAME_TAG_CHAR, family

# The token types the parser gives a literal (a string or a quoted identifier).
_LITERAL_TOKENS = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.BYTE_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.IDENTIFIER,
    }
)
_PARSER_DIALECT = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql"}
_IDENTIFIER_CHAR = re.compile(NAME_CHAR)
# The tokens after which the parser reads the rest of a statement as one string.
_OPAQUE_COMMANDS = frozenset({TokenType.COMMAND, TokenType.RENAME})
# Where a literal the parser reads may begin: a quote, or a prefix and then one.
_QUOTED_START = re.compile(r"[A-Za-z0-9_&]*['\"`$\[]")
_DOLLAR_TAG = re.compile(rf"\$(?:{NAME_START}{NAME_TAG_CHAR}*)?\$")


@dataclass(frozen=True)
class Reading:
    """The server's reading of a statement: spans (start, end exclusive) of its comments
    and literals, or why it cannot be read (an unterminated comment or literal, code
    inside a comment)."""

    comments: tuple[tuple[int, int], ...] = ()
    literals: tuple[tuple[int, int], ...] = ()
    problem: str | None = None


# Where a `--` comment (MySQL's `#` too) ends, as each server's lexer ends it: PostgreSQL's
# at a carriage return as at a line feed (scan.l: non_newline is [^\n\r]); MariaDB's at a
# line feed, or at a NUL, which it then refuses; SQLite's at a line feed. No engine ends
# one at \f, \v, U+0085 or U+2028 (each tried on the servers).
_LINE_ENDS = {
    "postgresql": re.compile(r"[\n\r]"),
    "mysql": re.compile(r"[\n\x00]"),
    "sqlite": re.compile(r"\n"),
}
# White space to each server's lexer: any other character Python calls white space the
# servers read as a name's (past ASCII) or refuse. PostgreSQL reads \v as white space
# from version 16 only (15 refuses it), so it counts as none.
_NOT_SERVER_SPACE = {
    "postgresql": re.compile(r"[^\S \t\n\r\f]"),
    "mysql": re.compile(r"[^\S \t\n\r\f\v]"),
    "sqlite": re.compile(r"[^\S \t\n\r\f]"),
}
# The text ends at a NUL: libpq sends PostgreSQL a C string (what follows never runs), and
# SQLite's lexer stops there.
_ENDS_AT_NUL = frozenset({"postgresql", "sqlite"})


def _line_end(sql: str, i: int, dialect: str) -> int:
    end = _LINE_ENDS[dialect].search(sql, i)
    return len(sql) if end is None else end.start()


def _quoted_end(sql: str, i: int, quote: str, backslash: bool) -> int | None:
    """The index after the literal opened by sql[i]; None when it is not closed. The
    quote doubled is one quote; with `backslash`, a backslash escapes the next char."""
    if not backslash:
        # Only the quote matters: found by str.find rather than a step per character
        # (a plan of 10,000 tables reads as many quoted names).
        j = sql.find(quote, i + 1)
        while j >= 0 and sql.startswith(quote, j + 1):
            j = sql.find(quote, j + 2)
        return None if j < 0 else j + 1
    j = i + 1
    while j < len(sql):
        ch = sql[j]
        if backslash and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if j + 1 < len(sql) and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return None


def _nested_comment_end(sql: str, i: int) -> int | None:
    depth, j = 0, i
    while j < len(sql) - 1:
        pair = sql[j : j + 2]
        if pair == "/*":
            depth, j = depth + 1, j + 2
        elif pair == "*/":
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    return None


def _postgresql(sql: str, i: int, escape_all: bool = False) -> tuple[str, int | None] | None:
    """(kind, end) of the comment or literal that starts at sql[i], if one does."""
    ch, pair = sql[i], sql[i : i + 2]
    if pair == "--":
        return "comment", _line_end(sql, i, "postgresql")
    if pair == "/*":
        return "comment", _nested_comment_end(sql, i)
    if ch == "'":
        # E'...' takes backslash escapes; every other string only doubles its quote
        # (standard_conforming_strings, which every aishell session pins on), but where
        # the setting is off (`escape_all`: a function's own SET may turn it off).
        escaped = escape_all or (
            i >= 1 and sql[i - 1] in "Ee" and (i < 2 or not _IDENTIFIER_CHAR.match(sql[i - 2]))
        )
        return "literal", _quoted_end(sql, i, "'", escaped)
    if ch == '"':
        if i >= 2 and sql[i - 2 : i] in ("U&", "u&") and not _starts_within_a_name(sql, i - 2):
            # U&"\0077" is the name w: the parser reads the escapes as the name itself.
            return "unicode name", _quoted_end(sql, i, '"', False)
        return "literal", _quoted_end(sql, i, '"', False)
    if ch == "$" and (i == 0 or not _IDENTIFIER_CHAR.match(sql[i - 1])):
        tag = _DOLLAR_TAG.match(sql, i)
        if tag is not None:
            close = sql.find(tag.group(), tag.end())
            return "literal", None if close < 0 else close + len(tag.group())
    return None


def _starts_within_a_name(sql: str, i: int) -> bool:
    return i >= 1 and _IDENTIFIER_CHAR.match(sql[i - 1]) is not None


def _mysql(
    sql: str, i: int, backslash: bool, ansi_quotes: bool = False
) -> tuple[str, int | None] | None:
    ch, pair = sql[i], sql[i : i + 2]
    if ch == "#":
        return "comment", _line_end(sql, i, "mysql")
    # `--` starts a comment only before white space or a control character (DEL too):
    # `--x` is two minus signs.
    if pair == "--" and (i + 2 >= len(sql) or sql[i + 2] <= " " or sql[i + 2] == "\x7f"):
        return "comment", _line_end(sql, i, "mysql")
    if pair == "/*":
        if sql.startswith(("/*!", "/*M!", "/*m!"), i):
            return "executable", None
        end = sql.find("*/", i + 2)
        return "comment", None if end < 0 else end + 2
    if ch == '"' and ansi_quotes:  # a name, which takes no backslash escape
        return "literal", _quoted_end(sql, i, ch, False)
    if ch in "'\"":
        return "literal", _quoted_end(sql, i, ch, backslash)
    if ch == "`":
        return "literal", _quoted_end(sql, i, "`", False)
    return None


def _sqlite(sql: str, i: int) -> tuple[str, int | None] | None:
    ch, pair = sql[i], sql[i : i + 2]
    if pair == "--":
        return "comment", _line_end(sql, i, "sqlite")
    if pair == "/*":
        end = sql.find("*/", i + 2)
        return "comment", len(sql) if end < 0 else end + 2  # SQLite ends it at the end
    if ch in "'\"`":
        return "literal", _quoted_end(sql, i, ch, False)
    if ch == "[":
        end = sql.find("]", i + 1)
        return "literal", None if end < 0 else end + 1
    return None


_OPENERS = {"postgresql": "-/'\"$", "mysql": "#-/'\"`", "sqlite": "-/'\"`["}
# Each dialect's openers as one character class: read() goes to the next one at once,
# not a character at a time.
_NEXT_OPENER = {d: re.compile(f"[{re.escape(chars)}]") for d, chars in _OPENERS.items()}


def opened_at(
    sql: str,
    i: int,
    dialect: str,
    backslash: bool = True,
    ansi_quotes: bool = False,
    escape_all: bool = False,
) -> tuple[str, int | None] | None:
    """(kind, end) of what sql[i] opens as `dialect`'s server reads it: a comment, a
    literal (a string or a quoted name), MySQL's executable comment, PostgreSQL's
    Unicode-escaped name; end None where it is not closed. None where it opens none.
    MySQL's sql_mode: NO_BACKSLASH_ESCAPES (`backslash` false), ANSI_QUOTES; PostgreSQL's
    standard_conforming_strings off (`escape_all`)."""
    if sql[i] not in _OPENERS[dialect]:
        return None
    if dialect == "postgresql":
        return _postgresql(sql, i, escape_all)
    if dialect == "mysql":
        return _mysql(sql, i, backslash, ansi_quotes)
    return _sqlite(sql, i)


@lru_cache(maxsize=8192)
def read(sql: str, dialect: str, backslash: bool = True) -> Reading:
    """How `dialect`'s server splits `sql` into comments, literals and code. MySQL's
    strings take backslash escapes unless `backslash` is false (NO_BACKSLASH_ESCAPES).
    Kept per text: the disagreement check, the classification and the pragma check
    each read the same statement."""
    if dialect in _ENDS_AT_NUL and "\x00" in sql:
        return Reading(problem="a NUL character, where the server's text ends")
    next_opener = _NEXT_OPENER[dialect].search
    comments: list[tuple[int, int]] = []
    literals: list[tuple[int, int]] = []
    i = 0
    while (opener := next_opener(sql, i)) is not None:
        i = opener.start()
        found = opened_at(sql, i, dialect, backslash)
        if found is None:
            i += 1
            continue
        kind, end = found
        if kind == "executable":
            return Reading(problem="the server runs the code in its /*! ... */ comment")
        if kind == "unicode name":
            return Reading(
                problem='a name written with Unicode escapes (U&"...") names what '
                "the parser does not read"
            )
        if end is None:
            return Reading(problem=f"a {kind} that is not closed")
        (comments if kind == "comment" else literals).append((i, end))
        i = end
    return Reading(tuple(comments), tuple(literals))


# A bound parameter as text() reads one (SQLAlchemy's own pattern), and as a pyformat
# or format driver receives it (%% is a percent sign).
_TEXT_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_DRIVER_BIND = re.compile(r"%%|%\(\w+\)s|%s")


def bind_outside_code(sql: str, dialect: str, driver: bool = False) -> str | None:
    """The first bound parameter of `sql` that stands inside a string literal or a
    comment as the server reads the text (MySQL's both ways a backslash is read), or in
    text it does not read to its end; None if none. Such a parameter is no value: the
    driver writes it into the text (PyMySQL as a quoted literal of its own, which ends
    the string around it), and the server reads it as SQL. `driver`: `sql` as a
    pyformat or format driver receives it, else as text() takes it."""
    marks = [
        (found.start(), found.group())
        for found in (_DRIVER_BIND if driver else _TEXT_BIND).finditer(sql)
        if found.group() != "%%"
    ]
    if not marks:
        return None
    readings = [read(sql, dialect)]
    if dialect == "mysql":
        readings.append(read(sql, dialect, backslash=False))
    for reading in readings:
        if reading.problem is not None:
            return marks[0][1]
        spans = reading.comments + reading.literals
        for at, mark in marks:
            if any(start <= at < end for start, end in spans):
                return mark
    return None


def placed_bind(statement: str, dialect: str, paramstyle: str) -> str | None:
    """A parameter inside a literal or comment (bind_outside_code) of a statement a
    pyformat or format driver takes: PyMySQL writes the value into the text there, and
    psycopg sends a $n the server reads as text; SQLite's driver binds its own."""
    if paramstyle not in ("pyformat", "format"):
        return None
    return bind_outside_code(statement, family(dialect), driver=True)


def code_only(sql: str, dialect: str) -> str | None:
    """`sql` with each comment and each literal (a string, a quoted name) as one space:
    the words the server reads as code. None when it would not read the text to its end
    (a comment or literal left open, code inside a comment)."""
    reading = read(sql, dialect)
    if reading.problem is not None:
        return None
    out, last = [], 0
    for start, end in sorted(reading.comments + reading.literals):
        out.append(sql[last:start])
        out.append(" ")
        last = end
    out.append(sql[last:])
    return "".join(out)


def without_comments(sql: str, dialect: str) -> str:
    """`sql` with each comment (as the server reads them) replaced by one space."""
    reading = read(sql, dialect)
    if not reading.comments:
        return sql
    out, last = [], 0
    for start, end in reading.comments:
        out.append(sql[last:start])
        out.append(" ")
        last = end
    out.append(sql[last:])
    return "".join(out)


@lru_cache(maxsize=8192)
def disagreement(sql: str, dialect: str) -> str | None:
    """None when the parser reads `sql`'s comments, literals and white space where the
    server does; otherwise how the server would run it differently from what the parser
    saw."""
    if dialect not in _OPENERS:
        return None
    readings = [read(sql, dialect)]
    if dialect == "mysql":
        # sql_mode NO_BACKSLASH_ESCAPES changes where a string ends: both must agree.
        other = read(sql, dialect, backslash=False)
        if other != readings[0]:
            return "a backslash in a string changes where it ends, by the server's sql_mode"
    server = readings[0]
    if server.problem is not None:
        return server.problem
    foreign = _foreign_space(sql, dialect, server)
    if foreign is not None:
        return foreign
    try:
        tokens = sqlglot.Dialect.get_or_raise(_PARSER_DIALECT[dialect]).tokenize(sql)
    except sqlglot.errors.SqlglotError:
        return "the SQL parser could not read it"
    spans = []
    opaque = len(sql)
    for i, token in enumerate(tokens):
        if token.token_type in _OPAQUE_COMMANDS:
            # A command the parser does not read (VACUUM, OPTIMIZE, RENAME TABLE): the
            # rest of the text is one opaque string to it, and the statement a write by
            # its first word. Only the server's reading of that rest counts (checked
            # above).
            opaque = token.start
            break
        literal = token.token_type in _LITERAL_TOKENS
        if literal and i > 0 and not _QUOTED_START.match(sql, token.start):
            # The same for the rest of SHOW and the like: a string no quote opens.
            opaque = tokens[i - 1].end + 1
            break
        spans.append((token.start, token.end + 1, literal))
    return _compare(sql[:opaque], server, spans)


def _foreign_space(sql: str, dialect: str, server: Reading) -> str | None:
    """Where the parser reads white space in the code that the server does not (a
    name's character to it, or one it refuses), if anywhere."""
    text = server.comments + server.literals
    for found in _NOT_SERVER_SPACE[dialect].finditer(sql):
        at = found.start()
        if not any(start <= at < end for start, end in text):
            return (
                f"the parser reads {found.group()!r} at {at + 1} as white space, which the "
                "server reads as part of a name or refuses"
            )
    return None


def _compare(sql: str, server: Reading, tokens: list[tuple[int, int, bool]]) -> str | None:
    """Where the parser's tokens and the server's comments and literals part (in the
    text up to where the parser stopped reading it)."""
    parser_literals = {end: start for start, end, literal in tokens if literal}
    for start, end in server.literals:
        if start >= len(sql):
            break
        begin = parser_literals.pop(end, None)
        # The parser's literal may begin with its prefix (E'', N'', U&'', X'').
        if begin is None or begin > start or not _prefix(sql[begin:start]):
            return f"the parser reads the literal at {start + 1} differently"
    if parser_literals:
        return "the parser reads a literal the server does not"
    covered = bytearray(len(sql))
    for start, end, _literal in tokens:
        covered[start:end] = b"\x01" * (end - start)
    for start, end in server.comments:
        if start >= len(sql):
            break
        if any(covered[start:end]):
            return f"the parser reads code inside the comment at {start + 1}"
        covered[start:end] = b"\x02" * (end - start)
    for i, ch in enumerate(sql):
        if not covered[i] and not ch.isspace() and ch != ";":
            return f"the parser skips {ch!r} at {i + 1}, which the server runs"
    return None


def _prefix(text: str) -> bool:
    return all(ch.isalnum() or ch in "&_" for ch in text)
