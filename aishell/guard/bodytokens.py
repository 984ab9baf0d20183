"""A trigger's or routine's body as the tokens bodywrites.py and bodyunknowns.py read.

Each string literal is one token, PostgreSQL's dollar-quoted ones ($$...$$, $tag$...$tag$)
too, so that the SQL a body holds in a literal is read as SQL (literal_text) and the
quotes inside it end nothing; a quoted name is one token; comments are dropped (MySQL's
`#` ones too), but for the code of MySQL's executable comments (/*! ... */, /*M! ...
*/), which the server runs.
"""

from __future__ import annotations

import re

from aishell.dialects import NAME_START, NAME_TAG_CHAR, family

_COMMON = (
    r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|`(?:[^`]|``)*`?|--[^\n]*|/\*.*?(?:\*/|$)"
    r"|[^\W\d][\w$]*|\d\w*|\S"
)
# A dollar quote's tag, as PostgreSQL's lexer takes it: $$ or $name$ (no digit first,
# so $1 is a parameter).
_TAG = rf"\$(?:{NAME_START}{NAME_TAG_CHAR}*)?\$"
_TOKEN = {
    "postgresql": re.compile(rf"(?P<tag>{_TAG}).*?(?:(?P=tag)|\Z)|{_COMMON}", re.DOTALL),
    # MySQL also ends a line with a `#` comment.
    "mysql": re.compile(rf"#[^\n]*|{_COMMON}", re.DOTALL),
    "sqlite": re.compile(_COMMON, re.DOTALL),
}
_EXECUTABLE = re.compile(r"/\*M?!(?:\d{5,6})?(.*?)(?:\*/)?$", re.DOTALL)
_QUOTED = re.compile(r"'((?:[^']|'')*)'?\Z", re.DOTALL)
_DOLLAR_QUOTED = re.compile(rf"({_TAG})(.*?)(?:\1)?\Z", re.DOTALL)


def code_tokens(body: str, dialect: str) -> list[str]:
    """The body's tokens but its comments; MySQL's `#` comments too, and the code of
    its executable comments (/*! ... */, /*M! ... */), which the server runs."""
    engine = family(dialect)
    tokens: list[str] = []
    for found in _TOKEN.get(engine, _TOKEN["sqlite"]).finditer(body):
        token = found.group()
        executable = _EXECUTABLE.match(token) if engine == "mysql" else None
        if executable is not None:
            tokens.extend(code_tokens(executable.group(1), dialect))
        elif not token.startswith(("--", "/*", "#")):
            tokens.append(token)
    return tokens


def literal_text(token: str) -> str | None:
    """The text of a string literal token ('...' with its doubled quotes undone, or a
    dollar-quoted one's between its tags); None for any other token."""
    quoted = _QUOTED.match(token)
    if quoted is not None:
        return quoted.group(1).replace("''", "'")
    dollar = _DOLLAR_QUOTED.match(token) if token.startswith("$") else None
    return None if dollar is None else dollar.group(2)


def clause_end(words: list[str], i: int, ends: set[str] | frozenset[str]) -> int:
    """Where the clause after words[i] ends: at one of `ends` outside parentheses, or at
    a closing parenthesis that opened before it."""
    depth = 0
    for k in range(i + 1, len(words)):
        depth += {"(": 1, ")": -1}.get(words[k], 0)
        if depth < 0 or (depth == 0 and words[k] in ends):
            return k
    return len(words)
