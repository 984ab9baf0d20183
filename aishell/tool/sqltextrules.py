"""What a SQL tool's text may not hold, whatever its risk: checked when the tool loads.

- A bound parameter inside a string or a comment (`'stamped by :who'`): no value is
  bound there. SQLAlchemy's text() makes it the driver's placeholder all the same, and
  PyMySQL writes the value into the text as a quoted literal of its own, which ends the
  string around it, so the value runs as SQL (the guard refuses it when sent, too).
- Text the server reads otherwise than the parser (a MySQL executable comment
  `/*! ... */`, a no-break space where the parser sees a word's end, a backslash whose
  meaning depends on sql_mode): its risk and shape would be the parser's reading, not
  what runs, so the guard refuses it in any step that writes; it is refused here,
  before any plan names it.
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
    unread = verdicts.misread(sql, dialect)
    if unread is not None:
        return f"the server would not run it as it reads ({unread})"
    if _VACUUM_INTO.search(sql):
        return "VACUUM INTO writes a file at a path the SQL names, which no SQL tool may"
    return None
