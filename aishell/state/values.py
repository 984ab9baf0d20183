"""How values are written into the state store's rows: ids, times and JSON text."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runs list reads values without SQLAlchemy (runlist.py)
    from sqlalchemy import CursorResult

from aishell.units import stamp


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def now() -> str:
    return stamp()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def new_id(result: CursorResult[Any] | sqlite3.Cursor) -> int:
    """The id an INSERT gave its row (SQLAlchemy's result, or sqlite3's cursor: see
    core.Hot)."""
    if isinstance(result, sqlite3.Cursor):
        row_id = result.lastrowid
    else:
        key = result.inserted_primary_key
        row_id = None if key is None else key[0]
    if row_id is None:  # every table written this way has an integer key
        raise RuntimeError("the insert returned no primary key")
    return int(row_id)
