"""What --json prints: one error shape and one time format, whatever the command.

Every error is an object {"code", "message", "exit_code"}: a command's own error (the
code names its kind, `target_locked`), a run's (`run_failed`, `run_interrupted`), a
step's (`step_failed`), a statement's in the audit (`statement_refused`) and an event's
in the run's history (its kind, `step_failed`). Every time
is ISO 8601 with its offset, to the millisecond (2026-11-25T02:00:00.000+00:00), as the
state store keeps them.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any

from aishell.errors import (
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_WAITING_APPROVAL,
    REFUSED_BY_GUARD,
)
from aishell.units import stamp

# The exit code of each run status.
RUN_EXIT = {
    "completed": EXIT_OK,
    "failed": EXIT_FAILED,
    "waiting_approval": EXIT_WAITING_APPROVAL,
    "out_of_window": EXIT_WAITING_APPROVAL,
    "completed_with_denials": EXIT_DENIED,
    "denied": EXIT_DENIED,
    "aborted": EXIT_DENIED,
    "interrupted": EXIT_DENIED,
}
# A step's error takes its status's code too; a skipped step did not fail the run.
STEP_EXIT = {**RUN_EXIT, "skipped": EXIT_OK}


def error_object(code: str, message: str, exit_code: int) -> dict[str, Any]:
    """The one shape of an error in JSON."""
    return {"code": code, "message": message, "exit_code": exit_code}


def dumps(data: Any) -> str:
    """`data` as the JSON of a command's answer: times stamped, anything else as text; a
    float that is no number (a server's statistics may say NaN) as null, since `NaN` and
    `Infinity` are not JSON and a script's reader would refuse the whole answer."""
    return json.dumps(_finite(data), indent=2, sort_keys=True, default=_plain)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def run_json(run: dict[str, Any]) -> dict[str, Any]:
    """A run (a RunResult's dict or a stored run's) with its errors in the one shape: the
    run's, each step's, each audited statement's and each event's."""
    shown = dict(run)
    status = str(run.get("status") or "")
    shown["error"] = _status_error("run", status, run.get("error"))
    if isinstance(run.get("steps"), list):
        shown["steps"] = [_step_json(step) for step in run["steps"]]
    if isinstance(run.get("statements"), list):
        shown["statements"] = [_statement_json(row) for row in run["statements"]]
    if isinstance(run.get("events"), list):
        shown["events"] = [_event_json(event) for event in run["events"]]
    return shown


def _event_json(event: Any) -> Any:
    """An event of the run's history whose data carries an error: `code` is its kind."""
    data = event.get("data") if isinstance(event, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return event
    error = error_object(str(event.get("kind") or "event"), data["error"], EXIT_FAILED)
    return {**event, "data": {**data, "error": error}}


def _step_json(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    return {**step, "error": _status_error("step", str(step.get("status") or ""), step["error"])}


def _statement_json(row: Any) -> Any:
    if not isinstance(row, dict) or not row.get("error"):
        return row
    message = str(row["error"])
    refused = message.startswith(REFUSED_BY_GUARD)
    kind = "statement_refused" if refused else "statement_failed"
    return {**row, "error": error_object(kind, message, EXIT_FAILED)}


def _status_error(kind: str, status: str, message: Any) -> dict[str, Any] | None:
    if message is None or message == "":
        return None
    code = f"{kind}_{status}" if status else f"{kind}_failed"
    exits = RUN_EXIT if kind == "run" else STEP_EXIT
    return error_object(code, str(message), exits.get(status, EXIT_FAILED))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return stamp(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
