"""A purge's first batch holds no more than max_batch_size rows ("Never more rows (keys)
in one batch"): a cap given on the command line lowers the first batch to it; a first
batch given over a cap is refused in one line naming where each comes from. The purge
itself caps its first batch whoever made its params (a plan file), on the key walk and
the page walk alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell.cli import cli
from tests.helpers import use_target
from tests.services import engine

PURGE = ["log-cleanup", "--table", "app_logs", "--retention-days", "150", "--yes", "--json"]


def _purged(args: list[str]) -> dict[str, Any]:
    done = CliRunner().invoke(cli, ["run", *args])
    assert done.exit_code == 0, done.output
    run = json.loads(done.stdout)
    step = next(s for s in run["steps"] if s["tool"] == "delete_old_records")
    output: dict[str, Any] = step["output"]
    return output


def test_a_cap_on_the_command_line_lowers_the_first_batch(demo_db: Path) -> None:
    out = _purged([*PURGE, "--max-batch-size", "100", "--max-rows", "300"])
    assert out["rows_deleted"] == 300
    assert out["batches"] >= 3, out  # 300 rows in batches of at most 100


@pytest.mark.parametrize(
    ("config", "flags", "said"),
    [
        (
            {},
            ["--batch-size", "5000", "--max-batch-size", "10"],
            ("--batch-size", "--max-batch-size"),
        ),
        (
            {"max_batch_size": 1000},
            ["--batch-size", "5000"],
            ("--batch-size", "purge.max_batch_size"),
        ),
        (
            {"batch_size": 5000, "max_batch_size": 1000},
            [],
            ("log_cleanup_agent.purge.batch_size", "log_cleanup_agent.purge.max_batch_size"),
        ),
    ],
)
def test_a_first_batch_over_its_cap_is_refused_naming_both(
    demo_db: Path, home: Path, config: dict[str, int], flags: list[str], said: tuple[str, str]
) -> None:
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"].setdefault("purge", {}).update(config)
    path.write_text(yaml.safe_dump(data))
    for command in ("plan", "run"):
        args = [command, *PURGE[:5], *flags] + (["--yes"] if command == "run" else [])
        done = CliRunner().invoke(cli, args)
        assert done.exit_code == 2, done.output
        line = done.output.strip()
        assert line.count("\n") == 0 and line.startswith("Error: The first batch, "), line
        assert all(where in line for where in said), line


def test_postgresql_the_page_walk_caps_its_first_batch(home: Path, pg_url: str) -> None:
    with engine(pg_url).begin() as conn:
        conn.execute(
            text("CREATE TABLE app_logs (id bigserial PRIMARY KEY, at timestamptz NOT NULL)")
        )
        conn.execute(
            text(
                "INSERT INTO app_logs (at) SELECT now() - interval '400 days' "
                "FROM generate_series(1, 501)"
            )
        )
        # Young rows besides, so that the old ones are under max_share.
        conn.execute(text("INSERT INTO app_logs (at) SELECT now() FROM generate_series(1, 600)"))
        conn.execute(text("ANALYZE app_logs"))
    use_target(home, pg_url)
    path = home / "config" / "agents" / "log_cleanup.yaml"
    data = yaml.safe_load(path.read_text())
    data["log_cleanup_agent"].setdefault("purge", {})["walk"] = "pages"
    path.write_text(yaml.safe_dump(data))
    args = [*PURGE, "--date-column", "at", "--max-batch-size", "10"]
    out = _purged(args)
    assert out["rows_deleted"] == 501
    assert out["batches"] >= 51, out  # 501 rows in batches of at most 10
