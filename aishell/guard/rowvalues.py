"""Literals of a body that are data: the values of a plain INSERT's VALUES list.

A body's string literals are read as bodies too (bodywrites.py: dynamic SQL), but a
literal that a plain INSERT or REPLACE stores (`INSERT INTO log VALUES (1, 'DELETE FROM
audit')`) is not run by that statement: reading it as SQL made the table it names look
written, and blocked a purge for that table's code. Only a whole value of a row of such
a list counts; everything else a body holds stays read. What the statement sets off on
the table it stores into (a trigger there that could run the text) is followed as any
write's is: such a trigger is named among the step's reasons, and waits for a yes.
"""

from __future__ import annotations


def a_row_value(tokens: list[str], n: int) -> bool:
    """Whether the literal tokens[n] is a whole value of the VALUES list of a plain
    INSERT or REPLACE (`INSERT INTO log VALUES (1, 'DELETE ...'), (...);`): data the
    statement stores, and nothing of the statement runs it. Read otherwise: a literal in
    a call (`VALUES (run_it('...'))`), a VALUES list in a query (`FROM (VALUES ...)`), an
    INSERT whose ON CONFLICT, ON DUPLICATE KEY or RETURNING could call code on it."""
    if n == 0 or n + 1 >= len(tokens):
        return False
    if tokens[n - 1] not in ("(", ",") or tokens[n + 1] not in (",", ")"):
        return False
    row = _opening(tokens, n)
    before = row - 1  # the word before the row's "("
    # Back over the rows before this one, `( ... ) ,` each.
    while before > 0 and tokens[before] == "," and tokens[before - 1] == ")":
        before = _opening(tokens, before - 1) - 1
    if before < 0 or tokens[before].upper() not in ("VALUES", "VALUE"):
        return False
    return _inserted_into(tokens, before) and _rows_end_statement(tokens, row)


# Words between an INSERT (or REPLACE) and its VALUES besides the table's name and its
# alias: MySQL's modifiers and PARTITION, SQLite's OR conflict clause, PostgreSQL's
# OVERRIDING ... VALUE.
_INSERT_WORDS = frozenset(
    {"INTO", "IGNORE", "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "PARTITION", "AS"}
    | {"OR", "ROLLBACK", "ABORT", "FAIL", "OVERRIDING", "SYSTEM", "USER", "VALUE", "."}
)
# The names that may stand there: a schema, the table, an alias.
_MOST_NAMES = 3


def _inserted_into(tokens: list[str], values: int) -> bool:
    """Whether the VALUES at tokens[values] is a plain INSERT's or REPLACE's own (its
    table, a column list, INTO and such between them, nothing else: a query before it,
    `INSERT ... SELECT ... UNION VALUES`, is not)."""
    k, names = values - 1, 0
    while k >= 0:
        word = tokens[k].upper()
        if word in ("INSERT", "REPLACE"):
            return True
        if word == ")":
            k = _opening(tokens, k) - 1  # the column list (MySQL: the partitions)
            continue
        if word not in _INSERT_WORDS:
            names += 1
            if names > _MOST_NAMES or not _a_name(tokens[k]):
                return False
        k -= 1
    return False


def _rows_end_statement(tokens: list[str], row: int) -> bool:
    """Whether the rows from the one opening at tokens[row] end the statement: only rows
    and commas up to its `;` (or the body's end)."""
    k = row
    while k < len(tokens):
        if tokens[k] == "(":
            k = _closing(tokens, k) + 1
        elif tokens[k] == ",":
            k += 1
        else:
            return tokens[k] == ";"
    return True


def _closing(tokens: list[str], opened: int) -> int:
    """The index of the ")" that closes the "(" at tokens[opened] (the last token when
    none does)."""
    depth = 0
    for k in range(opened, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[k], 0)
        if depth == 0:
            return k
    return len(tokens) - 1


def _opening(tokens: list[str], at: int) -> int:
    """The index of the "(" whose parentheses hold tokens[at], or, for a ")" at `at`, of
    the "(" it closes; -1 outside any, or past a statement's end."""
    depth = 1 if tokens[at] == ")" else 0
    for k in range(at - 1, -1, -1):
        word = tokens[k]
        if word == ";":
            return -1
        if word == ")":
            depth += 1
        elif word == "(":
            if depth == 0:
                return k
            depth -= 1
            if depth == 0 and tokens[at] == ")":
                return k
    return -1


def _a_name(token: str) -> bool:
    """A word or a quoted name (PostgreSQL's "...", MySQL's `...`)."""
    return bool(token) and (token[0].isalpha() or token[0] in '_"`')
