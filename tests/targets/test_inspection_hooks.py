"""A connection SQLAlchemy's inspector read tables through (inspection.inspected) still
has its errors seen by the engine's handle_error hooks: on MySQL the inspector's own
statements would otherwise switch them off for the rest of the connection's life."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import ProgrammingError

from aishell.inspection import inspected


@pytest.mark.parametrize("reads", ["get_columns", "get_indexes", "get_pk_constraint"])
def test_errors_after_an_inspection_reach_the_engines_hooks(server_url: str, reads: str) -> None:
    engine = create_engine(server_url)
    seen: list[Any] = []
    event.listen(engine, "handle_error", lambda context: seen.append(context.original_exception))
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE inspected_here (a INTEGER PRIMARY KEY, b INTEGER)"))
            conn.execute(text("CREATE INDEX inspected_here_b ON inspected_here (b)"))
            with inspected(conn) as inspector:
                assert getattr(inspector, reads)("inspected_here")
            with pytest.raises(ProgrammingError):
                conn.execute(text("SELECT nothing FROM no_such_table_here"))
        assert len(seen) == 1
    finally:
        engine.dispose()
