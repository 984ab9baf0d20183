"""A purge's max_share is shown as exactly as it is set: one under 100% never reads as
100% beside the 100% a purge of every row would delete, nor one above 0% as 0%."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from aishell.cli import cli
from tests.services import engine


@pytest.mark.parametrize(
    ("max_share", "shown"), [(0.99999, "max_share (99.999%)"), (0.00001, "max_share (0.001%)")]
)
def test_the_share_limit_a_purge_is_over_is_never_rounded_to_all_or_none(
    max_share: float, shown: str, pg_url: str, home: Path, edit_config: Any
) -> None:
    with engine(pg_url).begin() as conn:
        conn.execute(text("CREATE TABLE app_logs (id INTEGER PRIMARY KEY, created_at TIMESTAMPTZ)"))
        conn.execute(
            text(
                "INSERT INTO app_logs SELECT i, now() - interval '90 days' "
                "FROM generate_series(1, 200) AS i"
            )
        )
        conn.execute(text("ANALYZE app_logs"))
    edit_config(
        {"targets": {"db": {"url": pg_url, "environment": "test"}}, "default_target": "db"},
        log_cleanup={"safety_constraints": [{"type": "purge_limits", "max_share": max_share}]},
    )
    result = CliRunner().invoke(
        cli, ["plan", "log-cleanup", "--table", "app_logs", "--retention-days", "30", "--json"]
    )
    assert result.exit_code == 0, result.output
    reasons = json.loads(result.output)["steps"][1]["reasons"]
    assert reasons == [f"would delete about 200 of about 200 rows (100%), over {shown}"]
