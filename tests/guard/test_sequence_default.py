"""A MariaDB column whose default advances or sets a sequence (DEFAULT (NEXTVAL(s)),
DEFAULT (SETVAL(s, 100))) is code every INSERT that leaves the column out runs: a write
of the sequence the step's statements do not show, which no rollback undoes. The
step's estimate names it and the policy counts it, as PostgreSQL's defaults calling the
catalog's writing functions are counted: the INSERT waits for a person's yes, and the
sequence is left as it was.

Before, only a UDF in a default counted on MariaDB: a site tool's INSERT kept its tool's
risk, and once approved for that moved the sequence unsaid."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from tests.guard.test_guard import (
    execute,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)
from tests.helpers import one_step_plan

DEFAULTS = {
    "nextval": ("NEXTVAL(seq_of_n)", "advances sequence {db}.seq_of_n (NEXTVAL)"),
    "next value for": ("NEXT VALUE FOR seq_of_n", "advances sequence {db}.seq_of_n (NEXTVAL)"),
    "setval": ("SETVAL(seq_of_n, 100)", "sets sequence {db}.seq_of_n (SETVAL)"),
}


@pytest.mark.parametrize("how", list(DEFAULTS))
def test_a_default_that_writes_a_sequence_makes_the_insert_wait(
    home: Path, tmp_path: Path, how: str
) -> None:
    default, writes = DEFAULTS[how]
    with scratch_database("mysql", tmp_path) as url:
        execute(
            url,
            "CREATE SEQUENCE seq_of_n START WITH 1 NOCACHE",
            f"CREATE TABLE t (id integer PRIMARY KEY, n bigint DEFAULT ({default}))",
        )
        before = scalar(url, "SELECT next_not_cached_value FROM seq_of_n")
        folder = home / "site"
        sql = "INSERT INTO {table} (id) VALUES (100)"
        write_tool(folder, tool_yaml("add_t", "medium", {"mysql": {"sql": sql}}))
        config = site_config(home, url, folder)
        plan = one_step_plan("maintenance", "db", "mysql", "add_t", {"table": "t"})

        run = commands.apply_plan(config, plan)

        step = run.steps[0]
        database = url.rsplit("/", 1)[-1]
        said = step.estimate.get("user_code") or []
        assert len(said) == 1, said
        assert said[0].startswith(f"the default of {database}.t.n "), said
        assert writes.format(db=f"`{database}`") in said[0].replace("`seq_of_n`", "seq_of_n")
        assert run.status == "waiting_approval" and step.risk_level == "high"
        assert scalar(url, "SELECT count(*) FROM t") == 0
        assert scalar(url, "SELECT next_not_cached_value FROM seq_of_n") == before
