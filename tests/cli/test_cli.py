import json
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import digest, query


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_every_command_has_help():
    def walk(command, path):
        assert command.help, f"{' '.join(path)} has no help text"
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(cli, ["aishell"])


def test_help_documents_the_exit_codes(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for line in (
        "0  succeeded",
        "3  waiting: for approval, or for the maintenance window",
        "5  another run holds the target's lock",
    ):
        assert line in result.output


def test_tools_list(runner, home):
    result = invoke(runner, "tools", "list", "--json")
    names = [t["name"] for t in json.loads(result.stdout)["tools"]]
    assert "optimize_table" in names and len(names) >= 9
    high = json.loads(invoke(runner, "tools", "list", "--risk", "high", "--json").stdout)["tools"]
    assert [t["name"] for t in high] == [
        "cleanup_old_backups",
        "repair_corrupted_tables",
        "vacuum_full_table",
    ]
    table = invoke(runner, "tools", "list", "--category", "maintenance")
    assert "rebuild_fragmented_indexes" in table.output and "count_table_rows" not in table.output


def test_tools_show_prints_metadata_and_sql(runner, home):
    result = invoke(runner, "tools", "show", "update_table_statistics", "--dialect", "sqlite")
    assert result.exit_code == 0
    assert 'ANALYZE main."orders"' in result.output and "low" in result.output
    data = json.loads(invoke(runner, "tools", "show", "optimize_table", "--json").stdout)
    assert data["risk_level"] == "medium"
    assert data["sql"]["sqlite"] == ["VACUUM"]
    # A plain VACUUM without statistics; a partitioned table's ANALYZE alone.
    assert data["sql"]["postgresql"] == [
        'VACUUM (ANALYZE) "app_logs"',
        'VACUUM "app_logs"',
        'ANALYZE "app_logs"',
    ]
    # ANALYZE TABLE first where the tablespace file's size cannot be read; then the
    # reads that measure the table's free space as the fragmentation step does.
    mysql = data["sql"]["mysql"]
    assert mysql[:2] == ["ANALYZE TABLE `app_logs`", "OPTIMIZE TABLE `app_logs`"]
    assert all(each.lstrip().startswith("SELECT") for each in mysql[2:]), mysql


def test_tools_show_unknown_tool_is_one_line(runner, home):
    result = invoke(runner, "tools", "show", "vacuum_everything")
    assert result.exit_code == 2
    assert result.output == "Error: No tool named 'vacuum_everything' in the catalog\n"


def test_demo_creates_the_database(runner, home):
    result = invoke(
        runner, "demo", "--log-rows", "500", "--users", "70", "--orders", "300", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tables"]["app_logs"] == 450  # the oldest tenth is purged
    assert data["tables"]["users"] == 70 and data["tables"]["products"] == 1_000
    # The cancelled orders (about a sixth) are purged.
    assert 200 <= data["tables"]["orders"] < 300, data["tables"]
    assert query(home / "demo.db", "SELECT count(*) FROM users") == [(70,)]
    assert (home / "demo.db").is_file()


@pytest.mark.parametrize("option", ["--log-rows", "--users", "--orders"])
def test_demo_sizes_are_whole_numbers_of_at_least_one(runner, home, option):
    result = invoke(runner, "demo", option, "0")
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and "1<=x<=" in result.output
    assert not (home / "demo.db").exists()


def test_plan_json(runner, demo_db):
    result = invoke(runner, "plan", "maintenance", "--type", "quick", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data["plan_hash"]) == 64
    assert [s["tool"] for s in data["steps"]][1] == "update_table_statistics"
    assert data["steps"][1]["sql"][0] == 'ANALYZE main."app_logs"'


def test_plan_table(runner, demo_db):
    result = invoke(runner, "plan", "maintenance", "--type", "full", "--tables", "orders")
    assert result.exit_code == 0
    for word in ("rebuild_fragmented_indexes", "medium", "VACUUM", "plan hash"):
        assert word in result.output


def test_run_json_is_one_object_on_stdout(runner, demo_db):
    result = invoke(runner, "run", "maintenance", "--type", "full", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"run_id", "status", "agent", "target", "dry_run", "steps"} <= set(data)
    assert data["status"] == "completed" and data["agent"] == "maintenance"
    for step in data["steps"]:
        assert {"index", "tool", "params", "risk_level", "status", "output", "error"} <= set(step)
        assert step["status"] == "succeeded"
    assert "completed" in result.stderr  # the human summary went to stderr

    listed = json.loads(invoke(runner, "runs", "list", "--json").stdout)["runs"]
    assert listed[0]["run_id"] == data["run_id"]
    shown = invoke(runner, "runs", "show", data["run_id"][:6])
    assert shown.exit_code == 0 and data["run_id"] in shown.output
    assert "rebuild_fragmented_indexes" in shown.output


def test_dry_run_cli_leaves_the_file_unchanged(runner, demo_db):
    before = digest(demo_db)
    result = invoke(runner, "run", "maintenance", "--type", "full", "--dry-run")
    assert result.exit_code == 0
    assert "Dry run: nothing was changed" in result.output
    assert digest(demo_db) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "prod"], "Error: Unknown target 'prod'; targets in "),
        (
            ["--tables", "orders,nope"],
            "Error: Table 'nope' not found in target 'demo'; tables are:",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(runner, demo_db, home, args, message):
    before = digest(demo_db)
    result = invoke(runner, "run", "maintenance", "--type", "full", *args)
    assert result.exit_code == 2
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert digest(demo_db) == before
    assert invoke(runner, "runs", "list", "--json").stdout.count("run_id") == 0


def test_bad_type_is_a_usage_error(runner, demo_db):
    before = digest(demo_db)
    result = invoke(runner, "run", "maintenance", "--type", "weekly")
    assert result.exit_code == 2
    assert "Invalid value for '--type': 'weekly' is not one of" in result.output
    assert digest(demo_db) == before


def test_malformed_config_is_one_line(runner, demo_db, home):
    (home / "config" / "aishell.yaml").write_text("targets: {demo: {url: sqlite:///demo.db}\n")
    before = digest(demo_db)
    result = invoke(runner, "run", "maintenance", "--type", "full")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and "aishell.yaml:2: invalid YAML" in result.output
    assert result.output.count("\n") == 1
    assert digest(demo_db) == before


def test_missing_demo_database_says_how_to_create_it(runner, home):
    result = invoke(runner, "run", "maintenance")
    assert result.exit_code == 2
    assert "does not exist; create it with `aishell demo`" in result.output
    assert not (home / "demo.db").exists()


def test_debug_shows_the_traceback(runner, home):
    result = invoke(runner, "--debug", "tools", "show", "nope")
    assert result.exit_code == 2 and "Traceback" in result.output


def strict(home):
    path = home / "config" / "agents" / "maintenance.yaml"
    path.write_text(path.read_text().replace("safety_level: moderate", "safety_level: strict"))


def test_waiting_run_exits_3_then_approve_and_resume_complete_it(runner, demo_db, home):
    # With nobody to ask (no terminal), the run does not wait: it ends waiting_approval.
    strict(home)
    result = invoke(runner, "run", "maintenance", "--type", "full", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    run_id = data["run_id"]
    assert data["status"] == "waiting_approval"
    done = [s["tool"] for s in data["steps"] if s["status"] == "succeeded"]
    assert "analyze_database_health" in done and "update_table_statistics" in done
    assert f"aishell approve {run_id}" in result.stderr

    approved = invoke(runner, "approve", run_id, "--reason", "change ticket 4711")
    assert approved.exit_code == 0 and "aishell resume" in approved.output
    resumed = invoke(runner, "resume", run_id, "--json")
    assert resumed.exit_code == 0, resumed.output
    final = json.loads(resumed.stdout)
    assert final["status"] == "completed"
    assert {s["status"] for s in final["steps"]} == {"succeeded"}
    shown = invoke(runner, "runs", "show", run_id)
    assert "change ticket 4711" in shown.output and "aishell approve" in shown.output


def test_deny_then_resume_ends_with_the_steps_denied(runner, demo_db, home):
    strict(home)
    run_id = json.loads(
        invoke(
            runner, "run", "maintenance", "--type", "full", "--tables", "orders", "--json"
        ).stdout
    )["run_id"]
    denied = invoke(runner, "deny", run_id, "--step", "2")
    assert denied.exit_code == 0 and f"continue with `aishell resume {run_id}`" in denied.output
    result = invoke(runner, "deny", run_id, "--step", "2")
    assert (
        result.exit_code == 2
        and "is denied, not waiting for approval (waiting: 3)" in result.output
    )
    assert invoke(runner, "deny", run_id, "--step", "3").exit_code == 0
    resumed = invoke(runner, "resume", run_id, "--json")
    assert resumed.exit_code == 4
    final = json.loads(resumed.stdout)
    statuses = [s["status"] for s in final["steps"]]
    assert statuses == ["succeeded", "succeeded", "denied", "denied", "succeeded", "succeeded"]
    assert final["status"] == "completed_with_denials"


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_the_first_step_is_decided_by_its_index_zero(runner, demo_db, home, decision):
    """Steps are named by their index from 0, as `runs show` and the approval hint say:
    a run waiting at its first step is decided with --step 0."""
    from aishell import commands
    from aishell.config.models import load_config
    from aishell.policy.approvers import NonInteractive
    from tests.helpers import one_step_plan

    strict(home)
    plan = one_step_plan("maintenance", "demo", "sqlite", "optimize_table", {"table": "orders"})
    waiting = commands.apply_plan(load_config(home=home), plan, approver=NonInteractive())
    assert waiting.status == "waiting_approval" and waiting.steps[0].index == 0
    decided = invoke(runner, decision, waiting.run_id, "--step", "0")
    assert decided.exit_code == 0, decided.output
    assert f"step(s) 0 optimize_table of run {waiting.run_id}" in decided.output


def test_deny_of_every_waiting_step_ends_the_run(runner, demo_db, home):
    # The purge waits for a person (it would delete most of the table); the count after
    # it and its statistics wait on it.
    run_id = json.loads(
        invoke(
            runner, "run", "log-cleanup", "--table", "app_logs", "--retention-days", "30",
            "--non-interactive", "--json",
        ).stdout
    )["run_id"]  # fmt: skip
    denied = invoke(runner, "deny", run_id, "--reason", "not tonight")
    assert denied.exit_code == 0, denied.output
    assert "the run ended denied" in denied.output and "resume" not in denied.output
    shown = json.loads(invoke(runner, "runs", "show", run_id, "--json").stdout)
    shown = shown.get("run", shown)
    assert shown["status"] == "denied" and shown["finished_at"]
    assert "not tonight" in shown["error"]["message"]
    assert shown["error"]["code"] == "run_denied" and shown["error"]["exit_code"] == 4
    statuses = [s["status"] for s in shown["steps"]]
    assert statuses == ["succeeded", "denied", "skipped", "skipped"]
    assert all("not run: denied by" in s["error"]["message"] for s in shown["steps"][2:])
    # Nothing is left to resume: the steps not run stay not run.
    assert invoke(runner, "resume", run_id, "--json").exit_code != 0
    again = json.loads(invoke(runner, "runs", "show", run_id, "--json").stdout)
    assert [s["status"] for s in again.get("run", again)["steps"]] == statuses


def test_yes_approves(runner, demo_db, home):
    strict(home)
    result = invoke(runner, "run", "maintenance", "--type", "full", "--tables", "users", "--yes")
    assert result.exit_code == 0


def test_runs_show_unknown_id(runner, home):
    result = invoke(runner, "runs", "show", "ffffffff")
    assert result.exit_code == 2 and result.output.startswith("Error: No run with id 'ffffffff'")


def test_python_dash_m(home):
    done = subprocess.run(
        [sys.executable, "-m", "aishell", "tools", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["tools"]


def read_until(fd, needle, timeout=30.0):
    seen = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {needle!r} in {seen.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@contextmanager
def in_terminal(
    *args: str, env: dict[str, str | None] | None = None, to_file: tuple[str, Path] | None = None
):
    """`aishell ARGS` in a pseudo-terminal: (the process, the terminal's fd). `env`
    changes the environment (None removes a variable); `to_file` (stdout or stderr, and
    a path) sends that stream to a file instead."""
    leader, follower = pty.openpty()
    changed = {"COLUMNS": "200", "TERM": "dumb", **(env or {})}
    env = {k: v for k, v in {**os.environ, **changed}.items() if v is not None}
    streams: dict[str, Any] = {"stdout": follower, "stderr": follower}
    with ExitStack() as files:
        if to_file is not None:
            streams[to_file[0]] = files.enter_context(to_file[1].open("wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "aishell", *args],
            stdin=follower,
            **streams,
            env=env,
            close_fds=True,
        )
    os.close(follower)
    try:
        yield proc, leader
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_interactive_prompt_in_a_terminal(demo_db, home):
    strict(home)
    with in_terminal("run", "maintenance", "--type", "full", "--tables", "app_logs") as (
        proc,
        leader,
    ):
        shown = read_until(leader, "Run this step?")
        assert (
            "rebuild_fragmented_indexes" in shown and 'REINDEX main."idx_app_logs_level"' in shown
        )
        assert "medium risk needs approval at the strict safety level" in shown
        os.write(leader, b"no\n")
        shown = read_until(leader, "Run this step?")
        assert "optimize_table" in shown and "VACUUM" in shown
        os.write(leader, b"quit\n")
        rest = read_until(leader, "aborted")
        assert proc.wait(timeout=30) == 4, rest


def test_interactive_yes_and_all(demo_db, home):
    strict(home)
    with in_terminal("run", "maintenance", "--type", "full", "--tables", "app_logs,orders") as (
        proc,
        leader,
    ):
        shown = read_until(leader, "Run this step?")
        assert "rebuild_fragmented_indexes" in shown and "app_logs" in shown
        assert "mitigations" in shown and "indexes to rebuild" in shown
        os.write(leader, b"yes\n")
        shown = read_until(leader, "Run this step?")
        assert "optimize_table" in shown
        os.write(leader, b"all\n")  # every remaining medium step: no more questions
        rest = read_until(leader, "completed")
        assert "Run this step?" not in rest
        assert proc.wait(timeout=30) == 0
    run = json.loads(
        subprocess.run(
            [sys.executable, "-m", "aishell", "runs", "list", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["runs"][0]
    approvals = json.loads(
        subprocess.run(
            [sys.executable, "-m", "aishell", "runs", "show", run["run_id"], "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["approvals"]
    # The steps on orders found nothing to rebuild, and the file nothing more to give
    # back after app_logs' VACUUM: they ran as reads, asking nobody.
    assert [a["how"] for a in approvals] == ["prompt", "prompt:all"]


def test_a_review_step_shows_the_whole_plan_first(demo_db, home):
    from tests.helpers import corrupt_index

    corrupt_index(demo_db)
    with in_terminal("run", "maintenance", "--type", "emergency") as (proc, leader):
        shown = read_until(leader, "Run this step?")
        assert "The whole plan, for review" in shown and "Review needed" in shown
        assert "generate_maintenance_report" in shown  # the last step of the plan is listed
        assert "A backup copy of the database is taken before any repair." in shown
        os.write(leader, b"yes\n")
        read_until(leader, "completed")
        assert proc.wait(timeout=30) == 0


def _commands_of(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands_of(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_command_that_shows_progress_takes_quiet():
    # What shows a spinner, a bar or step lines: a run of any job, its resume, a saved
    # plan applied, a restore, a model's plan, a plan's drafting, the demo's making.
    shows_progress = {"run", "resume", "apply", "restore", "ask", "plan", "demo"}
    for words in _commands_of(cli):
        if words[0] not in shows_progress or words[-1] == "rotate-key":
            continue
        help_text = CliRunner().invoke(cli, [*words, "--help"]).output
        assert "-q, --quiet" in help_text, words


@pytest.mark.parametrize(("typed", "exit_code"), [(b"copy\n", 0), (b"demo\n", 4), (b"\n", 4)])
def test_a_critical_step_runs_only_once_its_target_is_named(demo_db, home, typed, exit_code):
    """Bound: a backup of the demo and one restore; a hang fails at read_until's 30 s."""
    assert CliRunner().invoke(cli, ["run", "backup", "--non-interactive"]).exit_code == 0
    copy = home / "copy.db"
    sqlite3.connect(copy).close()
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["copy"] = {"url": f"sqlite:///{copy}", "environment": "test"}
    path.write_text(yaml.safe_dump(data))
    with in_terminal("restore", "1", "--to", "copy") as (proc, leader):
        read_until(leader, "Run this step?")
        os.write(leader, b"y\n")
        read_until(leader, "type the target's name (copy) to run it")
        os.write(leader, typed)
        assert proc.wait(timeout=60) == exit_code
    tables = {r[0] for r in sqlite3.connect(copy).execute("SELECT name FROM sqlite_master")}
    assert ("app_logs" in tables) == (exit_code == 0)


def test_demo_json_writes_nothing_but_its_json(home):
    """--json: one JSON object on stdout, and nothing on stderr (the progress display
    is for a terminal)."""
    import json as json_module

    from click.testing import CliRunner

    from aishell.cli import cli as aishell_cli

    done = CliRunner().invoke(
        aishell_cli, ["demo", "--log-rows", "1000", "--users", "50", "--orders", "200", "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json_module.loads(done.stdout)
    assert done.stderr == ""
