"""A run that stops waiting for approval names, as waiting, only the steps a person can
approve now; the steps left pending after them are said apart (`aishell approve RUN
--step N` refuses a pending step, so naming it as waiting sent people to a refusal)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli


def _strict(home: Path) -> None:
    path = home / "config" / "agents" / "maintenance.yaml"
    path.write_text(path.read_text().replace("safety_level: moderate", "safety_level: strict"))


def test_the_waiting_line_names_waiting_steps_and_pending_ones_apart(
    demo_db: Path, home: Path
) -> None:
    _strict(home)
    done = CliRunner().invoke(cli, ["run", "maintenance", "--type", "full", "--json"])
    assert done.exit_code == 3, done.output
    data = json.loads(done.stdout)
    by_status: dict[str, list[dict]] = {}
    for step in data["steps"]:
        by_status.setdefault(step["status"], []).append(step)
    waiting, pending = by_status["waiting_approval"], by_status["pending"]
    assert waiting and pending  # the mix the line must tell apart
    said = "waiting for approval: " + ", ".join(s["step_id"] for s in waiting)
    said += f" ({', '.join(s['step_id'] for s in pending)} pending after "
    said += ("it" if len(waiting) == 1 else "them") + ")"
    assert data["error"]["message"] == said
    assert said in done.stderr.splitlines()
    # What the line names as waiting, approve takes; what it names as pending it refuses.
    run_id = data["run_id"]
    refused = CliRunner().invoke(cli, ["approve", run_id, "--step", str(pending[0]["index"])])
    assert refused.exit_code == 2 and "is pending, not waiting" in refused.output
    for step in waiting:
        taken = CliRunner().invoke(cli, ["approve", run_id, "--step", str(step["index"])])
        assert taken.exit_code == 0, taken.output
