"""Runs the state store's revisions on the connection StateStore passes in
(config.attributes["connection"]), inside the transaction it has begun and commits.

aishell runs Alembic only from aishell/state/history.py, never from Alembic's command
line, and configures no logging here: opening a store prints nothing.
"""

from __future__ import annotations

from alembic import context

from aishell.state.schema import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
