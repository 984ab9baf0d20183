"""Input is never half-accepted: each bad number, schedule, demo target, archive target and
name is refused whole with one line naming it, or shown escaped, and nothing changes."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import create_engine, text

from aishell import commands, render
from aishell.agents.archive import archive_parts
from aishell.cli import cli
from aishell.cli.options import FiniteFloat
from aishell.cli.schedules import job_from_words
from aishell.config.kinds import Capability
from aishell.config.models import load_config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import ConfigError, TargetError, UsageError
from aishell.handlers.purge.cutoff import check_retention
from aishell.plan.model import validate_plan
from aishell.policy.approvers import ApprovalRequest
from aishell.registry import load_registry
from aishell.targets.demo import DEMO_APPLICATION_ID, create_demo, is_demo_database
from aishell.terminal import printable
from aishell.tool.params import validate
from tests.helpers import config_written, digest, one_step_plan, query, use_target

# What is judged is which file the demo writes over, not its rows.
SMALL_SHOP = ("--users", "50", "--orders", "100")
NOT_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(cli, list(args), catch_exceptions=False)


def one_error_line(result: Any) -> str:
    """The single `Error:` line of a refused command."""
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --- 1. numbers: finite and in range -------------------------------------------------------


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(
    "words",
    [
        ["run", "log-cleanup", "--table", "app_logs", "--retention-days"],
        ["run", "log-cleanup", "--table", "app_logs", "--max-batch-ms"],
        ["run", "log-cleanup", "--table", "app_logs", "--sleep-ms"],
        ["run", "log-cleanup", "--table", "app_logs", "--run-time"],
        ["plan", "log-cleanup", "--table", "app_logs", "--retention-days"],
        ["run", "backup", "--cleanup", "--retention-days"],
    ],
)
def test_a_number_that_is_not_finite_is_refused_naming_the_option(
    runner, demo_db, config, words, value
):
    before = digest(demo_db)
    result = invoke(runner, *words, value)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    # A duration takes no exponent at all ("1e400" is refused as "1e3" is).
    said = "no exponent" if words[-1] == "--run-time" and "e" in value.lower()[1:] else "finite"
    assert f"Invalid value for '{words[-1]}'" in line and said in line, line
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []


@pytest.mark.parametrize("value", ["1e-400", "-2.5E-999", "0.0000001e-330"])
@pytest.mark.parametrize(
    "words",
    [
        ["run", "log-cleanup", "--table", "app_logs", "--sleep-ms"],
        ["run", "log-cleanup", "--table", "app_logs", "--retention-days"],
    ],
)
def test_a_number_too_near_0_for_a_float_is_refused_not_read_as_0(
    runner, demo_db, config, words, value
):
    """A float would hold it as 0 (no pause, a retention of none): refused as written."""
    before = digest(demo_db)
    result = invoke(runner, *words, value)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert f"Invalid value for '{words[-1]}'" in line, line
    assert f"{value} is too near 0 for a float to tell it from 0" in line, line
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []
    assert not config.backup_dir.exists()


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--retention-days", "-1", "0<=x<=36500"),
        ("--retention-days", "36501", "0<=x<=36500"),
        ("--max-batch-ms", "0.5", "1<=x<=3600000"),
        ("--max-batch-ms", "3600001", "1<=x<=3600000"),
        ("--sleep-ms", "-0.1", "0<=x<=3600000"),
        ("--run-time", "nan s", "not a finite duration"),
        ("--run-time", "inf h", "not a finite duration"),
        ("--run-time", "0.5s", "under a second"),
        ("--run-time", "31d", "over the limit of 30 days"),
        ("--run-time", "soon", "not a duration"),
        ("--batch-size", "0", "1<=x<=1000000"),
        ("--max-rows", "0", "x>=1"),
        ("--max-rows", "nan", "not a valid integer"),
    ],
)
def test_a_number_out_of_range_is_refused(runner, demo_db, config, option, value, why):
    before = digest(demo_db)
    result = invoke(runner, "run", "log-cleanup", "--table", "app_logs", option, value)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert f"'{option}'" in line and why in line, line
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_a_backup_cleanup_with_a_nan_retention_deletes_nothing(runner, demo_db, config):
    made = invoke(runner, "run", "backup", "--no-verify")
    assert made.exit_code == 0, made.output
    kept = commands.list_backups(config)
    files = sorted(config.backup_dir.rglob("*"))
    for value in ("nan", "-inf"):
        refused = invoke(runner, "run", "backup", "--cleanup", "--retention-days", value)
        assert refused.exit_code == 2
    # The same job given through the API is refused where it is given.
    job = {"type": "full", "cleanup": True, "retention_days": math.nan, "keep_last": 1}
    with pytest.raises(UsageError, match=r"^--retention-days: nan is not a finite number"):
        commands.run_job(config, "backup", job)
    assert commands.list_backups(config) == kept
    assert sorted(config.backup_dir.rglob("*")) == files


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retention_days", math.nan),
        ("retention_days", math.inf),
        ("retention_days", 10**6),
        ("max_batch_ms", math.nan),
        ("sleep_ms", -math.inf),
        ("run_time_seconds", math.nan),
        ("max_replica_lag_seconds", math.inf),
    ],
)
def test_a_job_given_through_the_api_is_refused_before_a_run(demo_db, config, key, value):
    before = digest(demo_db)
    with pytest.raises(UsageError, match=r"^--[a-z-]+"):
        commands.run_job(config, "log_cleanup", {"table": "app_logs", key: value})
    assert digest(demo_db) == before and commands.list_runs(config) == []


def test_a_schedule_refuses_job_words_with_a_bad_number(runner, demo_db, config):
    result = invoke(
        runner,
        *("schedule", "add", "n", "--cron", "0 2 * * *", "--"),
        *("log-cleanup", "--table", "app_logs", "--max-batch-ms", "nan"),
    )
    assert result.exit_code == 2
    assert "'--max-batch-ms': 'nan' is not a finite number" in one_error_line(result)
    assert commands.list_schedules(config) == []


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        (math.nan, {"type": "number", "minimum": 0}, "params: nan is not a finite number"),
        (math.inf, {"type": "number", "maximum": 10}, "params: inf is not a finite number"),
        (-math.inf, {"type": "integer"}, "params: -inf is not a finite number"),
        (math.nan, {"type": ["string", "number"]}, "params: nan is not a finite number"),
        (math.nan, {"type": "number", "enum": [1, 2]}, "params: nan is not a finite number"),
        (
            [1.5, math.nan],
            {"type": "array", "items": {"type": "number"}},
            "params[1]: nan is not a finite number",
        ),
        ([1, math.inf], {"type": "array"}, "params[1]: inf is not a finite number"),
        (
            {"a": {"b": [math.nan]}},
            {"type": "object"},
            "params.a.b[0]: nan is not a finite number",
        ),
        (
            {"limits": {"x": -math.inf}},
            {"type": "object", "properties": {"limits": {"type": "object"}}},
            "params.limits.x: -inf is not a finite number",
        ),
    ],
)
def test_the_schema_refuses_numbers_that_are_not_finite(value, schema, problem):
    assert validate(value, schema) == [problem]


def test_the_schema_still_takes_finite_numbers():
    schema = {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}
    assert validate({"n": 1e300, "free": [0.5, {"x": -2.0}]}, schema) == []


def test_a_plan_step_with_a_nan_param_is_invalid():
    registry = load_registry([bundled_catalog_dir()])
    plan = one_step_plan(
        "log_cleanup",
        "demo",
        "sqlite",
        "delete_old_records",
        {"table": "app_logs", "date_column": "created_at", "retention_days": math.nan},
    )
    problems = validate_plan(plan, registry, [c.value for c in Capability])
    assert any("retention_days: nan is not a finite number" in p for p in problems), problems


@pytest.mark.parametrize("value", [math.nan, math.inf, -1, 10**6, "30", True])
def test_a_retention_is_a_finite_number_of_days_in_range(value):
    with pytest.raises(UsageError, match="give a number of days from 0 to 36500"):
        check_retention(value)


@pytest.mark.parametrize(
    ("file", "path", "value", "key"),
    [
        ("aishell.yaml", ["planner", "llm", "tries"], ".nan", "planner.llm.tries"),
        (
            "aishell.yaml",
            ["planner", "llm", "timeout_seconds"],
            ".inf",
            "planner.llm.timeout_seconds",
        ),
        (
            "aishell.yaml",
            ["notifications", "timeout_seconds"],
            ".nan",
            "notifications.timeout_seconds",
        ),
        (
            "aishell.yaml",
            ["circuit_breaker", "cool_down_seconds"],
            ".inf",
            "circuit_breaker.cool_down_seconds",
        ),
        (
            "agents/log_cleanup.yaml",
            ["log_cleanup_agent", "purge", "retention_days"],
            ".nan",
            "log_cleanup_agent.purge.retention_days",
        ),
        (
            "agents/log_cleanup.yaml",
            ["log_cleanup_agent", "purge", "max_batch_ms"],
            ".inf",
            "log_cleanup_agent.purge.max_batch_ms",
        ),
        (
            "agents/log_cleanup.yaml",
            ["log_cleanup_agent", "purge", "max_replica_lag_seconds"],
            "-.inf",
            "log_cleanup_agent.purge.max_replica_lag_seconds",
        ),
        (
            "agents/log_cleanup.yaml",
            ["log_cleanup_agent", "safety_constraints", 0, "max_share"],
            ".NaN",
            "log_cleanup_agent.safety_constraints.0.max_share",
        ),
        (
            "agents/maintenance.yaml",
            ["maintenance_agent", "default_config", "fragmentation_threshold"],
            ".nan",
            "maintenance_agent.default_config.fragmentation_threshold",
        ),
        (
            "agents/backup.yaml",
            ["backup_agent", "default_config", "retry_backoff_seconds"],
            ".inf",
            "backup_agent.default_config.retry_backoff_seconds",
        ),
    ],
)
def test_a_config_number_that_is_not_finite_is_refused_with_file_and_key(
    home, file, path, value, key
):
    message = config_written(home, file, path, value)
    config_file = home / "config" / file
    assert message.startswith(f"{config_file}: {key}: input should be a finite number")
    assert "\n" not in message


def test_a_config_retention_past_a_hundred_years_is_refused(edit_config):
    config = edit_config(log_cleanup={"purge": {"retention_days": 40_000}})
    with pytest.raises(ConfigError, match=r"purge.retention_days: input should be less than"):
        config.agent("log_cleanup")


# --- 2. schedules that can never fire -------------------------------------------------------


@pytest.mark.parametrize(
    "cron",
    ["0 2 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "*/5 * 31 11 *", "0 2 31 2 */2"],
)
def test_a_schedule_that_never_fires_is_refused_when_added(runner, demo_db, config, cron):
    result = invoke(runner, "schedule", "add", "never", "--cron", cron, "--", "maintenance")
    assert result.exit_code == 2
    assert f"the schedule {cron!r} never fires" in one_error_line(result)
    assert commands.list_schedules(config) == []


def test_a_schedule_that_fires_only_in_leap_years_is_taken(runner, demo_db, config):
    result = invoke(runner, "schedule", "add", "leap", "--cron", "0 0 29 2 *", "--", "maintenance")
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in commands.list_schedules(config)] == ["leap"]


@pytest.mark.parametrize("zone", ["", "Mars/Olympus", "../etc/passwd", " UTC"])
def test_an_unknown_time_zone_is_refused(runner, demo_db, config, zone):
    result = invoke(
        runner,
        "schedule",
        "add",
        "z",
        "--cron",
        "0 2 * * *",
        "--timezone",
        zone,
        "--",
        "maintenance",
    )
    assert result.exit_code == 2
    if zone:
        assert f"--timezone {zone!r}: unknown time zone" in one_error_line(result)
    else:  # as every empty value
        assert "Invalid value for '--timezone': the value is empty" in one_error_line(result)
    assert commands.list_schedules(config) == []


# --- 3. the demo writes only its own files --------------------------------------------------


@pytest.fixture
def mine(home: Path, edit_config: Any) -> tuple[Any, Path]:
    """A target `mine` whose SQLite file the demo must not touch."""
    path = home / "mine.db"
    config = edit_config({"targets": {"mine": {"url": f"sqlite:///{path}"}}})
    return config, path


def test_the_demo_refuses_to_overwrite_a_database_it_did_not_make(runner, mine):
    _, path = mine
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
    conn.execute("INSERT INTO invoices VALUES (1, 100)")
    conn.commit()
    conn.close()
    before = digest(path)
    result = invoke(runner, "demo", "--target", "mine", "--log-rows", "1000", *SMALL_SHOP)
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"Error: {path} is not an aishell demo database; choose another --target or remove "
        "the file yourself"
    )
    assert digest(path) == before
    assert not path.with_name(path.name + ".partial").exists()


@pytest.mark.parametrize(
    "content", [b"not a database at all\n", b"SQLite format 3\x00" + b"\x00" * 200]
)
def test_the_demo_refuses_any_other_file(runner, mine, content):
    _, path = mine
    path.write_bytes(content)
    result = invoke(runner, "demo", "--target", "mine", "--log-rows", "1000", *SMALL_SHOP)
    assert result.exit_code == 2 and "is not an aishell demo database" in one_error_line(result)
    assert path.read_bytes() == content


def test_the_demo_refuses_a_folder(runner, mine):
    _, path = mine
    path.mkdir()
    result = invoke(runner, "demo", "--target", "mine", "--log-rows", "1000", *SMALL_SHOP)
    assert result.exit_code == 2 and "is not an aishell demo database" in one_error_line(result)
    assert path.is_dir()


def test_a_demo_made_before_the_marker_is_refused(mine):
    _, path = mine
    create_demo(path, log_rows=100, users=10, orders=10)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 0")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(UsageError, match="is not an aishell demo database"):
        commands.create_demo_database(load_config(), "mine", 100)
    assert digest(path) == before


def test_the_demo_writes_a_new_file_an_empty_one_or_its_own(runner, mine):
    _, path = mine
    path.touch()
    first = invoke(runner, "demo", "--target", "mine", "--log-rows", "1000", *SMALL_SHOP)
    assert first.exit_code == 0, first.output
    assert is_demo_database(path)
    assert query(path, "PRAGMA application_id") == [(DEMO_APPLICATION_ID,)]
    again = invoke(runner, "demo", "--target", "mine", "--log-rows", "2000", *SMALL_SHOP, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["tables"]["app_logs"] == 1800


# --- 4. --archive-to says file: or table: ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "events.jsonl",
        "/var/lib/aishell/events.jsonl",
        "events_archive",
        "file:",
        "table:",
        "FILE:x.jsonl",
        "jsonl:x",
        ":x",
        "",
    ],
)
def test_an_archive_target_without_its_kind_is_refused(runner, demo_db, config, value):
    before = digest(demo_db)
    result = invoke(runner, "run", "log-cleanup", "--table", "app_logs", "--archive-to", value)
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "'--archive-to'" in line and "file:PATH" in line and "table:NAME" in line
    assert digest(demo_db) == before and commands.list_runs(config) == []
    with pytest.raises(UsageError, match=r"^--archive-to: .* is not file:PATH or table:NAME$"):
        commands.run_job(config, "log_cleanup", {"table": "app_logs", "archive_to": value})


def test_the_archive_kinds_parse_to_the_purge_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert archive_parts("file:old/a.jsonl") == ("file", str(tmp_path / "old" / "a.jsonl"))
    assert archive_parts("file:archive") == ("file", str(tmp_path / "archive"))
    assert archive_parts("table:a/b.json") == ("table", "a/b.json")
    assert archive_parts("table:app_logs_old") == ("table", "app_logs_old")


def test_a_table_named_like_a_file_is_archived_into_as_a_table(runner, demo_db, config):
    conn = sqlite3.connect(demo_db)
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'app_logs'").fetchone()[0]
    conn.execute(sql.replace("app_logs", '"old/app_logs.jsonl"', 1))
    conn.commit()
    conn.close()
    result = invoke(
        runner,
        *("run", "log-cleanup", "--table", "app_logs", "--retention-days", "120"),
        *("--archive-to", "table:old/app_logs.jsonl", "--json", "--yes"),
    )
    assert result.exit_code == 0, result.output
    deleted = json.loads(result.stdout)["steps"][1]["output"]["rows_deleted"]
    assert deleted > 0
    assert query(demo_db, 'SELECT count(*) FROM "old/app_logs.jsonl"') == [(deleted,)]


def test_plan_json_shows_the_archive_param_the_kind_names(runner, demo_db, tmp_path):
    file_plan = invoke(
        runner,
        *("plan", "log-cleanup", "--table", "app_logs", "--json"),
        *("--archive-to", f"file:{tmp_path / 'a.jsonl'}"),
    )
    assert file_plan.exit_code == 0, file_plan.output
    params = json.loads(file_plan.stdout)["steps"][1]["params"]
    assert params["archive_file"] == str(tmp_path / "a.jsonl") and "archive_table" not in params


def test_schedule_job_words_keep_the_kind(demo_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    words = ("log-cleanup", "--table", "app_logs", "--archive-to", "table:app_logs_old")
    assert job_from_words(words)[1]["archive_to"] == "table:app_logs_old"
    with pytest.raises(UsageError, match="Job words: .*'--archive-to'"):
        job_from_words(("log-cleanup", "--table", "app_logs", "--archive-to", "app_logs_old"))


# --- 5. the archive table is never the purged table -----------------------------------------


@pytest.mark.parametrize("archive", ["app_logs", "App_Logs", "APP_LOGS", "aPp_LoGs"])
def test_sqlite_refuses_the_purged_table_under_another_spelling(runner, demo_db, config, archive):
    before = digest(demo_db)
    result = invoke(
        runner,
        *("run", "log-cleanup", "--table", "app_logs", "--retention-days", "30"),
        *("--archive-to", f"table:{archive}", "--yes"),
    )
    assert result.exit_code == 2, result.output
    assert (
        f"the archive table {archive!r} is the table being purged ('app_logs')"
        in one_error_line(result)
    )
    assert digest(demo_db) == before and commands.list_runs(config) == []


@pytest.mark.parametrize("archive", ["main.app_logs", '"app_logs"', "app_logs ", "temp.app_logs"])
def test_sqlite_takes_a_dotted_or_quoted_name_as_a_name_not_a_path_to_the_table(
    demo_db, config, archive
):
    # The name is quoted whole, so it can only reach a table of exactly that name; a
    # dotted one is said so, not taken for a schema and a table of it.
    before = digest(demo_db)
    with pytest.raises(TargetError, match="does not exist") as missing:
        commands.run_job(
            config, "log_cleanup", {"table": "app_logs", "archive_to": f"table:{archive}"}
        )
    whole = "the name is taken whole, as one table's in the purged table's schema"
    assert (whole in str(missing.value)) == ("." in archive), missing.value
    if "." in archive:  # the example makes that one table, quoted whole
        made = f'CREATE TABLE "{archive}" AS SELECT * FROM "app_logs" WHERE 0'
        assert f"(e.g. {made})" in str(missing.value)
    assert digest(demo_db) == before


def _server_table(url: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    engine.dispose()


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        quoted = conn.dialect.identifier_preparer.quote_identifier(table)
        found = int(conn.execute(text(f"SELECT count(*) FROM {quoted}")).scalar_one())
    engine.dispose()
    return found


def _folds_case(url: str) -> bool:
    """Whether the server resolves table names without regard to case."""
    if not url.startswith("mysql"):
        return False
    engine = create_engine(url)
    with engine.connect() as conn:
        folding = int(conn.execute(text("SELECT @@lower_case_table_names")).scalar_one())
    engine.dispose()
    return folding != 0


def test_servers_refuse_the_purged_table_as_its_own_archive(home, server_url):
    config = use_target(home, server_url)
    _server_table(
        server_url,
        "CREATE TABLE app_logs (id INTEGER PRIMARY KEY, created_at DATE NOT NULL)",
        "INSERT INTO app_logs VALUES (1, DATE '2001-01-01'), (2, DATE '2001-01-02')",
    )
    with pytest.raises(TargetError, match=r"'app_logs' is the table being purged"):
        commands.run_job(
            config, "log_cleanup", {"table": "app_logs", "archive_to": "table:app_logs"}
        )
    # Another spelling is the same table only where the server folds case.
    if _folds_case(server_url):
        with pytest.raises(TargetError, match=r"'App_Logs' is the table being purged"):
            commands.run_job(
                config, "log_cleanup", {"table": "app_logs", "archive_to": "table:App_Logs"}
            )
    else:
        with pytest.raises(TargetError, match="archive table App_Logs does not exist"):
            commands.run_job(
                config, "log_cleanup", {"table": "app_logs", "archive_to": "table:App_Logs"}
            )
    assert _count(server_url, "app_logs") == 2
    assert commands.list_runs(config) == []


def test_servers_archive_into_a_table_differing_only_in_case_where_it_is_another_table(
    home, server_url
):
    if _folds_case(server_url):
        pytest.skip("this server folds table names to lower case: App_Logs is app_logs")
    config = use_target(home, server_url)
    quoted = '"App_Logs"' if server_url.startswith("postgresql") else "`App_Logs`"
    _server_table(
        server_url,
        "CREATE TABLE app_logs (id INTEGER PRIMARY KEY, created_at DATE NOT NULL)",
        f"CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, created_at DATE NOT NULL)",
        "INSERT INTO app_logs VALUES (1, DATE '2001-01-01'), (2, DATE '2001-01-02'), "
        "(3, CURRENT_DATE), (4, CURRENT_DATE), (5, CURRENT_DATE)",
    )
    result = commands.run_job(
        config,
        "log_cleanup",
        {"table": "app_logs", "archive_to": "table:App_Logs", "retention_days": 30},
    )
    assert result.status == "completed", result.error
    assert result.steps[1].output["rows_deleted"] == 2
    assert _count(server_url, "app_logs") == 3 and _count(server_url, "App_Logs") == 2


# --- 6. names with control characters are shown escaped -------------------------------------

ODD_NAMES = [
    "t\x1b[2Jcleared",
    "r\rX",
    "b\x07ell",
    "c\x9bz",
    "bidi\u202egnp",
    "iso\u2066late",
    "del\x7fete",
    "[red]markup[/red]",
]
RAW = ["\x1b", "\r", "\x07", "\x9b", "\u202e", "\u2066", "\x7f"]


def _odd_tables(path: Path) -> None:
    conn = sqlite3.connect(path)
    for name in ODD_NAMES:
        quoted = '"' + name.replace('"', '""') + '"'
        conn.execute(f"CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany(f"INSERT INTO {quoted} (v) VALUES (?)", [("x",)] * 20)
    conn.commit()
    conn.close()


def test_printable_escapes_every_control_and_bidi_character():
    assert printable("t\x1b[2J\r\x07\x9b\x7f\u202e\u2066\u200f\x00") == (
        "t\\x1b[2J\\x0d\\x07\\x9b\\x7f\\u202e\\u2066\\u200f\\x00"
    )
    assert printable("a\nb\tc") == "a\\x0ab\\x09c"
    assert printable("a\nb\r", newlines=True) == "a\nb\\x0d"
    assert printable("plain é 日本 [bold]") == "plain é 日本 [bold]"
    assert printable(printable("x\x1by")) == "x\\x1by"


@pytest.mark.parametrize("name", ODD_NAMES)
def test_maintenance_on_an_oddly_named_table_shows_it_escaped(runner, demo_db, name):
    _odd_tables(demo_db)
    result = invoke(runner, "run", "maintenance", "--type", "quick", "--tables", name)
    assert result.exit_code in (0, 3), result.output
    shown = result.output
    for raw in RAW:
        assert raw not in shown, (raw, shown)
    assert printable(name) in shown

    as_json = invoke(runner, "run", "maintenance", "--type", "quick", "--tables", name, "--json")
    data = json.loads(as_json.stdout)
    assert data["steps"][0]["params"]["tables"] == [name]
    for raw in RAW:
        assert raw not in as_json.stdout and raw not in as_json.stderr


def test_the_plan_preview_and_runs_show_escape_names(runner, demo_db):
    _odd_tables(demo_db)
    tables = ",".join(ODD_NAMES)
    for args in (
        ("plan", "maintenance", "--type", "full", "--tables", tables),
        ("run", "maintenance", "--type", "full", "--tables", tables, "--dry-run"),
    ):
        result = invoke(runner, *args)
        assert result.exit_code in (0, 3), result.output
        for raw in RAW:
            assert raw not in result.output, (args, raw)
        assert "[red]markup[/red]" in result.output
    run_id = commands.list_runs(load_config(), limit=1)[0]["run_id"]
    detail = invoke(runner, "runs", "show", run_id, "--sql")
    for raw in RAW:
        assert raw not in detail.output


def test_an_error_naming_an_odd_table_is_one_escaped_line(runner, demo_db):
    result = invoke(runner, "run", "maintenance", "--tables", "nope\x1b[2J\u202e")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "nope\\x1b[2J\\u202e" in line and "\x1b" not in result.output


def test_the_approval_prompt_shows_everything_escaped(runner):
    name = "t\x1b[2J\u202e[bold]x[/bold]"
    request = ApprovalRequest(
        run_id="r1",
        target=f"db{name}",
        environment="production",
        step_index=0,
        step_id="step_0",
        tool="optimize_table",
        description="d",
        params={"table": name},
        sql=[f'VACUUM "{name}"\nANALYZE "{name}"'],
        risk="high",
        confirmation="review",
        reasons=(f"the table {name} is large\r",),
        risks=("r\x07",),
        mitigations=("m\x9b",),
        estimate={"tables": {name: {"rows": 10, "bytes": 2048}}},
        rationale=f"model says {name}",
        plan=(("step_0", "optimize_table", name, "high"),),
    )
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    with runner.isolation(input="no\n"):
        answer = render.approval_prompt(console, request)
    assert answer == "no"
    shown = out.getvalue()
    for raw in RAW:
        assert raw not in shown, raw
    assert "t\\x1b[2J\\u202e[bold]x[/bold]" in shown
    assert 'VACUUM "t\\x1b' in shown and "\nANALYZE" in shown.replace("│", "").replace(" ", "")


def test_scheduler_log_lines_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from aishell.cli.logs import serve_log

    with serve_log():
        logging.getLogger("aishell.scheduling.serve").error(
            "schedule %s: failed: %s", "x", "no table t\x1b[2J\u202e"
        )
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split(" ", 1)[1] == "schedule x: failed: no table t\\x1b[2J\\u202e"


def test_a_notifier_failure_is_logged_escaped(home, capsys: pytest.CaptureFixture[str]) -> None:
    from aishell.cli.logs import serve_log
    from aishell.config.models import NotificationsConfig
    from aishell.scheduling.notify import send

    config = NotificationsConfig(command="sh -c 'printf \"bad\\033[2J\\r\" >&2; exit 3'")
    with serve_log():
        failures = send(config, {"status": "failed", "run_id": "r\x1b"})
    (line,) = capsys.readouterr().out.splitlines()
    assert failures and "\x1b" not in line and "\r" not in line and "\\x1b[2J" in line


def test_no_command_takes_a_float_that_may_be_nan_or_infinite() -> None:
    """Every float a command takes is a FiniteFloat (or a Duration): NaN compares false
    with every limit, so a plain range lets it through."""
    ctx = click.Context(cli)
    loose: list[str] = []

    def walk(command: click.Command, path: list[str]) -> None:
        for param in command.params:
            kind = param.type
            if kind is click.FLOAT or (
                isinstance(kind, click.FloatRange) and not isinstance(kind, FiniteFloat)
            ):
                loose.append(f"{' '.join(path)} {param.name}")
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])

    walk(cli, ["aishell"])
    assert loose == []


@pytest.mark.parametrize("command", [["approve"], ["deny"], ["resume"], ["runs", "show"], ["stop"]])
@pytest.mark.parametrize("given", ["", "   "])
def test_an_empty_run_id_is_said_to_be_empty(runner, demo_db, config, command, given):
    """Not "ambiguous" (every id starts with the empty string)."""
    result = runner.invoke(cli, [*command, given])
    assert result.exit_code == 2, result.output
    empty = "the value is empty" if not given else "the value is only spaces"
    assert result.output == f"Error: Invalid value for 'RUN_ID': {empty}\n", result.output


@pytest.mark.parametrize("command", [["approve"], ["resume"], ["runs", "show"], ["stop"]])
def test_a_run_id_longer_than_any_is_not_found_in_one_short_line(runner, demo_db, config, command):
    """Not a state store error blaming the disk (SQLite refuses so long a LIKE pattern)."""
    done = commands.run_job(config, "maintenance", {"type": "quick"})
    given = done.run_id + "f" * 100_000
    result = runner.invoke(cli, [*command, given])
    assert result.exit_code == 2, result.output
    assert "No run with id" in result.output, result.output
    assert len(result.output) < 300, len(result.output)


def test_the_machine_s_own_zone_is_refused_naming_the_zone_it_is(runner, demo_db, config):
    """`--timezone localtime` was taken: the schedule fired on whichever zone the machine
    serving it was set to, and `schedule list` said "localtime"."""
    from aishell.config.zones import machine_zone

    words = ["schedule", "add", "z", "--cron", "0 2 * * *", "--timezone", "localtime"]
    result = invoke(runner, *words, "--", "maintenance")
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert line.startswith("Error: --timezone 'localtime': 'localtime' is whichever zone"), line
    assert f"give the zone's own IANA name (this machine's is {machine_zone()})" in line, line
    assert machine_zone() is not None and commands.list_schedules(config) == []


# --- a file to write in a folder that is not there -----------------------------------------


@pytest.mark.parametrize(
    ("words", "what"),
    [
        (["plan", "maintenance", "--out"], "Plan file"),
        (["metrics", "--textfile"], "Metrics file"),
    ],
)
def test_a_file_to_write_in_a_missing_folder_says_to_create_it(
    runner: CliRunner, demo_db: Path, tmp_path: Path, words: list[str], what: str
) -> None:
    path = tmp_path / "no-such-folder" / "out"
    done = invoke(runner, *words, str(path))
    assert done.exit_code == 2, done.output
    assert one_error_line(done) == (
        f"Error: {what} {path} cannot be written: its folder {path.parent} does not exist; "
        "create it, or give a path in a folder that does"
    )
    assert not path.parent.exists()
