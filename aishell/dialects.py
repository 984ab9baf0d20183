"""The engines aishell speaks to, by the names its tools, catalogs and statements use.

SQLAlchemy names MariaDB's dialect `mariadb`; to aishell it is of MySQL's family: its
tools' specs, their SQL and the catalog queries are MySQL's (where MariaDB differs, the
code asks the connection's `is_mariadb`)."""

from __future__ import annotations

# A URL's backend (SQLAlchemy's dialect name) -> the family aishell knows it as.
FAMILIES = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}


def family(dialect: str) -> str:
    """The family of a SQLAlchemy dialect name ("mariadb" -> "mysql"); any other name
    as it is."""
    return FAMILIES.get(dialect, dialect)
