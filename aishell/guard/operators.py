"""The operators a PostgreSQL statement runs that it does not write as symbols.

PostgreSQL's grammar turns words into operators, looked up by name on the search_path
as a written symbol is, so a database's own operator of that name (for the types at
hand) is the one called: x LIKE y is x ~~ y, and `public.~~(integer, text)` runs for
`WHERE id LIKE '1%'`. A read that may run a database's operator is judged by the
symbols it writes and by those its words stand for (hidden.py). aishell's own catalog
queries write each operator they use as pg_catalog's (exact_operators).
"""

from __future__ import annotations

import re

# The operators each word stands for: x LIKE y is x ~~ y (NOT LIKE !~~, ILIKE ~~*),
# SIMILAR TO is ~, BETWEEN is >= and <= (NOT BETWEEN < and >), IN and a CASE's WHEN and
# NULLIF and IS DISTINCT FROM are =, NOT IN <>, JOIN ... USING and NATURAL JOIN =.
_IMPLIED = {
    "LIKE": ("~~", "!~~"),
    "ILIKE": ("~~*", "!~~*"),
    "SIMILAR": ("~", "!~"),
    "BETWEEN": (">=", "<=", "<", ">"),
    "IN": ("=", "<>"),
    "CASE": ("=",),
    "NULLIF": ("=",),
    "DISTINCT": ("=",),
    "USING": ("=",),
    "NATURAL": ("=",),
}


_WORD = re.compile(r"[A-Za-z_]+")


def implied_operators(code: str) -> set[str]:
    """The operator symbols the words of `code` (a statement without its comments)
    stand for."""
    words = {word.upper() for word in _WORD.findall(code)}
    return {symbol for word in words & _IMPLIED.keys() for symbol in _IMPLIED[word]}


# The operators the catalog queries write, each as pg_catalog's own with its exact
# name: OPERATOR(pg_catalog.=) is looked up among pg_catalog's operators alone.
_OPERATORS = ("=", "<>", ">=", ">", "<=", "<", "+", "||", "&&", "~")


def exact_operators(sql: str) -> str:
    """The query with each operator written ` op ` (spaces around) as pg_catalog's."""
    for operator in _OPERATORS:
        sql = sql.replace(f" {operator} ", f" OPERATOR(pg_catalog.{operator}) ")
    return sql
