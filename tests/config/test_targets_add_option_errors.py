"""`aishell targets add` refuses a bad option's value as that option, before it touches
the config file: the file has no key to blame yet, so the one line names what was typed
(--password-env, the location) and not `<config file>: targets.NAME.<key>`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli

CONFIG = Path("config") / "aishell.yaml"


def _refused(*args: str) -> str:
    done = CliRunner().invoke(cli, ["targets", "add", *args])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    return line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["pw_opt", "postgresql://u@127.0.0.1/db", "--password-env", "NOT SET VAR"],
            "Error: --password-env: not an environment variable's name (letters, digits "
            "and _); give the name of the variable that holds the password",
        ),
        (
            ["port_opt", "postgresql://u@127.0.0.1:99999/db", "--no-check"],
            "Error: The location is not one aishell can use: the URL's port 99999 is not "
            "between 1 and 65535",
        ),
        (
            ["dsn_opt", "host=127.0.0.1 port=0 dbname=x user=u", "--no-check"],
            "Error: The location is not one aishell can use: the URL's port 0 is not "
            "between 1 and 65535",
        ),
        (
            ["pgopt_opt", "postgresql://u@127.0.0.1/db?options=-csearch_path%3Dx"],
            "Error: The location is not one aishell can use: a PostgreSQL target's URL may "
            "not set options",
        ),
    ],
)
def test_a_bad_option_is_named_as_the_option_and_the_file_is_unchanged(
    home: Path, args: list[str], said: str
) -> None:
    before = (home / CONFIG).read_bytes()
    line = _refused(*args)
    assert line.startswith(said), line
    assert str(home) not in line and f"targets.{args[0]}." not in line
    assert (home / CONFIG).read_bytes() == before


def test_a_password_typed_as_password_env_is_never_repeated(home: Path) -> None:
    typed = "Zq8-secret-Probe-41!"
    line = _refused("pw_typed", "postgresql://u@127.0.0.1/db", "--password-env", typed)
    assert line.startswith("Error: --password-env: not an environment variable's name")
    assert typed not in line


def test_the_option_is_checked_before_the_config_file_is_looked_for(home: Path) -> None:
    """A home without a config file of its own: the typo is still what is reported,
    not the missing file (the option is wrong whatever file it would go into)."""
    (home / CONFIG).unlink()
    line = _refused("pw_first", "postgresql://u@127.0.0.1/db", "--password-env", "A=B")
    assert line.startswith("Error: --password-env: not an environment variable's name"), line
