"""What a tool must declare it needs, by what its implementations run: an agent's
capabilities (its config's `capabilities`) are checked against a tool's declared
`required_capabilities`, so a declaration below what the tool does would let an agent
allowed only to read delete rows. As with its risk, a declaration cannot lower it: a
statement that writes rows needs database_write; another that writes (ANALYZE, VACUUM,
REINDEX, DDL) one of the capabilities that change a database (or, sent by a handler,
a file: SQLite's VACUUM INTO); a handler riskier than safe, one of those that change
anything."""

from __future__ import annotations

import re
from typing import Any

from aishell.config.kinds import Capability
from aishell.risk import RiskLevel
from aishell.tool.verdicts import CatalogVerdicts

# The words of a statement that writes rows (DML); a statement that writes without
# one changes the database another way.
_WRITES_ROWS = re.compile(r"\b(?:DELETE|UPDATE|INSERT|MERGE|REPLACE|TRUNCATE)\b", re.IGNORECASE)
_CHANGES_DATABASE = frozenset(
    {
        Capability.DATABASE_WRITE,
        Capability.DATABASE_DDL,
        Capability.SCHEMA_MODIFY,
        Capability.INDEX_MANAGE,
        Capability.BACKUP_RESTORE,
    }
)
_CHANGES_ANYTHING = _CHANGES_DATABASE | {Capability.FILE_WRITE, Capability.BACKUP_CREATE}


def capability_problem(
    declared: frozenset[Capability],
    impl: Any,
    placeholder: re.Pattern[str],
    dialect: str,
    verdicts: CatalogVerdicts,
) -> str | None:
    """Why `declared` is less than the implementation needs, else None."""
    risk = getattr(impl, "risk", None)
    for sql in impl.sql_templates:
        judged = placeholder.sub('"x"', sql)
        if verdicts.write_reason(judged, dialect) is None:
            continue
        if _WRITES_ROWS.search(judged):
            if Capability.DATABASE_WRITE not in declared:
                return f"needs database_write: {sql.strip()}"
            continue
        # A handler's other statements may write elsewhere (SQLite's VACUUM INTO a
        # backup file): a file's capability is enough there.
        needed = _CHANGES_DATABASE if risk is None else _CHANGES_ANYTHING
        if not declared & needed:
            return f"needs one of {_named(needed)}: {sql.strip()}"
    changes = isinstance(risk, RiskLevel) and risk.rank > RiskLevel.SAFE.rank
    if changes and not declared & _CHANGES_ANYTHING:
        effect = getattr(impl, "effect", "") or "changes what it runs on"
        return f"needs one of {_named(_CHANGES_ANYTHING)}: its handler {effect}"
    return None


def _named(capabilities: frozenset[Capability]) -> str:
    return ", ".join(sorted(c.value for c in capabilities))
