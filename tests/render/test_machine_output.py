"""--json has one error shape and one time format, whatever the command: a command's
error, a run's, a step's and an audited statement's are each {"code", "message",
"exit_code"}; every time is ISO 8601 with its offset, to the millisecond."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from tests.handlers.maintenance.test_unreadable_names import site_tool
from tests.helpers import one_step_plan, use_target

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
ERROR_KEYS = {"code", "message", "exit_code"}


def _json(*args: str, code: int = 0) -> Any:
    # Before a schedule's job words, which follow "--".
    at = args.index("--") if "--" in args else len(args)
    done = CliRunner().invoke(cli, [*args[:at], "--json", *args[at:]])
    assert done.exit_code == code, (args, done.output)
    return json.loads(done.stdout)


def _times(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every (key, value) whose key names a time (…_at, next_run), however deep."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += _times(v, k)
    elif isinstance(value, list):
        for v in value:
            found += _times(v, key)
    elif value is not None and (key.endswith("_at") or key in ("at", "next_run")):
        found.append((key, value))
    return found


def _errors(value: Any) -> list[Any]:
    """Every non-null value under an "error" key, however deep."""
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "error" and v is not None:
                found.append(v)
            else:
                found += _errors(v)
    elif isinstance(value, list):
        for v in value:
            found += _errors(v)
    return found


def test_every_time_in_json_is_iso_8601_with_its_offset(home: Path, demo_db: Path):
    ran = _json("run", "maintenance", "--type", "quick", "--yes")
    _json("run", "backup", "--type", "full", "--yes")
    _json(
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--",
        "maintenance",
        "--type",
        "quick",
    )
    shown = [
        _json("runs", "show", ran["run_id"], "--sql"),
        _json("runs", "list"),
        _json("backups", "list"),
        _json("schedule", "list"),
    ]
    times = [t for data in shown for t in _times(data)]
    keys = {k for k, _ in times}
    assert {"at", "created_at", "finished_at", "started_at", "next_run"} <= keys, keys
    bad = [(k, v) for k, v in times if not (isinstance(v, str) and STAMP.match(v))]
    assert bad == []


def test_a_run_step_and_statement_error_have_the_commands_error_shape(
    home: Path, demo_db: Path, tmp_path: Path
):
    # A read that fails on the server as it runs: SQLite's integer overflow.
    site_tool(home, "one", "SELECT abs(-9223372036854775808) - count(*) AS n FROM {table}")
    config = use_target(home, f"sqlite:///{demo_db}")
    plan = one_step_plan("maintenance", "db", "sqlite", "site_refresh", {"table": "app_logs"})
    saved = commands.save_plan(config, plan, tmp_path / "plan.json")
    failed = _json("apply", str(saved), "--yes", code=1)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "run_failed" and failed["error"]["exit_code"] == 1
    [step] = failed["steps"]
    assert step["error"]["code"] == "step_failed"
    assert "integer overflow" in step["error"]["message"]
    shown = _json("runs", "show", failed["run_id"], "--sql")
    assert shown["error"] == failed["error"] and shown["steps"][0]["error"] == step["error"]
    [sent] = [s for s in shown["statements"] if s["error"]]
    assert sent["error"]["code"] == "statement_failed"
    assert "integer overflow" in sent["error"]["message"]
    # Every error in either is the one shape.
    for data in (failed, shown):
        assert all(set(e) == ERROR_KEYS for e in _errors(data)), _errors(data)
    # A command's own error too.
    missing = _json("runs", "show", "nosuchrun", code=2)
    assert set(missing["error"]) == ERROR_KEYS and missing["error"]["exit_code"] == 2


def test_a_figure_that_is_no_number_is_null_in_json(home: Path, demo_db: Path, tmp_path: Path):
    # SQLite reads 9e999 as infinity, as a server's statistics may say NaN or infinity.
    site_tool(home, "one", "SELECT 9e999 AS ratio, -9e999 AS low, count(*) AS n FROM {table}")
    config = use_target(home, f"sqlite:///{demo_db}")
    plan = one_step_plan("maintenance", "db", "sqlite", "site_refresh", {"table": "app_logs"})
    saved = commands.save_plan(config, plan, tmp_path / "plan.json")
    for argv in (["apply", str(saved), "--yes"], ["runs", "list"]):
        done = CliRunner().invoke(cli, [*argv, "--json"])
        assert done.exit_code == 0, done.output
        json.loads(done.stdout, parse_constant=_refused)  # no NaN or Infinity in it
    ran = json.loads(CliRunner().invoke(cli, ["apply", str(saved), "--yes", "--json"]).stdout)
    [step] = ran["steps"]
    assert step["output"]["ratio"] is None and step["output"]["low"] is None
    assert step["output"]["n"] > 0
    shown = _json("runs", "show", ran["run_id"])
    assert shown["steps"][0]["output"] == step["output"]


def _refused(constant: str) -> Any:
    raise AssertionError(f"not JSON: {constant}")
