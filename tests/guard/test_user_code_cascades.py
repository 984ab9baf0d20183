"""Code a foreign key's action runs on another table: ON DELETE SET DEFAULT sets the
referencing rows' columns to their defaults, so a purge of the referenced table
evaluates the child's default once per row it reaches. The estimate names it and the
step waits for a yes; SET NULL evaluates no default and names none."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell import commands
from tests.guard.test_guard import execute, scalar
from tests.guard.test_user_code import LOGS, PURGE, postgresql

SAID = (
    "the default of public.refs.log_id calls public.zap(), a user-defined function that "
    "may write (a foreign key's SET DEFAULT runs it)"
)


def _refs(action: str, default: str) -> tuple[str, ...]:
    return (
        f"CREATE TABLE refs (id integer PRIMARY KEY, log_id integer DEFAULT {default} "
        f"REFERENCES logs ON DELETE {action})",
        "INSERT INTO refs SELECT g, g FROM generate_series(1, 60) g",
    )


@pytest.mark.parametrize("on", ["DELETE", "UPDATE"])
def test_a_set_default_that_calls_a_function_is_named_and_waits(home: Path, on: str) -> None:
    with postgresql(home, *LOGS["postgresql"]) as (config, url):
        execute(url, *_refs("SET DEFAULT", "zap(1)"))
        if on == "UPDATE":  # the key's other action: the purge's DELETE reaches it not
            execute(
                url,
                "ALTER TABLE refs DROP CONSTRAINT refs_log_id_fkey",
                "ALTER TABLE refs ADD FOREIGN KEY (log_id) REFERENCES logs "
                "ON UPDATE SET DEFAULT ON DELETE SET DEFAULT",
            )
        before = scalar(url, "SELECT count(*) FROM victim")

        preview = commands.plan_job(config, "log_cleanup", PURGE)
        run = commands.run_job(config, "log_cleanup", PURGE)

        purge = next(s for s in preview.steps if s.tool == "delete_old_records")
        assert purge.risk_level == "high" and purge.requires_approval
        assert SAID in (purge.estimate or {}).get("user_code", []), purge.estimate
        step = next(s for s in run.steps if s.tool == "delete_old_records")
        assert run.status == "waiting_approval" and step.risk_level == "high"
        assert scalar(url, "SELECT count(*) FROM victim") == before
        assert scalar(url, "SELECT count(*) FROM logs") == 60


def test_a_set_default_of_a_constant_or_a_set_null_names_no_code(home: Path) -> None:
    for action, default in (("SET DEFAULT", "NULL"), ("SET NULL", "zap(1)")):
        with postgresql(home, *LOGS["postgresql"]) as (config, url):
            execute(url, *_refs(action, default))

            preview = commands.plan_job(config, "log_cleanup", PURGE)

            purge = next(s for s in preview.steps if s.tool == "delete_old_records")
            assert not (purge.estimate or {}).get("user_code"), (action, purge.estimate)
