"""A number given on the command line, in a schedule's job words or in a plan file is
written in the digits 0-9 and fits where it goes; anything else is refused whole, with
one line naming it (exit 2), before anything is planned, stored or run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.cli.options import Duration, FiniteFloat, WholeNumber
from aishell.config.bounds import MAX_COUNT
from aishell.config.models import Config
from aishell.plan.model import Plan
from aishell.state import signing
from tests.helpers import digest

# Digits int() and float() read but no one types as a number: Arabic-Indic, fullwidth,
# Devanagari; underscores; spaces around; a leading zero (octal, to YAML 1.1); hex.
ODD_WHOLE_NUMBERS = [
    "\u0661\u0662\u0663",  # Arabic-Indic 123
    "\uff11\uff10",  # fullwidth 10
    "\u0967\u0968",  # Devanagari 12
    "1_000",
    " 5",
    "5 ",
    "\t5",
    "5\n",
    "010",
    "0x10",
    "+\u0661",
    "1.0",
    "",
]
ODD_NUMBERS = [w for w in ODD_WHOLE_NUMBERS if w != "1.0"] + ["1.5_0", "1e3_0", "\uff11.5"]
ODD_DURATIONS = [
    "1M",
    "2H",
    "30S",
    "1D",
    "\u0661\u0662\u0663s",
    "1_0m",
    "1e3s",
    "1e3",
    " 2 H ",
    "2 h",
    " 90",
    "90 ",
    "+90s",
    "090s",
    "0x10s",
    "1.5hh",
]


def invoke(*args: str) -> Any:
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)


def one_error_line(result: Any) -> str:
    """The single `Error:` line of a refused command, which exited 2."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _commands(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _commands(sub, f"{path} {name}")


NUMERIC = [
    (f"{path} {param.opts[0]}", param)
    for path, command in _commands(cli, "aishell")
    for param in command.params
    if isinstance(param.type, click.types.IntParamType | click.types.FloatParamType | Duration)
]


def test_every_numeric_option_is_written_in_the_digits_and_bounded() -> None:
    """A numeric option declared with click's own INT, FLOAT or ranges fails here: those
    take what int() and float() take."""
    assert len(NUMERIC) > 30
    kinds = {type(param.type) for _name, param in NUMERIC}
    assert kinds == {WholeNumber, FiniteFloat, Duration}
    for name, param in NUMERIC:
        if isinstance(param.type, FiniteFloat):
            assert param.type.max is not None, name


@pytest.mark.parametrize(("name", "param"), NUMERIC, ids=[name for name, _param in NUMERIC])
def test_every_numeric_option_refuses_odd_digits(name: str, param: click.Parameter) -> None:
    odd = ODD_DURATIONS if isinstance(param.type, Duration) else ODD_WHOLE_NUMBERS
    if isinstance(param.type, FiniteFloat):
        odd = ODD_NUMBERS
    ctx = click.Context(cli)
    for value in odd:
        with pytest.raises(click.BadParameter):
            param.type.convert(value, param, ctx)
            pytest.fail(f"{name} took {value!r}")


@pytest.mark.parametrize(("name", "param"), NUMERIC, ids=[name for name, _param in NUMERIC])
def test_every_integer_option_stops_at_64_bits(name: str, param: click.Parameter) -> None:
    if not isinstance(param.type, WholeNumber):
        return
    ctx = click.Context(cli)
    for value in (str(MAX_COUNT + 1), "1" + "0" * 30):
        with pytest.raises(click.BadParameter):
            param.type.convert(value, param, ctx)
            pytest.fail(f"{name} took {value!r}")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("90", 90), ("90s", 90), ("1.5m", 90), ("2h", 7200), ("1d", 86400), ("1.", 1), (".5m", 30)],
)
def test_a_duration_in_the_digits_with_a_lower_case_unit_is_taken(value, seconds) -> None:
    assert Duration().convert(value, None, None) == seconds


@pytest.mark.parametrize(
    ("kind", "value", "number"),
    [
        (WholeNumber(1, 10), "7", 7),
        (WholeNumber(-5, 5), "-3", -3),
        (WholeNumber(), str(MAX_COUNT), MAX_COUNT),
        (FiniteFloat(0, 100), "2.5", 2.5),
        (FiniteFloat(0, 100), "1e1", 10.0),
        (FiniteFloat(0, 100), ".5", 0.5),
        (FiniteFloat(0, 100), "0", 0.0),
    ],
)
def test_a_number_in_the_digits_is_taken(kind, value, number) -> None:
    assert kind.convert(value, None, None) == number


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--retention-days", "\u0661\u0662\u0663", "'١٢٣' is not a valid number"),
        ("--batch-size", "\uff11_\uff10\uff10\uff10", "is not a valid integer"),
        ("--max-rows", " \u0665 ", "is not a valid integer"),
        ("--max-rows", "1_000", "with no leading zero, space or underscore"),
        ("--max-rows", str(10**20), f"is past {MAX_COUNT}"),
        ("--sleep-ms", "1_0", "is not a valid number"),
        ("--run-time", "1M", "s, m, h or d in lower case"),
        ("--run-time", "\u0661\u0662\u0663s", "is not a duration"),
        ("--run-time", "1_0m", "is not a duration"),
        ("--run-time", "1e3s", "is not a duration"),
        # Past a float's range or not, an exponent is refused for the same reason.
        ("--run-time", "1e308", "(no exponent)"),
        ("--run-time", "1e400s", "(no exponent)"),
        ("--run-time", " 2 H ", "is not a duration"),
        ("--max-run-time", "1M", "is not a duration"),
    ],
)
def test_a_purge_with_an_odd_number_is_refused_before_a_plan(
    demo_db: Path, config: Config, option: str, value: str, said: str
) -> None:
    before = digest(demo_db)
    for verb in ("plan", "run"):
        words = [verb, "log-cleanup", "--table", "app_logs", option, value, "--json"]
        if option == "--max-run-time" and verb == "plan":
            continue  # a plan has no run time
        result = invoke(*words)
        assert result.exit_code == 2, result.output
        message = json.loads(result.stdout)["error"]["message"]
        assert message.startswith(f"Invalid value for '{option}'") and said in message
        assert "\n" not in message
    assert digest(demo_db) == before and commands.list_runs(config) == []


@pytest.mark.parametrize(
    "words",
    [
        ["run", "backup", "--cleanup", "--keep-last", "\u0663"],
        ["run", "backup", "--cleanup", "--retention-days", "3_0"],
        ["run", "backup", "--lock-wait", "1M"],
        ["approve", "somerun", "--step", "\u0661"],
        ["deny", "somerun", "--step", "\uff11"],
        ["runs", "list", "--limit", " 5"],
        ["fleet", "jobs", "--limit", "1_0"],
        ["backups", "show", "\u0661"],
        ["restore", "\u0661", "--to", "demo"],
        ["demo", "--log-rows", "1_000"],
    ],
)
def test_every_command_refuses_odd_digits_in_one_line(
    demo_db: Path, config: Config, words: list[str]
) -> None:
    before = digest(demo_db)
    line = one_error_line(invoke(*words))
    assert "Invalid value for" in line and "digits 0-9" in line, line
    assert digest(demo_db) == before and commands.list_runs(config) == []
    assert not config.backup_dir.exists()


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["fleet", "jobs", "--limit", "100000000000000000000000"], "1<=x<=1000000"),
        (["runs", "list", "--limit", str(MAX_COUNT + 1)], "1<=x<=1000000"),
        (["approve", "somerun", "--step", str(10**30)], f"is past {MAX_COUNT}"),
        (["backups", "show", str(10**25)], f"is past {MAX_COUNT}"),
        (["demo", "--log-rows", str(10**20)], "1<=x<=10000000"),
        (["run", "backup", "--cleanup", "--keep-last", str(10**20)], f"is past {MAX_COUNT}"),
    ],
)
def test_a_number_past_what_it_is_stored_in_is_a_usage_error(
    config: Config, words: list[str], said: str
) -> None:
    """Not an OverflowError from SQLite as an internal error."""
    line = one_error_line(invoke(*words))
    assert said in line and "internal error" not in line, line


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--retention-days", "\u0661\u0662\u0663"),
        ("--batch-size", "1_000"),
        ("--max-rows", " 5 "),
        ("--run-time", "1M"),
    ],
)
def test_a_schedule_s_job_words_are_parsed_as_the_command_line_is(
    demo_db: Path, config: Config, option: str, value: str
) -> None:
    result = invoke(
        *("schedule", "add", "nightly", "--cron", "0 2 * * *", "--"),
        *("log-cleanup", "--table", "app_logs", option, value),
    )
    line = one_error_line(result)
    assert f"Job words: Invalid value for '{option}'" in line, line
    assert commands.list_schedules(config) == []


def test_a_schedule_s_own_run_time_takes_no_capital_unit(demo_db: Path, config: Config) -> None:
    result = invoke(
        *("schedule", "add", "nightly", "--cron", "0 2 * * *", "--max-run-time", "1M", "--"),
        *("log-cleanup", "--table", "app_logs"),
    )
    assert "Invalid value for '--max-run-time'" in one_error_line(result)
    assert commands.list_schedules(config) == []


# --- plan files ---------------------------------------------------------------------------


def _saved_purge(config: Config, path: Path) -> dict[str, Any]:
    commands.plan_job(config, "log_cleanup", {"table": "app_logs"}, out=path)
    return json.loads(path.read_text())


def _resign(home: Path, data: dict[str, Any]) -> None:
    """Sign data with the home's key, as a person holding it can."""
    body = {k: v for k, v in data.items() if k not in ("plan_hash", "signature")}
    data["plan_hash"] = Plan.from_dict(body).hash
    key = signing.load_key(home)
    assert key is not None
    data["signature"] = signing.sign(key, {k: v for k, v in data.items() if k != "signature"})


def test_a_plan_file_with_an_integer_of_thousands_of_digits_is_refused(
    demo_db: Path, config: Config, home: Path
) -> None:
    path = home / "big.json"
    text = json.dumps(_saved_purge(config, path), indent=2)
    path.write_text(text.replace('"sleep_ms": 0.0', '"sleep_ms": 1' + "0" * 4400, 1))
    assert "0" * 4400 in path.read_text()
    before = digest(demo_db)
    line = one_error_line(invoke("apply", str(path), "--dry-run"))
    assert line == f"Error: Plan file {path} is not a plan's JSON text"
    assert digest(demo_db) == before and commands.list_runs(config) == []


@pytest.mark.parametrize(("written", "said"), [("1e-400", "too near 0"), ("1e400", "beyond")])
def test_a_plan_file_with_a_number_no_float_holds_is_refused(
    demo_db: Path, config: Config, home: Path, written: str, said: str
) -> None:
    """Read as 0 (or infinity), a retention of 1e-400 days would be one of none."""
    path = home / "tiny.json"
    text = json.dumps(_saved_purge(config, path), indent=2)
    assert '"sleep_ms": 0.0' in text
    path.write_text(text.replace('"sleep_ms": 0.0', f'"sleep_ms": {written}', 1))
    before = digest(demo_db)
    line = one_error_line(invoke("apply", str(path), "--dry-run"))
    assert line.startswith(f"Error: Plan file {path} holds a number no float holds: {written} "), (
        line
    )
    assert said in line
    assert digest(demo_db) == before and commands.list_runs(config) == []


@pytest.mark.parametrize(
    ("param", "value", "most"),
    [
        ("sleep_ms", 1e300, "3600000"),
        ("max_batch_ms", 1e30, "3600000"),
        ("run_time_seconds", 1e20, "2592000"),
        ("max_replica_lag_seconds", 1e300, "86400"),
        ("max_running_queries", 10**30, str(MAX_COUNT)),
        ("max_rows", 10**20, str(MAX_COUNT)),
        ("expected_rows", 10**20, str(MAX_COUNT)),
        ("cutoff", 10**30, str(MAX_COUNT)),
    ],
)
def test_a_signed_plan_with_a_number_past_its_param_s_maximum_is_refused(
    demo_db: Path, config: Config, home: Path, param: str, value: float, most: str
) -> None:
    """Not an OverflowError (a sleep past time_t, a count past 64 bits) in the step."""
    path = home / "plan.json"
    data = _saved_purge(config, path)
    (purge,) = [s for s in data["steps"] if s["tool"] == "delete_old_records"]
    purge["params"][param] = value
    if param == "cutoff":
        del purge["params"]["retention_days"]
    _resign(home, data)
    path.write_text(json.dumps(data))
    before = digest(demo_db)
    line = one_error_line(invoke("apply", str(path), "--yes"))
    assert param in line and f"above the maximum {most}" in line, line
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_minus_zero_is_zero_in_the_job_and_the_plan(demo_db: Path) -> None:
    """`-0` is 0: no -0.0 in a plan's job, its steps' params or its JSON."""
    done = CliRunner().invoke(
        cli,
        [
            "plan",
            "log-cleanup",
            "--table",
            "app_logs",
            "--retention-days",
            "-0",
            "--sleep-ms",
            "-0",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "-0.0" not in done.stdout
    plan = json.loads(done.stdout)
    assert plan["job"]["retention_days"] == 0 and plan["job"]["sleep_ms"] == 0


def test_minus_zero_given_through_the_api_is_zero(demo_db: Path) -> None:
    from aishell.config.models import load_config

    preview = commands.plan_job(
        load_config(), "log_cleanup", {"table": "app_logs", "retention_days": -0.0}
    )
    assert "-0.0" not in json.dumps(preview.to_dict())
