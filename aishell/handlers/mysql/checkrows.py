"""What the result rows of CHECK, ANALYZE, OPTIMIZE and REPAIR TABLE say: of one table
checked, sound, damaged or not checked; of any of them, an error that is the server's
lock timeout or deadlock, reported in a row rather than raised.

The rows (Msg_type, Msg_text) mix the server's verdict on the data with reasons the
check never ran. Read naively, both mislead:

- a check that could not run (another session holds the table with LOCK TABLES or a
  DDL, so the wait ends in a lock timeout; the table was dropped meanwhile) ends with
  an error row and "Operation failed": not damage, and no reason to rebuild the table;
- MariaDB's InnoDB stops a check that is killed or reaches max_statement_time and
  answers "OK" (ha_innobase::check reports nothing for an interrupted scan). A check
  that ended at the step's time limit is therefore not taken as sound. One killed by
  another session (KILL QUERY, pt-kill) cannot be told from a finished one.

Sessions speak English (lc_messages, set when aishell connects), so the messages
below read the same on every server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.exc import DBAPIError

# Error rows and messages with which the server refuses for want of a privilege, or
# because the table or server is read-only.
DENIED_TEXT = re.compile(r"denied|read.only|privilege", re.IGNORECASE)

# Errors that say the check did not run, not that the data is damaged: a lock wait that
# timed out, a deadlock, an interrupted statement (error 1205, 1213, 1317, 1969 and
# MySQL's 3024), a table that no longer exists (1146; "doesn't exist in engine", 1932,
# is a dictionary without its data file, which is damage).
_COULD_NOT_RUN = re.compile(
    r"^(?:Lock wait timeout exceeded|Deadlock found when trying to get lock"
    r"|Query execution was interrupted|Table '.*' doesn't exist$)",
    re.IGNORECASE,
)
# The error row of a table that is not there (1146): dropped since the plan.
_GONE = re.compile(r"^Table '.*' doesn't exist$", re.IGNORECASE)
# The status sql_admin.cc gives an operation that did not complete (not translated).
_FAILED = "operation failed"


# The error numbers of the row messages that are worth a retry (targets/transient.py).
_RETRYABLE = {"lock wait timeout exceeded": 1205, "deadlock found when trying to get lock": 1213}


def lock_waited(verdict: Mapping[str, Any]) -> bool:
    """Whether a check_verdict is "not checked" for a lock wait that timed out or a
    deadlock: the kind of not checked that a later try may get past."""
    reason = str(verdict.get("reason") or "").lower()
    return verdict.get("status") == "not checked" and any(
        f"could not run: {text}" in reason for text in _RETRYABLE
    )


def could_not_run(message: str) -> bool:
    """Whether an error row says the statement did not run, rather than what it found."""
    return bool(_COULD_NOT_RUN.search(message.strip()))


def raise_if_retryable(sql: str, message: str) -> None:
    """An error row that is a lock timeout or a deadlock, raised as the server raises it
    for any other statement: the executor then waits and tries the step again, and at
    the last attempt names who held the lock, as on every engine."""
    code = next((n for text, n in _RETRYABLE.items() if message.lower().startswith(text)), None)
    if code is None:
        return
    import pymysql  # only for MySQL targets

    raise DBAPIError.instance(
        sql, None, pymysql.err.OperationalError(code, message), pymysql.err.Error
    )


def check_verdict(
    table: str, rows: Iterable[Mapping[Any, Any]], cut_short: bool = False
) -> dict[str, Any]:
    """{table, status: ok | corrupted | not checked, issues? reason?} from CHECK TABLE's
    rows; `cut_short`: the statement ended at the step's time limit."""
    problems: list[str] = []
    stopped: list[str] = []
    ok, unsupported = False, None
    for row in rows:
        kind, message = str(row["Msg_type"]).lower(), str(row["Msg_text"])
        if kind == "status" and message.upper() == "OK":
            ok = True
        elif kind == "note" and "support" in message.lower():
            unsupported = message
        elif kind == "error" and DENIED_TEXT.search(message):
            return {"table": table, "status": "not checked", "reason": message}
        elif kind == "error" and could_not_run(message):
            stopped.append(message)
        elif kind == "status" and message.lower() == _FAILED and stopped:
            continue  # the status of the operation the error above stopped
        elif kind in ("error", "status"):
            problems.append(message)
    if problems:
        return {"table": table, "status": "corrupted", "issues": problems}
    if stopped and _GONE.search(stopped[0].strip()):
        return {"table": table, "status": "gone"}  # dropped since the plan
    if stopped:
        return {
            "table": table,
            "status": "not checked",
            "reason": f"CHECK TABLE of {table} could not run: {stopped[0]}",
        }
    if ok and cut_short:
        return {
            "table": table,
            "status": "not checked",
            "reason": f"CHECK TABLE of {table} reached the step's time limit "
            "(max_execution_time), and a check cut short still answers OK",
        }
    if not ok:
        return {
            "table": table,
            "status": "not checked",
            "reason": unsupported or "CHECK TABLE gave no verdict",
        }
    return {"table": table, "status": "ok", "issues": []}
