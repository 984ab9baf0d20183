"""`aishell schedule add` of a package's agent refuses, in one line and before anything
is stored, a job no run could ever plan: a table named as the target's engine cannot
name one (a NUL, past PostgreSQL's 63 bytes or MySQL's 64 characters), an option the
agent does not declare, a value not of its option's kind. A table that does not exist
yet, on a target that cannot be reached now, is accepted as a maintenance schedule's is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from tests.agents.test_agent_recipe import _tidy
from tests.helpers import use_target


def _add(name: str, *words: str) -> Result:
    return CliRunner().invoke(cli, ["schedule", "add", name, "--cron", "@daily", "--", *words])


def _refused(result: Result) -> str:
    """The one `Error:` line of a refused schedule."""
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
    return line


def _stored(home: Path) -> list[str]:
    return [s["name"] for s in commands.list_schedules(load_config(home=home))]


def test_a_table_name_no_server_table_can_have_is_refused_when_added(
    home: Path, server_url: str, site: Callable[..., str]
) -> None:
    use_target(home, server_url)
    agent, _ = _tidy(site)
    postgresql = server_url.startswith("postgresql")
    longest, limit = ("é" * 31 + "x", "63") if postgresql else ("é" * 64, "64")
    engine = create_engine(server_url)
    with engine.begin() as conn:  # the server's own limit: one more is not kept as given
        conn.execute(text(f'CREATE TABLE "{longest}" (id int)' if postgresql else "SELECT 1"))
        if not postgresql:
            conn.execute(text(f"CREATE TABLE `{longest}` (id int)"))
    assert longest in inspect(engine).get_table_names()
    engine.dispose()

    over = _refused(_add("over", agent, "--table", longest + "x"))
    assert over.startswith(f"Error: --table: '{longest}x' is ") and f"at most {limit}" in over
    assert over.endswith("so no table has it")
    if not postgresql:
        assert "ends with a space" in _refused(_add("space", agent, "--table", "kept ")), over
    accepted = _add("longest", agent, "--table", longest)
    assert accepted.exit_code == 0, accepted.output
    assert _stored(home) == ["longest"]


def test_a_nul_an_undeclared_option_or_a_wrong_kind_is_refused_in_one_line(
    demo_db: Path, home: Path, site: Callable[..., str]
) -> None:
    agent, _ = _tidy(site)
    nul = _refused(_add("nul", agent, "--table", "app\x00logs"))
    assert nul == "Error: --table: 'app\\x00logs' holds a NUL character, so no table has it"
    assert _refused(_add("undeclared", agent, "--table", "app_logs", "--rows", "5")) == (
        "Error: Job words: No such option '--rows'."
    )
    assert _refused(_add("kind", agent, "--table", "app_logs", "--statistics=maybe")) == (
        "Error: Job words: Option '--statistics' does not take a value."
    )
    assert _stored(home) == []


def test_a_table_not_there_yet_on_a_target_out_of_reach_is_accepted(
    home: Path, site: Callable[..., str]
) -> None:
    use_target(home, f"sqlite:///{home / 'demo.db'}", away="postgresql://aishell@127.0.0.1:1/gone")
    agent, _ = _tidy(site)
    added = _add("later", agent, "--table", "made_next_week", "--target", "away")
    assert added.exit_code == 0, added.output
    too_long = _refused(_add("never", agent, "--table", "t" * 64, "--target", "away"))
    assert too_long.endswith(
        "is 64 bytes long, and PostgreSQL names are at most 63, so no table has it"
    )
    assert _stored(home) == ["later"]
