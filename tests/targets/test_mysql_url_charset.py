"""A MySQL/MariaDB target's URL that sets a character set other than the one every
session of aishell's uses (utf8mb4) is refused in one line, at `targets add` and when
a run opens the target: the step's sessions overrode it, while a second session opened
from the URL (a validation's scratch copy) took it, and read a table named outside it
as `t_?` where the backup had `t_ж`. The URL's own utf8mb4 is that same set, and
passes. The database each test names is unique to it and dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from tests.helpers import run_sql, use_target

CONFIG = Path("config") / "aishell.yaml"
REFUSED = "the URL's query sets 'charset' to other than utf8mb4"
NAMED = "CREATE TABLE `t_\u0436` (id int PRIMARY KEY)"


def test_a_url_in_another_charset_is_refused_when_a_run_opens_it(home, mysql_url):
    run_sql(mysql_url, NAMED, "INSERT INTO `t_\u0436` VALUES (1)")
    use_target(home, f"{mysql_url}?charset=latin1")
    done = CliRunner().invoke(cli, ["run", "backup", "--type", "full", "--yes"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: Target 'db': url: {REFUSED}"), line
    assert not list((home / "backups").rglob("*.sql")), "nothing may be taken"


@pytest.mark.parametrize("charset", ["latin1", "utf8mb3"])
def test_targets_add_refuses_another_charset(home, mysql_url, charset):
    before = (home / CONFIG).read_bytes()
    done = CliRunner().invoke(cli, ["targets", "add", "shop", f"{mysql_url}?charset={charset}"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert REFUSED in line, line
    assert (home / CONFIG).read_bytes() == before


def test_the_sessions_own_charset_in_the_url_validates(home, mysql_url):
    run_sql(mysql_url, NAMED, "INSERT INTO `t_\u0436` VALUES (1)")
    config = use_target(home, f"{mysql_url}?charset=utf8mb4")
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    assert done.steps[-1].output["tables_compared"] == 1
