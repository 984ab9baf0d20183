"""Tell someone how a scheduled run ended: a command and/or a webhook, with JSON.

A notifier that fails (exits non-zero, times out, cannot connect) is logged and
recorded as an event of the run; it never changes the run's outcome.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
from typing import Any

from aishell.config.models import NotificationsConfig
from aishell.targets.clientlogin import client_env
from aishell.units import took

logger = logging.getLogger(__name__)


def summary(run: dict[str, Any], schedule: str | None, how: str) -> dict[str, Any]:
    """What a notifier gets: the run's outcome and where to look, never its params."""
    steps = run.get("steps") or []
    counts: dict[str, int] = {}
    for step in steps:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    waiting = [s["step_id"] for s in steps if s["status"] == "waiting_approval"]
    return {
        "run_id": run["run_id"],
        "schedule": schedule,
        "trigger": how,
        "agent": run["agent"],
        "target": run["target"],
        "status": run["status"],
        "error": run.get("error"),
        "steps": counts,
        "waiting_for_approval": waiting,
        "approve_with": approve_with(
            run["run_id"], [s["index"] for s in steps if s["status"] == "waiting_approval"]
        ),
    }


def approve_with(run_id: str, waiting: list[int]) -> str | None:
    """The command that approves a run's waiting steps: one step by its number, which
    every step takes (a purge over its limits no other); several by the run, whose
    answer names each step only its own approval passes."""
    if not waiting:
        return None
    if len(waiting) == 1:
        return f"aishell approve {run_id} --step {waiting[0]}"
    return f"aishell approve {run_id}"


def send(config: NotificationsConfig, message: dict[str, Any]) -> list[str]:
    """Send to every configured notifier; returns the failures, one line each, and logs
    each of them."""
    if message["status"] not in config.on:
        return []
    return deliver(config, message)


def deliver(config: NotificationsConfig, message: dict[str, Any]) -> list[str]:
    """Send to every configured notifier whatever `on` says (an alert's rules chose it);
    returns the failures, one line each, and logs each of them."""
    # ensure_ascii (the default) keeps control and bidi characters escaped in the body.
    body = json.dumps(message, sort_keys=True, default=str, ensure_ascii=True).encode()
    failures: list[str] = []
    if config.command:
        failure = _run_command(config.command, body, config.timeout_seconds)
        if failure:
            failures.append(failure)
    if config.webhook:
        failure = _post(config.webhook, body, config.timeout_seconds)
        if failure:
            failures.append(failure)
    about = message.get("run_id") or (
        f"schedule {message.get('schedule')}"
        if "schedule" in message
        else f"alert {message.get('rule')} on {message.get('subject')}"
    )
    known = {key: message[key] for key in ("run_id", "step") if message.get(key) is not None}
    for failure in failures:
        # The command's stderr and the error text are not ours: the log's formatter
        # escapes them, and they are never obeyed.
        logger.warning("%s: %s", about, failure, extra=known)
    return failures


def _post(url: str, body: bytes, timeout: float) -> str | None:
    """POST the JSON to the webhook; a failure as one line, else None. The line never
    holds the URL, which may carry a token."""
    # Imported here: the command line starts without the HTTP library.
    import httpx

    from aishell.retry.deadline import Late, within

    headers = {"Content-Type": "application/json", "User-Agent": "aishell"}
    late = (
        f"notify webhook failed: no answer within {took(timeout, None)} "
        "(notifications.timeout_seconds)"
    )
    # No redirect is followed: a 307 or 308 would carry the run's summary to a server
    # the hook names, and a 301, 302 or 303 would go on as a GET without it, answered
    # 200 as if delivered.
    client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
    try:
        # The timeout bounds the whole POST: a hook that drips its answer a byte at a
        # time would hold the scheduler's trigger past every wait for a byte.
        response = within(
            timeout, lambda: client.post(url, content=body, headers=headers), client.close
        )
    except (Late, httpx.TimeoutException):
        return late
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        return f"notify webhook failed: {exc}"
    finally:
        client.close()
    if response.is_redirect:  # where it points is not said: it may carry a token
        return (
            f"notify webhook failed: HTTP {response.status_code} sends the notification on "
            "elsewhere, which is not followed; set notifications.webhook to the URL that takes it"
        )
    if not response.is_success:
        return f"notify webhook failed: HTTP Error {response.status_code}: {response.reason_phrase}"
    return None


def _run_command(command: str, body: bytes, timeout: float) -> str | None:
    """Run the notify command in a process group of its own, so that at the timeout the
    whole group ends, the children it started too; a failure as one line, else None."""
    try:
        child = subprocess.Popen(
            shlex.split(command),
            # No password source: neither the variables the config names as holding a
            # password or token, nor those the client libraries read one from
            # (PGPASSWORD, MYSQL_PWD, PGPASSFILE, ...).
            env=client_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        return f"notify command failed: {exc}"
    try:
        _, stderr = child.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid)
        _reap(child)
        return f"notify command failed: it ran longer than {took(timeout, None)} and was ended"
    if child.returncode != 0:
        err = stderr.decode(errors="replace").strip().splitlines()
        return f"notify command exited {child.returncode}: {err[-1] if err else ''}".strip()
    return None


def _reap(child: subprocess.Popen[bytes]) -> None:
    """The ended command waited for and its pipes closed, never read to their end: a
    process it started in a session of its own outlives the group and may hold them
    open for as long as it runs, and the trigger with them."""
    child.kill()  # the command itself, should it have left its group
    child.wait()
    for pipe in (child.stdin, child.stdout, child.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group ended on its own meanwhile
        os.killpg(pgid, signal.SIGKILL)
