"""Which of a SQLite schema's objects can be made again in memory apart (appcode.py).

SQLite reads its whole schema table again after each CREATE it runs, to load the new
object: 10,000 tables made again in one database took 3.2 s, a tenth of that in
databases of a few hundred each. A table and its indexes need nothing else to be made
(a foreign key is not looked for, and no constraint, default, generated column or
index may read another table), so tables go, with their indexes, in groups of
GROUP_TABLES, each group made in a database of its own. A view or a trigger may name
any table and is prepared as it would be read or fired, so a schema that holds one is
made in one database, as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence

# (type, name, tbl_name, sql) of sqlite_schema, in the order they were made.
SchemaObject = tuple[str, str, str, str]

GROUP_TABLES = 256


def groups(objects: Sequence[SchemaObject]) -> list[list[SchemaObject]]:
    """The objects in groups to be made each in a database of its own, every one in
    the order it came (an index after its table); at least one group."""
    if any(kind in ("view", "trigger") for kind, *_ in objects):
        return [list(objects)]
    by_table: dict[str, list[SchemaObject]] = {}
    for obj in objects:
        by_table.setdefault(obj[2], []).append(obj)
    tables = list(by_table.values())
    found = [
        [obj for table in tables[start : start + GROUP_TABLES] for obj in table]
        for start in range(0, len(tables), GROUP_TABLES)
    ]
    return found or [[]]
