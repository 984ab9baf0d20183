"""What a newcomer gets wrong on the first day is refused in one line that names what
to do next: the variable a password_env names and the file and key that name it, the
command that makes a home's config and the one that adds a target, the file a target's
URL is in, the command that lists the runs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.config.resources import bundled_config_dir


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def add_target(home: Path, name: str, target: dict[str, str]) -> Path:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = target
    path.write_text(yaml.safe_dump(data))
    return path


def one_line(done: Result) -> str:
    assert done.exit_code == 2, done.output
    assert done.output.startswith("Error: ") and done.output.count("\n") == 1, done.output
    return done.output


@pytest.mark.parametrize(
    "command",
    [
        ("run", "maintenance", "--target", "shop", "--dry-run"),
        ("targets", "check", "shop"),
    ],
)
def test_an_unset_password_env_names_the_variable_the_file_and_the_fix(
    home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    variable = f"AISHELL_TEST_UNSET_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.delenv(variable, raising=False)
    url = make_url(pg_url).set(password=None).render_as_string(hide_password=False)
    path = add_target(home, "shop", {"url": url, "password_env": variable})
    said = one_line(invoke(*command))
    assert f"(targets.shop.password_env in {path}) is not set" in said, said
    assert f"export {variable} where aishell runs" in said, said
    assert said.rstrip().endswith("or change targets.shop.password_env"), said


def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home with no config file of its own, and no system-wide one."""
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    monkeypatch.setenv("AISHELL_HOME", str(tmp_path / "fresh"))
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "no-system-config"))


@pytest.mark.parametrize(
    "command",
    [
        ("run", "maintenance", "--target", "prod"),
        ("plan", "maintenance", "--target", "prod"),
        ("targets", "list", "--targets", "prod"),
        ("targets", "check", "prod"),
    ],
)
def test_an_unknown_target_in_a_home_without_config_says_to_init_then_add_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    fresh_home(tmp_path, monkeypatch)
    said = one_line(invoke(*command))
    assert "Unknown target 'prod': this home has no config file yet" in said, said
    assert "`aishell init` makes one, then `aishell targets add prod LOCATION` adds it" in said
    assert str(bundled_config_dir()) not in said, said


def test_an_unknown_target_in_a_home_with_config_says_how_to_add_it(home: Path) -> None:
    path = home / "config" / "aishell.yaml"
    for command in (("run", "maintenance", "--target", "prod"), ("targets", "check", "prod")):
        said = one_line(invoke(*command))
        assert said == (
            f"Error: Unknown target 'prod'; targets in {path} are: demo; "
            "`aishell targets add prod LOCATION` adds it\n"
        )


def test_a_sqlite_target_s_missing_file_names_the_key_and_file_of_its_url(home: Path) -> None:
    path = add_target(home, "lab", {"url": "sqlite:///lab-missing.db"})
    said = one_line(invoke("run", "maintenance", "--target", "lab"))
    assert f"correct targets.lab.url in {path}, or `aishell demo --target lab`" in said, said
    assert not (home / "lab-missing.db").exists()


def test_an_unknown_run_id_says_where_the_runs_are_listed(home: Path) -> None:
    for run_id in ("ffffffff", "f" * 200):
        said = one_line(invoke("runs", "show", run_id))
        assert said.rstrip().endswith("; `aishell runs list` shows them"), said


@pytest.mark.parametrize("command", ["show", "resend"])
def test_an_unknown_fleet_job_says_where_the_fleet_jobs_are_listed(
    home: Path, command: str
) -> None:
    said = one_line(invoke("fleet", command, "no-such-job"))
    assert said == "Error: No fleet job 'no-such-job'; `aishell fleet jobs` lists them\n"


def test_an_unknown_decision_names_the_decisions(home: Path) -> None:
    from aishell.commands.decisions import DECISIONS, decide_steps
    from aishell.config.models import load_config
    from aishell.errors import UsageError

    with pytest.raises(UsageError) as refused:
        decide_steps(load_config(), "ffffffff", "maybe")
    assert str(refused.value) == (
        f"Unknown decision 'maybe'; decisions are: {', '.join(DECISIONS)}"
    )


def test_an_agent_with_no_config_file_names_those_that_have_one(tmp_path: Path) -> None:
    from aishell.config.home import agent_file
    from aishell.errors import ConfigError

    (tmp_path / "maintenance.yaml").write_text("maintenance_agent: {}\n")
    with pytest.raises(ConfigError) as refused:
        agent_file((tmp_path,), "backup")
    said = str(refused.value)
    assert "agents with a config file are: maintenance: give one of those" in said, said
    assert f"or write {tmp_path / 'backup.yaml'}" in said, said


@pytest.mark.parametrize(
    ("given", "written", "driver"),
    [
        ("postgresql+psycopg2://app@127.0.0.1:5432/shop", "postgresql+psycopg://", "psycopg2"),
        ("mysql+mysqldb://app@127.0.0.1:3306/shop", "mysql+pymysql://", "mysqldb"),
    ],
)
def test_a_url_naming_another_driver_is_added_with_aishell_s_saying_so(
    home: Path, given: str, written: str, driver: str
) -> None:
    """A URL copied from another tool works as aishell's driver takes it: said once, in a
    warning line (in --json, `warnings`), never silently."""
    done = invoke("targets", "add", "shop", given, "--no-check")
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: the URL names the driver '{driver}'; aishell connects with its own, "
        f"{written.split('+')[1][:-3]}, which takes the same URL: written as {written}"
    ], done.output
    data = yaml.safe_load((home / "config" / "aishell.yaml").read_text())
    assert data["targets"]["shop"]["url"].startswith(written)
    as_json = invoke("targets", "add", "shop2", given, "--no-check", "--json")
    assert json.loads(as_json.stdout)["warnings"] == [warnings[0][len("warning: ") :]]
    plain = invoke("targets", "add", "shop3", written + "app@127.0.0.1/shop", "--no-check")
    assert "warning" not in plain.output, plain.output


def test_a_hand_written_url_naming_a_driver_not_installed_names_the_one_to_write(
    home: Path,
) -> None:
    path = add_target(home, "shop", {"url": "postgresql+psycopg2://app@127.0.0.1:5432/shop"})
    said = one_line(invoke("targets", "check", "shop"))
    assert said.rstrip().endswith(
        "; aishell connects with postgresql+psycopg: write postgresql+psycopg:// in "
        f"targets.shop.url in {path}"
    ), said


def test_a_missing_plan_file_says_how_one_is_saved(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "missing.plan"
    said = one_line(invoke("apply", str(path)))
    assert said == (
        f"Error: Plan file {path} does not exist; `aishell plan AGENT ... --out FILE` saves one\n"
    )


def test_a_config_given_that_is_no_file_says_what_to_give(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "missing.yaml"
    said = one_line(invoke("--config", str(missing), "targets", "list"))
    fix = "give the path of one (--config or AISHELL_CONFIG), or leave it out to use the "
    assert said == f"Error: Config file {missing} does not exist; {fix}home's own\n"
    monkeypatch.setenv("AISHELL_CONFIG", str(tmp_path))
    said = one_line(invoke("targets", "list"))
    assert said == f"Error: Config file {tmp_path} is not a file; {fix}home's own\n"


def test_a_url_given_for_a_target_s_name_is_not_repeated(home: Path) -> None:
    """A DBA who types the URL where the name goes is told so, and its password is not
    printed back into the terminal's scrollback."""
    path = home / "config" / "aishell.yaml"
    url = "postgresql://app:s3cret-pw@127.0.0.1:5432/shop"
    for command in (("run", "maintenance", "--target", url), ("targets", "check", url)):
        said = one_line(invoke(*command))
        assert "s3cret-pw" not in said, said
        assert said == (
            "Error: Unknown target: a URL was given, not a target's name (not repeated: it "
            f"may hold a password); targets in {path} are: demo; `aishell targets add NAME "
            "URL` adds it as NAME\n"
        )
