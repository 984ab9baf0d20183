"""The parser's verdicts on the catalog's own SQL, kept between processes.

Loading the catalog judges every statement template of every tool (registry.py: the
least risk its SQL implies, a check query that must only read): a quarter of a second
of the SQL parser at every command that loads it. A verdict is a function of the SQL's
text, its dialect and the code that judged it, so it is kept in the home's cache
(config/cache.py), whose entries are used only while every module of the process that
wrote them is unchanged, and only from a private file of this user's.

Only the catalog's load uses them: every statement a step sends is judged by the guard
as it is sent, never from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aishell.config.cache import cache_file, cached, digest, keep
from aishell.risk import RiskLevel

VERDICTS_ENTRY = "verdicts"


def _key(kind: str, sql: str, dialect: str) -> str:
    return hashlib.sha256(f"{kind}\0{dialect}\0{sql}".encode()).hexdigest()


class CatalogVerdicts:
    """classify(), write_reason() and placed_bind() of the catalog's SQL, from the cache
    where it holds them; keep() writes back what this load used, if that is not what it
    found."""

    def __init__(self, state_home: Path | None = None) -> None:
        self._path = cache_file(state_home, VERDICTS_ENTRY) if state_home is not None else None
        found = cached(self._path, digest([])) if self._path is not None else None
        self._found: dict[str, Any] = found if isinstance(found, dict) else {}
        self._used: dict[str, Any] = {}

    def classify(self, sql: str, dialect: str) -> tuple[RiskLevel, str]:
        """The least risk `sql` implies and why (guard.statements.classify)."""
        key = _key("classify", sql, dialect)
        verdict = _risk(self._kept(key))
        if verdict is None:
            # Here, not at the top: a load whose verdicts are all kept needs no parser.
            from aishell.guard.statements import classify

            found = classify(sql, dialect)
            verdict = (found.risk, found.reason)
        self._used[key] = [verdict[0].value, verdict[1]]
        return verdict

    def write_reason(self, sql: str, dialect: str) -> str | None:
        """Why `sql` may write, or None when it only reads (guard.sqlcheck.write_reason)."""

        def judge() -> str | None:
            from aishell.guard.sqlcheck import write_reason

            return write_reason(sql, dialect)

        return self._text_or_none("write", sql, dialect, judge)

    def placed_bind(self, sql: str, dialect: str) -> str | None:
        """A parameter of `sql` that stands inside a string or a comment, where the
        driver would write its value as SQL text (guard.lex.bind_outside_code)."""

        def judge() -> str | None:
            from aishell.guard.lex import bind_outside_code

            return bind_outside_code(sql, dialect)

        return self._text_or_none("placed", sql, dialect, judge)

    def misread(self, sql: str, dialect: str) -> str | None:
        """How the server would run `sql` otherwise than the parser reads it (its
        comments, strings, white space), or None (guard.lex.disagreement)."""

        def judge() -> str | None:
            from aishell.guard.lex import disagreement

            return disagreement(sql, dialect)

        return self._text_or_none("misread", sql, dialect, judge)

    def _text_or_none(
        self, kind: str, sql: str, dialect: str, judge: Callable[[], str | None]
    ) -> str | None:
        """A verdict that is a sentence or None: kept, else judged now (the judge's
        module imported only then)."""
        key = _key(kind, sql, dialect)
        kept = self._kept(key)
        if isinstance(kept, list) and len(kept) == 1 and isinstance(kept[0], str | None):
            found: str | None = kept[0]
        else:
            found = judge()
        self._used[key] = [found]
        return found

    def _kept(self, key: str) -> Any:
        """The verdict this load already made, else the one found kept."""
        return self._used[key] if key in self._used else self._found.get(key)

    def keep(self) -> None:
        """Keep this load's verdicts, where they differ from those found (a tool changed,
        or the code that judges)."""
        if self._path is not None and self._used and self._used != self._found:
            # The entry is stamped with the modules loaded when it is kept: the judges'
            # among them, though every verdict of this load was found kept.
            import aishell.guard.statements  # noqa: F401

            keep(self._path, digest([]), self._used)


def _risk(kept: Any) -> tuple[RiskLevel, str] | None:
    if not (isinstance(kept, list) and len(kept) == 2 and isinstance(kept[1], str)):
        return None
    try:
        return RiskLevel(kept[0]), kept[1]
    except ValueError:
        return None
