"""The engines aishell speaks to, by the names its tools, catalogs and statements use.

SQLAlchemy names MariaDB's dialect `mariadb`; to aishell it is of MySQL's family: its
tools' specs, their SQL and the catalog queries are MySQL's (where MariaDB differs, the
code asks the connection's `is_mariadb`)."""

from __future__ import annotations

import math

# The characters of an unquoted name, as regex classes: NAME_START a letter, _ or any
# character past ASCII; NAME_TAG_CHAR those and digits (a PostgreSQL $tag$'s); NAME_CHAR
# those and $. Each is spelt as the ASCII it leaves out: the same set written as a range
# up to U+10FFFF costs Python's regex compiler some 5 ms a class, in every process.
NAME_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"
NAME_TAG_CHAR = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
NAME_CHAR = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"

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
