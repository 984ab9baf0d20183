"""The state store (state.db): runs, steps, events, approvals, backups, schedules,
target locks and the scratch ledger, with its schema history in migrations/.

`from aishell.state import StateStore` is how callers reach it; the other names here
are the helpers modules outside this package use.
"""

from aishell.state.faults import DEFAULT_BUSY_TIMEOUT, state_error
from aishell.state.history import HEAD_REVISION, LEGACY_SCHEMA_VERSION
from aishell.state.processes import process_started, recorder_alive
from aishell.state.schema import meta, metadata
from aishell.state.store import StateStore
from aishell.state.values import dumps, new_run_id, now

# The schema version of the history before Alembic, under the name it had then.
SCHEMA_VERSION = LEGACY_SCHEMA_VERSION

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "HEAD_REVISION",
    "LEGACY_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "StateStore",
    "dumps",
    "meta",
    "metadata",
    "new_run_id",
    "now",
    "process_started",
    "recorder_alive",
    "state_error",
]
