"""A number aishell shows is the number it holds: a value a person or a config gave is
echoed with every digit it has (never rounded to six, never with an exponent), a value
refused is named as it was typed, and an age reads in the same words everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config


def invoke(*args: str) -> Any:
    return CliRunner(env={"COLUMNS": "300"}).invoke(cli, list(args), catch_exceptions=False)


def test_a_purge_limit_names_the_retention_given_not_one_rounded_to_the_limit(
    demo_db: Path, config: Config
) -> None:
    """6.9999999 days is under the limit of 7: rounded to six digits it read "retention
    of 7 days is under 7", a reason no DBA can act on."""
    result = invoke(
        "run", "log-cleanup", "--table", "app_logs", "--retention-days", "6.9999999",
        "--non-interactive",
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "retention of 6.9999999 days is under 7: recent rows would be deleted" in result.output


def test_a_plan_says_the_retention_in_the_digits_it_was_given(demo_db: Path) -> None:
    result = invoke(
        "plan", "log-cleanup", "--table", "app_logs", "--retention-days", "0.00001", "--json"
    )
    assert result.exit_code == 0, result.output
    (estimate, *_rest) = json.loads(result.stdout)["plan"]["steps"]
    assert estimate["rationale"] == (
        "Estimate the rows of app_logs, and those older than 0.00001 days, without reading "
        "the table"
    )


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["fleet", "resend", "x", "--wait-seconds", "0.0000001"], "0.0000001 is not in the range"),
        (["fleet", "resend", "x", "--wait-seconds", "-1"], "-1 is not in the range"),
        (["fleet", "resend", "x", "--wait-seconds", "1e30"], "1e30 is not in the range"),
        (["plan", "log-cleanup", "--table", "t", "--retention-days", "-0.5"], "-0.5 is not in"),
        (["plan", "log-cleanup", "--table", "t", "--sleep-ms", "3600001.25"], "3600001.25 is not"),
    ],
)
def test_a_number_out_of_range_is_named_as_it_was_typed(
    home: Path, words: list[str], said: str
) -> None:
    """click's own message names the float it made: 0.0000001 as 1e-07, -1 as -1.0."""
    result = invoke(*words)
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert said in line, line


def test_the_backup_list_says_how_old_a_backup_is_in_the_words_fleet_status_uses(
    demo_db: Path, config: Config
) -> None:
    """A backup taken a minute ago read "0.0 h old" in `backups list` and "1 min old"
    in `fleet status`."""
    taken = commands.run_job(config, "backup", {"type": "full"})
    assert taken.status == "completed", taken.error
    listed = invoke("backups", "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(
        r"^demo: newest backup proven restorable is id 1, \d+ s old$", listed.output, re.M
    )
    assert " h old" not in listed.output
    newest = json.loads(invoke("backups", "list", "--json").stdout)["newest_restorable"]["demo"]
    assert type(newest["age_seconds"]) is int and newest["age_seconds"] >= 0


def test_a_maintenance_plan_names_the_fragmentation_threshold_as_configured(
    demo_db: Path, edit_config: Any
) -> None:
    """12.3456789 read "12.3457%" in every rebuild step's rationale."""
    edit_config(maintenance={"default_config": {"fragmentation_threshold": 12.3456789}})
    result = invoke("plan", "maintenance", "--type", "full", "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    rebuilds = [s for s in steps if s["tool"] == "rebuild_fragmented_indexes"]
    assert rebuilds
    for step in rebuilds:
        assert "fragmented past 12.3456789%" in step["rationale"], step["rationale"]


def test_a_backup_requirement_names_its_age_limit_as_configured(
    demo_db: Path, edit_config: Any
) -> None:
    """A limit of 0.0000012 h read "from the last 1.2e-06 h"."""
    required = {
        "type": "backup_required",
        "before_operations": ["optimize_table"],
        "max_age_hours": 0.0000012,
    }
    config = edit_config(maintenance={"safety_constraints": [required]})
    result = commands.run_job(config, "maintenance", {"type": "full", "tables": ["orders"]})
    (optimize,) = [s for s in result.steps if s.tool == "optimize_table"]
    assert optimize.status == "waiting_approval"
    assert any("from the last 0.0000012 h and none was found" in r for r in optimize.reasons), (
        optimize.reasons
    )


def test_no_default_or_range_any_help_shows_is_a_whole_number_as_a_float() -> None:
    """`fleet resend --help` showed `[default: 21600.0; 1<=x<=2592000]`: the float click
    made of a number given as one, where a person reads seconds and wrote 21600."""
    from aishell.cli.doc import render

    text = " ".join(render().split())  # a bracket wraps across lines
    shown = [b for b in re.findall(r"\[[^\[\]]*\]", text) if "default:" in b or "x" in b]
    assert any("default: 20" in b for b in shown), shown  # defaults and ranges are read
    # A number, not an address (127.0.0.1), that ends in ".0", or has an exponent.
    floats = re.compile(r"(?<![\d.])\d+\.0(?![\d.])|\d[eE][-+]?\d")
    assert [b for b in shown if floats.search(b)] == []


def test_a_step_s_time_and_a_backup_s_age_read_in_the_same_units(
    demo_db: Path, config: Config
) -> None:
    """`runs list` said a run took "0.1s" where `backups list` said its backup was
    "5 s old": one span of time, one way of writing it."""
    taken = commands.run_job(config, "backup", {"type": "full"})
    assert taken.status == "completed", taken.error
    listed = invoke("runs", "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(r"│ \d+\.\d (ms|s|min) +│", listed.output), listed.output
    aged = invoke("backups", "list")
    assert re.search(r", \d+ s old$", aged.output, re.M), aged.output
