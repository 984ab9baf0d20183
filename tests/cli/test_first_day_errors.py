"""What a newcomer gets wrong on the first day is refused in one line that names what
to do next: the variable a password_env names and the file and key that name it, the
command that makes a home's config and the one that adds a target, the file a target's
URL is in, the command that lists the runs."""

from __future__ import annotations

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
