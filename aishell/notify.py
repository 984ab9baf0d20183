"""Tell someone how a scheduled run ended: a command and/or a webhook, with JSON.

A notifier that fails (exits non-zero, times out, cannot connect) is logged and
recorded as an event of the run; it never changes the run's outcome.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from aishell.config import NotificationsConfig
from aishell.terminal import printable


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
        "approve_with": f"aishell approve {run['run_id']}" if waiting else None,
    }


def send(
    config: NotificationsConfig, message: dict[str, Any], log: Callable[[str], None]
) -> list[str]:
    """Send to every configured notifier; returns the failures, one line each."""
    if message["status"] not in config.on:
        return []
    # ensure_ascii (the default) keeps control and bidi characters escaped in the body.
    body = json.dumps(message, sort_keys=True, default=str, ensure_ascii=True).encode()
    failures: list[str] = []
    if config.command:
        try:
            done = subprocess.run(
                shlex.split(config.command),
                input=body,
                capture_output=True,
                timeout=config.timeout_seconds,
                check=False,
            )
            if done.returncode != 0:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                failures.append(
                    f"notify command exited {done.returncode}: {err[-1] if err else ''}".strip()
                )
        except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
            failures.append(f"notify command failed: {exc}")
    if config.webhook:
        request = urllib.request.Request(
            config.webhook,
            data=body,
            headers={"Content-Type": "application/json", "User-Agent": "aishell"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_seconds) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"notify webhook failed: {exc}")
    about = message.get("run_id") or f"schedule {message.get('schedule')}"
    for failure in failures:
        # The command's stderr and the error text are not ours: shown, never obeyed.
        log(printable(f"{about}: {failure}"))
    return failures
