"""The statements a run audited, sent again by a bare driver loop: the audit keeps
what the server got ($1, $2 ... for the values) with the values by name."""

from __future__ import annotations

import itertools
import re
from typing import Any

import psycopg


def as_sent(sql: str, parameters: Any, names: list[str] | None = None) -> tuple[str, Any]:
    """An audited statement as psycopg takes it. The audit keeps what the server got:
    $1, $2 ... for the values, which `names` (the params' keys in that order) name."""
    values = parameters if parameters is not None else {}
    if not re.search(r"\$\d", sql):
        return sql, values
    names = names or list(values)
    named = re.sub(
        r"\$(\d+)", lambda m: f"%({names[int(m.group(1)) - 1]})s", sql.replace("%", "%%")
    )
    return named, values


def pg_resolved(conn: psycopg.Connection[Any], statements: list[dict[str, Any]]) -> list[Any]:
    """The statements ready to send, each read of several values sent once beforehand to
    learn which value each $N stands for (the audit keeps them by name, in no order)."""
    orders: dict[str, list[str]] = {}
    ready = []
    for s in statements:
        sql, values = s["sql"], s["parameters"] or {}
        if sql not in orders and len(values) > 1 and re.search(r"\$\d", sql):
            for names in itertools.permutations(values):
                try:
                    conn.execute(*as_sent(sql, values, list(names))).fetchall()
                except psycopg.Error:
                    continue
                orders[sql] = list(names)
                break
        ready.append(as_sent(sql, values, orders.get(sql)))
    return ready
