"""A step over many tables holds each of its writes against the shapes it was approved
with in time linear in the number of tables: the statements it rendered are looked up by
their words, not compared one by one (n writes against n shapes each were n² / 2
comparisons: 2,000,000 for a step of 2,000 tables)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine

from aishell.guard import statements
from aishell.guard.connection import Guard, shapes_for
from aishell.risk import RiskLevel

TABLES = [f"t{i}" for i in range(2000)]


def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a shape is compared with a statement."""
    calls = [0]
    compare = statements.Shape.matches

    def matches(self: statements.Shape, statement: str, words: str | None = None) -> bool:
        calls[0] += 1
        return compare(self, statement, words)

    monkeypatch.setattr(statements.Shape, "matches", matches)
    return calls


def guard_of(conn: Any, rendered: list[str]) -> Guard:
    shapes = shapes_for(
        ["REINDEX {table}"], rendered, conn, {}, {"table": [f'"{t}"' for t in TABLES]}
    )
    return Guard(shapes=shapes, writes=True, risk=RiskLevel.MEDIUM)


def test_each_rendered_write_is_found_without_a_comparison_per_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = [f'REINDEX "{t}"' for t in TABLES]
    with create_engine("sqlite://").connect() as conn:
        guard = guard_of(conn, rendered)
        calls = counted(monkeypatch)
        for sql in rendered:
            assert guard.check(sql, None, "sqlite", "qmark") is None
        # In the order rendered: each is the next shape compiled, or one compiled before.
        assert calls[0] <= 2 * len(TABLES)
        calls[0] = 0
        for sql in reversed(rendered):  # held again, in any order: looked up
            assert guard.check(sql, None, "sqlite", "qmark") is None
        assert calls[0] == 0


def test_a_write_to_a_table_not_listed_is_still_refused_and_a_template_still_allows() -> None:
    with create_engine("sqlite://").connect() as conn:
        guard = guard_of(conn, [f'REINDEX "{t}"' for t in TABLES[:10]])
        assert guard.check('REINDEX "t5"', None, "sqlite", "qmark") is None
        # Not rendered, but the template filled with a listed table.
        assert guard.check('REINDEX   "t1999"', None, "sqlite", "qmark") is None
        refused = guard.check('REINDEX "other"', None, "sqlite", "qmark")
        assert refused is not None and "none of the statements" in refused
