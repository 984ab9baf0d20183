"""The engines aishell speaks to, by the names its tools, catalogs and statements use.

SQLAlchemy names MariaDB's dialect `mariadb`; to aishell it is of MySQL's family: its
tools' specs, their SQL and the catalog queries are MySQL's (where MariaDB differs, the
code asks the connection's `is_mariadb`)."""

from __future__ import annotations

import math

# A URL's backend (SQLAlchemy's dialect name) -> the family aishell knows it as.
FAMILIES = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def family(dialect: str) -> str:
    """The family of a SQLAlchemy dialect name ("mariadb" -> "mysql"); any other name
    as it is."""
    return FAMILIES.get(dialect, dialect)


def mysql_lock_wait_seconds(lock_timeout_ms: float) -> int:
    """MySQL/MariaDB's lock_wait_timeout (and innodb_lock_wait_timeout) for a target's
    lock_timeout_ms: both take whole seconds only (a fraction is refused), so the wait
    is rounded up, never down: 10 ms waits 1 s, 2500 ms waits 3 s."""
    return max(1, math.ceil(lock_timeout_ms / 1000))
