"""A trigger's or routine's body as the tokens bodywrites.py and bodyunknowns.py read.

The body is split where its engine's server splits it (lex.py's rules): each string
literal is one token, PostgreSQL's dollar-quoted ones ($$...$$, $tag$...$tag$) and
escaped ones (E'...', whose backslash escapes a quote) too, so that the SQL a body holds
in a literal is read as SQL (literal_text) and the quotes inside it end nothing; a
quoted name is one token (SQLite's [name] too); comments are dropped, but for the code
of MySQL's executable comments (/*! ... */, /*M! ... */), which the server runs. MySQL's
strings take backslash escapes unless the body's sql_mode has NO_BACKSLASH_ESCAPES, its
`"..."` is a name under ANSI_QUOTES, and its `--` opens a comment only before white
space (`1--1` is code). Where a reader ended a comment or a string elsewhere than the
server does, code the server runs would be read as a comment, and what it writes lost.
"""

from __future__ import annotations

import re

from aishell.dialects import NAME_CHAR, NAME_START, NAME_TAG_CHAR, family
from aishell.guard.lex import opened_at

# The code between comments and literals: words, numbers, single characters. A word is
# a name as the servers' lexers read one, every character past ASCII in it: U+00A0 and
# U+2028, white space to Python, are part of a name to them (`audit` and U+00A0 then
# `log` is one table's name).
_CODE = re.compile(rf"{NAME_START}{NAME_CHAR}*|\d\w*|\S")
# A dollar quote's tag, as PostgreSQL's lexer takes it: $$ or $name$ (no digit first,
# so $1 is a parameter).
_TAG = rf"\$(?:{NAME_START}{NAME_TAG_CHAR}*)?\$"
_EXECUTABLE = re.compile(r"/\*M?!(?:\d{5,6})?(.*?)(?:\*/)?$", re.DOTALL | re.IGNORECASE)
_QUOTED = re.compile(r"'((?:[^']|'')*)'?\Z", re.DOTALL)
_ESCAPED = re.compile(r"[Ee]'((?:[^'\\]|''|\\.)*)'?\Z", re.DOTALL)
_BACKSLASHED = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_DOLLAR_QUOTED = re.compile(rf"({_TAG})(.*?)(?:\1)?\Z", re.DOTALL)


# A PostgreSQL body read as under standard_conforming_strings = off (which a function's
# own SET clause may give it), where every '...' takes backslash escapes: in `sql_mode`.
ESCAPED_STRINGS = "STANDARD_CONFORMING_STRINGS_OFF"


def readings(dialect: str, sql_mode: str = "") -> list[str]:
    """The ways a body may be split, each as code_tokens' `sql_mode`: a MySQL body's
    strings with backslash escapes and without (the catalog shows a body as the server
    rewrote it), a PostgreSQL body's plain strings without and with them (a function's
    SET standard_conforming_strings = off). What either finds counts."""
    engine = family(dialect)
    if engine == "mysql":
        return [sql_mode, f"{sql_mode},NO_BACKSLASH_ESCAPES"]
    if engine == "postgresql":
        return [sql_mode, f"{sql_mode},{ESCAPED_STRINGS}"]
    return [sql_mode]


def code_tokens(body: str, dialect: str, sql_mode: str = "") -> list[str]:
    """The body's tokens but its comments, and the code of MySQL's executable comments,
    as the server splits them; `sql_mode`: a MySQL body's, as the catalog keeps it (or a
    reading of readings())."""
    engine = family(dialect)
    modes = sql_mode.upper().split(",")
    backslash, ansi_quotes = "NO_BACKSLASH_ESCAPES" not in modes, "ANSI_QUOTES" in modes
    escape_all = ESCAPED_STRINGS in modes
    tokens: list[str] = []
    i = last = 0
    while i < len(body):
        found = opened_at(body, i, engine, backslash, ansi_quotes, escape_all)
        if found is None:
            i += 1
            continue
        kind, end = found
        tokens.extend(_CODE.findall(body, last, i))
        if kind == "executable":
            end = _executable_end(body, i, backslash, ansi_quotes)
            inner = _EXECUTABLE.match(body[i:end])
            tokens.extend(code_tokens(inner.group(1) if inner else "", dialect, sql_mode))
        elif kind != "comment":
            end = len(body) if end is None else end
            if engine == "postgresql" and tokens[-1:] in (["E"], ["e"]) and body[i - 1] in "Ee":
                i -= 1  # E'...': the prefix is the literal's
                tokens.pop()
            tokens.append(body[i:end])
        i = last = len(body) if end is None else end
    tokens.extend(_CODE.findall(body, last))
    return tokens


def _executable_end(body: str, i: int, backslash: bool, ansi_quotes: bool) -> int:
    """Where MySQL's executable comment opened at body[i] ends: at the first `*/` in its
    code. The server reads the code inside as code, so a `*/` in a string, a quoted name
    or a line comment there ends nothing (`/*! , '*/', 2 */` is one comment)."""
    j = body.index("!", i) + 1
    while j < len(body):
        if body.startswith("*/", j):
            return j + 2
        found = opened_at(body, j, "mysql", backslash, ansi_quotes)
        if found is None or found[0] == "executable":
            j += 1
        else:
            j = len(body) if found[1] is None else found[1]
    return len(body)


def literal_text(token: str) -> str | None:
    """The text of a string literal token ('...' with its doubled quotes undone, E'...'
    with its backslash escapes too, or a dollar-quoted one's between its tags); None for
    any other token."""
    quoted = _QUOTED.match(token)
    if quoted is not None:
        return quoted.group(1).replace("''", "'")
    escaped = _ESCAPED.match(token)
    if escaped is not None:
        text = escaped.group(1).replace("''", "'")
        return _BACKSLASHED.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)
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
