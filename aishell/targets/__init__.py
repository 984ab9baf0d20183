"""Connections to the databases aishell maintains: engines, session guards, catalog checks.

By subject: engines (opening a target, its session guards), limits (how long a
connection waits for the server), deadlines (a step's time limit, cancelling a
statement), locks (run locks), access (read-only sessions), transient (errors worth a
retry), identity (which database a connection reaches), server (describe_server).
"""

from aishell.targets.access import session_access
from aishell.targets.catalog import check_column, user_tables
from aishell.targets.deadlines import interrupt, step_deadline
from aishell.targets.engines import APPLICATION_NAME, Target, open_target
from aishell.targets.identity import database_identity
from aishell.targets.limits import TargetSilent
from aishell.targets.locks import RunLock
from aishell.targets.server import describe_server
from aishell.targets.transient import is_transient

__all__ = [
    "APPLICATION_NAME",
    "RunLock",
    "Target",
    "TargetSilent",
    "check_column",
    "database_identity",
    "describe_server",
    "interrupt",
    "is_transient",
    "open_target",
    "session_access",
    "step_deadline",
    "user_tables",
]
