"""A server's URL written by hand names the engine, not the driver (`mysql://`,
`postgres://`, as every client's docs write it): aishell opens it with its own driver,
as `targets add` would have written it, for targets and for the state store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.dburl import resolve_url
from tests.helpers import use_target
from tests.services import scratch_mysql, scratch_postgresql
from tests.state.test_state_faults import edit_main


@pytest.mark.parametrize(
    ("written", "opened"),
    [
        ("postgresql://app@db1/shop", "postgresql+psycopg://app@db1/shop"),
        (
            "postgres://app@db1:5433/shop?sslmode=require",
            "postgresql+psycopg://app@db1:5433/shop?sslmode=require",
        ),
        ("mysql://app@db2/orders", "mysql+pymysql://app@db2/orders"),
        ("mariadb://app@db2/orders", "mysql+pymysql://app@db2/orders"),
        ("mysql+pymysql://app@db2/orders", "mysql+pymysql://app@db2/orders"),
        ("postgresql+psycopg://app@db1/shop", "postgresql+psycopg://app@db1/shop"),
        ("mysql+mysqldb://app@db2/orders", "mysql+mysqldb://app@db2/orders"),
    ],
)
def test_a_url_naming_no_driver_gets_aishell_s(written: str, opened: str, tmp_path: Path) -> None:
    assert resolve_url(written, tmp_path) == opened


def scratch_dialect(engine: str) -> str:
    return "postgresql" if engine.startswith("postgres") else "mysql"


@pytest.mark.parametrize(
    ("scratch", "engines"),
    [(scratch_postgresql, ("postgresql", "postgres")), (scratch_mysql, ("mysql", "mariadb"))],
)
def test_targets_and_the_state_store_open_a_url_without_a_driver(
    home: Path, scratch, engines: tuple[str, ...]
) -> None:
    with scratch() as url:
        rest = url.split("://", 1)[1]
        for engine in engines:
            use_target(home, f"{engine}://{rest}")
            checked = CliRunner().invoke(cli, ["targets", "check", "db", "--json"])
            assert checked.exit_code == 0, checked.output
            assert json.loads(checked.stdout)["dialect"] == scratch_dialect(engine)
        edit_main(home, state={"url": f"{engines[0]}://{rest}"})
        listed = CliRunner().invoke(cli, ["runs", "list", "--json"])
        assert listed.exit_code == 0, listed.output
