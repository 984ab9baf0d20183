"""Schema operations a revision may run again, for the state store's revisions
(state/migrations/versions).

On MySQL each DDL statement commits by itself, and alembic_version moves only when a
revision's last statement is done: a revision cut short (the process killed, the server
gone, a lock wait given up) leaves part of its work in the store and runs again from its
start when the store is next opened. A plain ADD COLUMN then fails on the column it added
the first time, and the store cannot be opened. Each operation here does only what is
not there yet. On SQLite and PostgreSQL, whose DDL is transactional, a revision cut
short left nothing, so each finds nothing done and does all of it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from aishell.inspection import inspected


def add_column(table: str, column: sa.Column[Any]) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the table has a column of that name already."""
    with inspected(op.get_bind()) as found:
        names = {c["name"] for c in found.get_columns(table)}
    if column.name not in names:
        op.add_column(table, column)


def create_table(name: str, *items: Any) -> None:
    """op.create_table, and for a table there already, the indexes it lacks of those its
    columns declare (index=True): each is a statement after the CREATE TABLE."""
    ensure_tables(sa.Table(name, sa.MetaData(), *items))


def ensure_tables(*tables: sa.Table) -> None:
    """Each table that is missing, with its indexes; for each one there, the indexes
    missing from it. In the order given (a key's table before the tables that refer to
    it)."""
    bind = op.get_bind()
    with inspected(bind) as found:
        there = set(found.get_table_names())
    for table in tables:
        if table.name not in there:
            table.create(bind)
            continue
        with inspected(bind) as found:
            indexes = {i["name"] for i in found.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            if index.name not in indexes:
                index.create(bind)


def add_index(index: sa.Index) -> None:
    """CREATE INDEX, unless the index's table has an index of that name already."""
    bind = op.get_bind()
    table = index.table
    assert table is not None  # an index made on a table's columns
    with inspected(bind) as found:
        names = {i["name"] for i in found.get_indexes(table.name)}
    if index.name not in names:
        index.create(bind)
