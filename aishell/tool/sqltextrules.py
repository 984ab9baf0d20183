"""What a SQL tool's text may not hold, whatever its risk: checked when the tool loads.

- A bound parameter inside a string or a comment (`'stamped by :who'`): no value is
  bound there. SQLAlchemy's text() makes it the driver's placeholder all the same, and
  PyMySQL writes the value into the text as a quoted literal of its own, which ends the
  string around it, so the value runs as SQL (the guard refuses it when sent, too).
- SQLite's VACUUM INTO: a copy of the whole database at a path the SQL or a param
  names, a file written outside aishell's places. Only the backup tools' handlers,
  which declare backup_create and choose their own paths, write one.
"""

from __future__ import annotations

import re

from aishell.tool.verdicts import CatalogVerdicts

_VACUUM_INTO = re.compile(r"^\s*(?:(?:--[^\n]*\n|/\*.*?\*/)\s*)*VACUUM\b.*\bINTO\b", re.I | re.S)


def sql_text_problem(sql: str, dialect: str, verdicts: CatalogVerdicts) -> str | None:
    """Why a statement of a SQL tool (its {param} placeholders filled) may not load."""
    placed = verdicts.placed_bind(sql, dialect)
    if placed is not None:
        joined = f"CONCAT('text ', {placed})" if dialect == "mysql" else f"'text ' || {placed}"
        return (
            f"{placed} stands inside a string or a comment, where no value is bound; bind "
            f"it where a value goes ({joined})"
        )
    if _VACUUM_INTO.search(sql):
        return "VACUUM INTO writes a file at a path the SQL names, which no SQL tool may"
    return None
