"""YAML and config values are never half-read: an alias bomb, a key given twice, bytes
that are not UTF-8, a NUL, a FIFO where a file should be, and every config value parsed
later (URLs, ports, drivers, names, time zones, numbers) end as one line naming the file,
the line or the key, with exit code 2, no traceback and no password."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.files import MAX_ALIAS_NODES, parse_yaml
from aishell.errors import ConfigError
from tests.conftest import REPO
from tests.registry.test_registry import tool

SECRET = "s3cr3t-Pa55"

# Nine levels of nine: a few hundred bytes that expand to 9**9 strings. As a value of a
# tool's example (checked against its params, and so walked whole), it hung every command.
_LEVELS = "abcdefghi"
LAUGHS = (
    f"[&a [{', '.join(['lol'] * 9)}], "
    + ", ".join(f"&{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in itertools.pairwise(_LEVELS))
    + "]"
)
BOMB = "".join(f"{n}: *{n}\n" for n in _LEVELS).replace("a: *a\n", f"a: {LAUGHS}\n", 1)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line(result: Any) -> str:
    """The one error line of a refused command: exit 2, nothing else printed."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def run_cli(home: Path, *args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    """aishell in a process of its own: a hang fails the test instead of stopping it."""
    env = {**os.environ, "AISHELL_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "aishell", *args],
        env=env,
        cwd=home,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def config_file(home: Path) -> Path:
    return home / "config" / "aishell.yaml"


def site_tools(home: Path) -> Path:
    """A site tool folder named in the home's config, empty."""
    folder = home / "site_tools"
    folder.mkdir()
    data = yaml.safe_load(config_file(home).read_text())
    data["catalog_paths"] = ["site_tools"]
    config_file(home).write_text(yaml.safe_dump(data))
    return folder


def site_tool(**overrides: Any) -> dict[str, Any]:
    return tool(**{"name": "site_count", **overrides})


# --- 1. aliases ---------------------------------------------------------------------------


def test_an_alias_bomb_in_a_site_tool_ends_every_command_at_once_in_one_line(home, demo_db):
    folder = site_tools(home)
    text = yaml.safe_dump(site_tool(), sort_keys=False)
    text = text.replace("    table: t\n", f"    table: t\n    more: {LAUGHS}\n", 1)
    assert LAUGHS in text and len(text.encode()) < 1024
    (folder / "laughs.yaml").write_text(text)
    line = 1 + text[: text.index(LAUGHS)].count("\n")
    for args in (
        ["tools", "list"],
        ["plan", "maintenance", "--type", "quick"],
        ["run", "maintenance", "--type", "quick", "--yes"],
    ):
        started = time.monotonic()
        done = run_cli(home, *args)
        assert time.monotonic() - started < 30
        out, err = done.stdout.decode(), done.stderr.decode()
        assert "Traceback" not in out + err
        assert done.returncode == 2, err
        assert err.startswith(f"Error: {folder / 'laughs.yaml'}:{line}: aliases expand to ")
        assert "over the limit of 10000" in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["aishell.yaml", "agents/maintenance.yaml"])
def test_an_alias_bomb_in_a_config_file_is_refused(home, demo_db, where):
    path = home / "config" / where
    path.write_text(path.read_text() + BOMB)
    line = one_line(invoke("plan", "maintenance", "--type", "quick"))
    assert f"{path}:" in line and "aliases expand to" in line


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"x\.yaml:2: an alias refers to a node that holds it"):
        parse_yaml(b"a: 1\nb: &b [1, [2, *b]]\n", tmp_path / "x.yaml")


def test_anchors_a_file_shares_load_up_to_the_bound_and_not_past_it(tmp_path):
    block = "[" + ", ".join(str(i) for i in range(99)) + "]"  # 100 nodes with the list

    def shared(times: int) -> bytes:
        return f"base: &b {block}\nuses: [{', '.join(['*b'] * times)}]\n".encode()

    under = MAX_ALIAS_NODES // 100
    data = parse_yaml(shared(under), tmp_path / "ok.yaml")
    assert len(data["uses"]) == under and data["uses"][0] == list(range(99))
    with pytest.raises(ConfigError, match=r"aliases expand to 10100 more nodes"):
        parse_yaml(shared(under + 1), tmp_path / "over.yaml")


def test_a_site_tool_sharing_its_sql_through_an_anchor_and_a_merge_key_loads(home, demo_db):
    folder = site_tools(home)
    text = yaml.safe_dump(site_tool(implementations={}))
    text = text.replace(
        "implementations: {}\n",
        "implementations:\n"
        "  sqlite: &impl {sql: 'SELECT count(*) AS n FROM {table}', result: one}\n"
        "  postgresql:\n    <<: *impl\n    result: one\n"
        "  mysql: *impl\n"
        "locks: {sqlite: [], postgresql: [], mysql: []}\n",
    )
    (folder / "site_count.yaml").write_text(text)
    done = invoke("tools", "show", "site_count")
    assert done.exit_code == 0, done.output
    assert "SELECT count(*) AS n FROM" in done.output


# --- 2. duplicate keys --------------------------------------------------------------------


def test_a_target_key_given_twice_is_refused_with_both_lines(home, demo_db):
    config_file(home).write_text(
        "default_target: demo\n"
        "targets:\n"
        "  demo:\n"
        "    url: sqlite:///demo.db\n"
        "    environment: test\n"
        "    url: sqlite:///other.db\n"
    )
    line = one_line(invoke("plan", "maintenance", "--type", "quick"))
    assert line == (f"Error: {config_file(home)}:6: duplicate key 'url' (first given on line 4)")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("targets: {demo: {url: 'sqlite:///demo.db'}}\ntargets: {}\n", 2, "targets"),
        (
            "targets:\n  demo: {url: 'sqlite:///demo.db'}\n  demo: {url: 'sqlite:///x.db'}\n",
            3,
            "demo",
        ),
        ("default_target: demo\n? default_target\n: demo\ntargets: {}\n", 2, "default_target"),
    ],
)
def test_duplicate_keys_at_any_depth_are_refused(home, text, line, key):
    config_file(home).write_text(text)
    refused = one_line(invoke("targets", "list"))
    assert refused.startswith(f"Error: {config_file(home)}:{line}: duplicate key '{key}'")


def test_a_duplicate_key_in_a_site_tool_and_in_an_agent_file_is_refused(home, demo_db):
    agent = home / "config" / "agents" / "maintenance.yaml"
    original = agent.read_text()
    agent.write_text(
        original.replace("    max_retries: 3\n", "    max_retries: 3\n    max_retries: 9\n")
    )
    line = one_line(invoke("plan", "maintenance", "--type", "quick"))
    assert f"{agent}:" in line and "duplicate key 'max_retries'" in line
    agent.write_text(original)
    folder = site_tools(home)
    text = yaml.safe_dump(site_tool()) + "risk_level: critical\n"
    (folder / "site_count.yaml").write_text(text)
    line = one_line(invoke("tools", "list"))
    assert f"{folder / 'site_count.yaml'}:" in line and "duplicate key 'risk_level'" in line


def test_a_merged_key_overridden_by_the_mapping_itself_is_no_duplicate(tmp_path):
    data = parse_yaml(b"a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n", tmp_path / "m.yaml")
    assert data["b"] == {"x": 3, "y": 2}


# --- 3. bytes, NUL and special files --------------------------------------------------------


def test_invalid_utf8_in_the_config_names_its_line_and_column(home, demo_db):
    raw = "default_target: demo\ntargets:\n  demo: {url: 'sqlite:///démo.db'}\n".encode()
    raw = raw.replace("é".encode(), b"\xff")
    config_file(home).write_bytes(raw)
    column = raw.index(b"\xff") - raw.rindex(b"\n", 0, raw.index(b"\xff"))
    line = one_line(invoke("run", "maintenance", "--type", "quick", "--yes"))
    assert line == (f"Error: {config_file(home)}:3: not valid UTF-8 (byte 0xff at column {column})")


@pytest.mark.parametrize(
    "raw",
    [b"name: caf\xc3\n", b"name: \xed\xa0\x80\n", b"name: \xc0\xaf\n", b"\xfe\xffname: x\n"],
)
def test_every_kind_of_invalid_utf8_in_a_site_tool_is_refused(home, raw):
    folder = site_tools(home)
    (folder / "bad.yaml").write_bytes(raw)
    line = one_line(invoke("tools", "list"))
    assert f"{folder / 'bad.yaml'}:1: not valid UTF-8 (byte 0x" in line


def test_a_nul_in_a_config_string_is_refused(home):
    config_file(home).write_text('targets:\n  demo: {url: "sqlite:///demo.db\\0x"}\n')
    line = one_line(invoke("targets", "list"))
    assert line == f"Error: {config_file(home)}:2: a NUL character in a string"


def test_a_fifo_among_site_tools_is_refused_without_being_read(home):
    folder = site_tools(home)
    os.mkfifo(folder / "pipe.yaml")
    started = time.monotonic()
    line = one_line(invoke("tools", "list"))
    assert time.monotonic() - started < 10
    assert line == f"Error: {folder / 'pipe.yaml'}: not a regular file; a tool file must be one"


def test_a_malformed_tool_file_names_its_line(home):
    folder = site_tools(home)
    (folder / "broken.yaml").write_text("name: x\nparams: [unclosed\n")
    line = one_line(invoke("tools", "list"))
    assert line.startswith(f"Error: {folder / 'broken.yaml'}:3: invalid YAML: ")


# --- 4. config values parsed later -------------------------------------------------------------


def refused(home: Path, *args: str) -> str:
    """The one stderr line of a refused command; the password in nothing it printed."""
    done = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    out, err = done.stdout, done.stderr
    assert done.exit_code == 2, (out, err)
    assert SECRET not in out and SECRET not in err
    assert "Traceback" not in err and "internal error" not in err
    assert err.count("\n") == 1 and err.startswith("Error: "), err
    return err.strip()


def with_target(home: Path, target: Any, **main: Any) -> None:
    data = yaml.safe_load(config_file(home).read_text())
    data["targets"]["db"] = target
    data["default_target"] = "db"
    data.update(main)
    config_file(home).write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1/db", "expected a mapping of keys, not a string"),
        ([f"postgresql://u:{SECRET}@127.0.0.1/db"], "expected a mapping of keys, not a list"),
        (42, "expected a mapping of keys, not a number"),
    ],
)
def test_a_target_that_is_not_a_mapping_never_repeats_its_url(home, target, expected):
    with_target(home, target)
    for args in (["targets", "list"], ["run", "maintenance", "--yes"], ["doctor"]):
        if args == ["doctor"]:
            done = invoke(*args)
            assert SECRET not in done.stdout + done.stderr
            continue
        line = refused(home, *args)
        assert line == f"Error: {config_file(home)}: targets.db: {expected}"


URL_PROBLEMS = [
    (f"postgresql://u:{SECRET}@127.0.0.1:abc/db", "the URL's port is not a number"),
    (f"postgresql://u:{SECRET}@127.0.0.1:99999/db", "the URL's port 99999 is not between 1"),
    (f"mysql+pymysql://u:{SECRET}@127.0.0.1:0/db", "the URL's port 0 is not between 1"),
    (f"postgresql+nosuch://u:{SECRET}@127.0.0.1/db", "unknown driver 'nosuch' for postgresql"),
    (f"oracle://u:{SECRET}@127.0.0.1/db", "unsupported database 'oracle'"),
    (f"not a url {SECRET}", "not a valid database URL"),
    (f"postgresql//u:{SECRET}@127.0.0.1/db", "not a valid database URL"),
]


@pytest.mark.parametrize(("url", "expected"), URL_PROBLEMS)
def test_a_target_url_that_cannot_be_opened_is_one_line_without_its_password(home, url, expected):
    with_target(home, {"url": url, "environment": "test"})
    for args in (["targets", "list"], ["run", "backup", "--no-verify"]):
        line = refused(home, *args)
        assert line.startswith(f"Error: {config_file(home)}: targets.db.url: {expected}")


@pytest.mark.parametrize(("url", "expected"), URL_PROBLEMS[:3])
def test_a_state_url_that_cannot_be_opened_is_one_line_without_its_password(home, url, expected):
    data = yaml.safe_load(config_file(home).read_text())
    data["state"] = {"url": url}
    config_file(home).write_text(yaml.safe_dump(data))
    line = refused(home, "runs", "list")
    assert line.startswith(f"Error: {config_file(home)}: state.url: {expected}")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("password_env", "MY PASSWORD", "not an environment variable's name"),
        ("password_env", "A=B", "not an environment variable's name"),
        ("lock_timeout_ms", 10**30, "less than or equal to 86400000"),
        ("lock_timeout_ms", "ten", "a number in the digits 0-9"),
        # Text (quoted), as the number it spells: one a float cannot hold is refused.
        ("read_timeout_seconds", "1.0e+400", "finite number"),
        ("read_timeout_seconds", "1.0e-400", "1.0e-400 is too near 0 for a float"),
        ("busy_timeout_ms", -1, "greater than or equal to 1"),
    ],
)
def test_a_target_setting_that_cannot_be_used_is_refused_at_load(home, key, value, expected):
    with_target(home, {"url": f"postgresql://u:{SECRET}@127.0.0.1/db", key: value})
    line = refused(home, "targets", "list")
    assert f"targets.db.{key}: " in line and expected in line


@pytest.mark.parametrize("command", [["targets", "list"], ["doctor"]])
def test_a_password_typed_where_its_variable_s_name_belongs_is_never_repeated(home, command):
    """password_env holding the password itself (the likely slip) is refused without
    repeating it: on a terminal, in a scheduler's log or a pasted doctor output."""
    typed = "Zq8-secret-Probe-77"
    with_target(home, {"url": "postgresql://u@127.0.0.1/db", "password_env": typed})
    done = invoke(*command)
    assert done.exit_code != 0, done.output
    assert "targets.db.password_env: not an environment variable's name" in done.output
    assert typed not in done.output


def test_a_number_given_as_a_string_is_read_as_the_number(home, demo_db):
    with_target(home, {"url": "sqlite:///demo.db", "lock_timeout_ms": "2000"})
    done = invoke("targets", "list")
    assert done.exit_code == 0, done.output


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe", "unknown time zone 'Europe'"),  # a folder of the zone database
        ("x" * 300, "unknown time zone"),  # longer than a file name may be
        ("../../etc/passwd", "unknown time zone"),
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_time_zone_that_is_no_zone_is_one_line(home, demo_db, zone, expected):
    agent = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent.read_text())
    data["maintenance_agent"]["safety_constraints"].append(
        {"type": "maintenance_window", "allowed_hours": [1, 2], "timezone": zone}
    )
    agent.write_text(yaml.safe_dump(data))
    line = one_line(invoke("plan", "maintenance", "--type", "quick"))
    assert "safety_constraints.1.timezone" in line and expected in line


@pytest.mark.parametrize(
    ("section", "changes", "key"),
    [
        ("scheduler", {"misfire_grace_seconds": 10**20}, "scheduler.misfire_grace_seconds"),
        ("notifications", {"timeout_seconds": 1e300}, "notifications.timeout_seconds"),
        ("circuit_breaker", {"cool_down_seconds": 1e300}, "circuit_breaker.cool_down_seconds"),
    ],
)
def test_a_huge_number_in_the_config_is_refused_at_load(home, section, changes, key):
    data = yaml.safe_load(config_file(home).read_text())
    data[section] = changes
    config_file(home).write_text(yaml.safe_dump(data))
    line = one_line(invoke("targets", "list"))
    assert f"{key}: input should be less than or equal to" in line


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"default_config": {"max_execution_time": 10**12}}, "default_config.max_execution_time"),
        ({"default_config": {"min_index_pages": 2**64}}, "default_config.min_index_pages"),
        ({"purge": {"max_rows_per_run": 2**64}}, "purge.max_rows_per_run"),
    ],
)
def test_a_huge_number_in_an_agent_file_is_refused_at_load(home, demo_db, changes, key):
    agent = home / "config" / "agents" / "maintenance.yaml"
    data = yaml.safe_load(agent.read_text())
    for part, values in changes.items():
        data["maintenance_agent"].setdefault(part, {}).update(values)
    agent.write_text(yaml.safe_dump(data))
    line = one_line(invoke("plan", "maintenance", "--type", "quick"))
    assert f"maintenance_agent.{key}: input should be less than or equal to" in line


def test_a_sqlite_target_under_a_path_that_is_not_utf8_is_one_line(tmp_path, monkeypatch):
    home = Path(os.fsdecode(os.fsencode(tmp_path) + b"/h\xffome"))
    home.mkdir()
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "no-system"))
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    assert run_cli(home, "init").returncode == 0
    assert (
        run_cli(home, "demo", "--log-rows", "100", "--users", "50", "--orders", "100").returncode
        == 0
    )
    done = run_cli(home, "run", "maintenance", "--type", "quick", "--yes")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and "internal error" not in err
    assert "h\\xffome/demo.db is not valid UTF-8" in err


@pytest.mark.parametrize(
    ("section", "values", "key", "expected"),
    [
        ("planner", {"llm": {"host": "http://[bad:11434"}}, "planner.llm.host", "not a valid URL"),
        (
            "planner",
            {"llm": {"host": f"http://u:{SECRET}@h:abc"}},
            "planner.llm.host",
            "not a valid URL",
        ),
        (
            "notifications",
            {"webhook": f"ftp://u:{SECRET}@h/x"},
            "notifications.webhook",
            "not an http or https URL",
        ),
        (
            "notifications",
            {"command": f'notify --token {SECRET} "unclosed'},
            "notifications.command",
            "not a command line: No closing quotation",
        ),
    ],
)
def test_a_server_address_or_command_that_cannot_be_used_is_refused_at_load(
    home, section, values, key, expected
):
    data = yaml.safe_load(config_file(home).read_text())
    data[section] = values
    config_file(home).write_text(yaml.safe_dump(data))
    line = refused(home, "planner", "check")
    assert line.startswith(f"Error: {config_file(home)}: {key}: {expected}")


def test_a_server_address_without_a_scheme_is_still_an_address(home):
    data = yaml.safe_load(config_file(home).read_text())
    data["planner"] = {"llm": {"host": "127.0.0.1:9", "connect_attempts": 1}}
    config_file(home).write_text(yaml.safe_dump(data))
    done = invoke("planner", "check")
    assert done.exit_code == 1 and "No answer from an Ollama server at" in done.output


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9" * 5000, "not a usable int: Exceeds the limit (4300 digits)"),
        ("2020-13-45", "not a usable timestamp: month must be in 1..12"),
        ("!!float ten", "not a usable float: could not convert string to float"),
        # Numbers a float cannot hold: 0 or infinity, which a retention or a share
        # would then read as none or as no bound.
        ("1e-400", "not a usable float: 1e-400 is too near 0 for a float to tell it from 0"),
        ("-0.5E-999", "not a usable float: -0.5E-999 is too near 0"),
        ("1e400", "not a usable float: 1e400 is beyond the largest number a float holds"),
        ("!!float 1e-400", "not a usable float: 1e-400 is too near 0"),
    ],
)
def test_a_scalar_yaml_cannot_make_is_refused_at_its_line(home, value, expected):
    text = config_file(home).read_text()
    config_file(home).write_text(f"{text}\nbad_value: {value}\n")
    line = one_line(invoke("targets", "list"))
    lines = text.count("\n") + 2
    assert line.startswith(f"Error: {config_file(home)}:{lines}: {expected}")


@pytest.mark.parametrize("value", ["0.0", "0e-400", "-0.0", "1e-300", ".inf"])
def test_a_float_yaml_holds_is_read_as_written(tmp_path, value):
    """0 written as 0, a small number a float holds, and .inf (written so: the fields
    that take numbers refuse it with their own message) are no float overflow."""
    path = tmp_path / "numbers.yaml"
    path.write_text(f"n: {value}\n")
    assert parse_yaml(path.read_bytes(), path)["n"] == float(value.replace(".inf", "inf"))


def test_nesting_deeper_than_the_reader_goes_is_one_line(home):
    config_file(home).write_text("targets: " + "[" * 20_000 + "]" * 20_000 + "\n")
    line = one_line(invoke("targets", "list"))
    assert line == f"Error: {config_file(home)}:1: invalid YAML: exceeded maximum nesting depth"
