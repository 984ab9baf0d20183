"""Identifiers inside SQL text, composed one way end to end.

Every statement aishell sends goes through SQLAlchemy's text(); identifiers are
quoted with the dialect's quote characters (doubling the quote character), and
never with the preparer's percent doubling, because text() itself doubles `%`
for the psycopg and PyMySQL drivers. text() also reads `:name` as a bound
parameter, so a colon inside an identifier is escaped the way text() expects.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import Dialect

# What text() unescapes: a backslash before a colon and a run of word characters.
_TEXT_ESCAPE = re.compile(r"\\(:[\w\$]*)(?![:\w\$])")


def quote_identifier(dialect: Dialect, name: str) -> str:
    """The identifier quoted for the dialect, ready to be placed in text()."""
    preparer = dialect.identifier_preparer
    quoted = (
        preparer.initial_quote
        + name.replace(preparer.escape_quote, preparer.escape_to_quote)
        + preparer.final_quote
    )
    return _escape_colons(quoted)


def display(sql: str) -> str:
    """SQL as a person should read it: text()'s colon escapes removed."""
    return _TEXT_ESCAPE.sub(r"\1", sql)


_WORD = re.compile(r"[\w]")


def _escape_colons(quoted: str) -> str:
    out: list[str] = []
    for i, char in enumerate(quoted):
        if char == ":":
            before = quoted[i - 1] if i else ""
            after = quoted[i + 1] if i + 1 < len(quoted) else ""
            if before == "\\":
                # text() would drop this backslash; a second one keeps it.
                out.append("\\")
            elif not (_WORD.match(before) or before == ":") and _WORD.match(after):
                # text() would read ":word" as a bound parameter.
                out.append("\\")
        out.append(char)
    return "".join(out)
