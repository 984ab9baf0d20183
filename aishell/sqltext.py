"""SQL text and the identifiers inside it, composed one way end to end.

Every statement aishell sends goes through SQLAlchemy's text(), made once per
statement string (`text` below); identifiers are
quoted with the dialect's quote characters (doubling the quote character), and
never with the preparer's percent doubling, because text() itself doubles `%`
for the psycopg and PyMySQL drivers. text() also reads `:name` as a bound
parameter, so a colon inside an identifier is escaped the way text() expects.
"""

from __future__ import annotations

import re
from functools import lru_cache

from sqlalchemy import text as _text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import compiler
from sqlalchemy.sql.elements import TextClause

from aishell.errors import TargetError

# text()'s own rules: what it reads as a bound parameter, and the escape it undoes.
_BIND = TextClause._bind_params_regex
_UNESCAPE = compiler.BIND_PARAMS_ESC


@lru_cache(maxsize=4096)
def text(statement: str) -> TextClause:
    """SQLAlchemy's text() of a statement, made once. A TextClause finds its bind
    parameters with a regular expression when it is made and works out its cache key
    when first executed; steps send the same statements table after table, and making
    them anew cost about a sixth of a full maintenance run's time in Python. It is
    never changed in place (bindparams() and columns() return new ones), so one object
    serves every caller; a statement unique to one table takes its turn in the cache."""
    return _text(statement)


class UnquotableIdentifier(TargetError):
    """A name that cannot be written into text() so that it arrives unchanged."""


def quote_identifier(dialect: Dialect, name: str) -> str:
    """The identifier quoted for the dialect, ready to be placed in text()."""
    return _quoted(dialect, name)


# Kept: a plan or a run of thousands of tables quotes each name several times.
@lru_cache(maxsize=65536)
def _quoted(dialect: Dialect, name: str) -> str:
    preparer = dialect.identifier_preparer
    quoted = (
        preparer.initial_quote
        + name.replace(preparer.escape_quote, preparer.escape_to_quote)
        + preparer.final_quote
    )
    escaped = _escape_colons(quoted)
    # Fail closed: the text must hold no parameter and must come back exactly (both
    # patterns need a colon).
    if ":" in escaped and (_BIND.search(escaped) or _UNESCAPE.sub(r"\1", escaped) != quoted):
        raise UnquotableIdentifier(f"the name {name!r} cannot be quoted safely")
    # A positional dialect (SQLite's ?) gets its placeholders from the compiled text
    # by a pattern for %(name)s, which a "%(" in a name would start: the name and
    # the next bound value would run together.
    if dialect.positional and "%(" in name:
        raise UnquotableIdentifier(f"the name {name!r} cannot be quoted safely for {dialect.name}")
    return escaped


def quote_plain_identifier(name: str) -> str:
    """The identifier in SQL's standard double quotes, for text that never goes through
    text(), so without its colon escapes: SQL run on a raw sqlite3 connection, and a
    pg_dump --table pattern, which double quotes make match exactly that one name."""
    return '"' + name.replace('"', '""') + '"'


def mysql_account(user: str, host: str) -> str:
    """A MySQL account as GRANT names it ('user'@'host'), each part a string literal whose
    quotes and backslashes are doubled, for text a DBA copies, never for text()."""

    def literal(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"

    return f"{literal(user)}@{literal(host)}"


def display(sql: str) -> str:
    """SQL as a person should read it: text()'s colon escapes removed."""
    return _UNESCAPE.sub(r"\1", sql) if "\\:" in sql else sql


def _escape_colons(quoted: str) -> str:
    if ":" not in quoted:  # nearly every name: nothing for text() to read as a parameter
        return quoted
    out: list[str] = []
    for i, char in enumerate(quoted):
        if char == ":":
            before = quoted[i - 1] if i else ""
            run = re.match(r"\w*", quoted[i + 1 :]).group(0)  # type: ignore[union-attr]
            after_run = quoted[i + 1 + len(run) : i + 2 + len(run)]
            if before == "\\" and after_run != ":":
                # text() would drop this backslash; a second one keeps it.
                out.append("\\")
            elif (
                run and after_run != ":" and not (re.match(r"\w", before) or before in (":", "\\"))
            ):
                # text() would read ":word" as a bound parameter.
                out.append("\\")
        out.append(char)
    return "".join(out)


# A driver's placeholder or its doubled percent sign, in the text the driver was given.
_DRIVER_TEXT = re.compile(r"%%|%\((\w+)\)s")


def as_received(sql: str, dialect: str, parameters: dict[str, object] | None) -> str:
    """A recorded statement as the server received it. SQLAlchemy hands psycopg and
    PyMySQL their text with `%` doubled and `%(name)s` placeholders: psycopg sends the
    server `$1, $2, ...` (one number a name) and the values apart; PyMySQL sends the
    values inline, quoted. SQLite's text is what its library was given."""
    if dialect not in ("postgresql", "mysql"):
        return sql
    numbers: dict[str, int] = {}

    def received(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if dialect == "postgresql":
            return f"${numbers.setdefault(name, len(numbers) + 1)}"
        if parameters is None or name not in parameters:
            return f":{name}"
        from pymysql.converters import escape_item  # late: only audits of MySQL need it

        return str(escape_item(parameters[name], "utf8mb4"))

    return _DRIVER_TEXT.sub(received, sql)
