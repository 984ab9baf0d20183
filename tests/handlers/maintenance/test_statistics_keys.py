"""update_table_statistics gives the same keys on every engine: exactly the properties
its definition's `returns:` declares, so a reference to one never depends on the engine."""

from pathlib import Path

import pytest
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config
from aishell.config.resources import bundled_catalog_dir
from aishell.policy.approvers import PreApproved
from aishell.registry import load_registry
from tests.helpers import one_step_plan, use_target
from tests.services import engine


def declared() -> set[str]:
    tool = load_registry([bundled_catalog_dir()]).get("update_table_statistics")
    return set(tool.returns["properties"])


def analyze(config: Config, dialect: str, params: dict) -> dict:
    target = "demo" if dialect == "sqlite" else "db"
    plan = one_step_plan("maintenance", target, dialect, "update_table_statistics", params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    output = result.steps[0].output
    assert isinstance(output, dict)
    return output


def test_sqlite_gives_the_declared_keys(config: Config, demo_db: Path) -> None:
    for params in ({"table": "orders"}, {"tables": ["orders", "users"]}):
        output = analyze(config, "sqlite", params)
        assert set(output) == declared(), params
    assert output["table"] is None and output["skipped_tables"] == []
    assert output["tables_gone"] == []


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_the_servers_give_the_same_keys(dialect: str, home: Path, request) -> None:
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    eng = engine(url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE stats_keys_a (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE stats_keys_b (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO stats_keys_a VALUES (1), (2)"))
    eng.dispose()
    config = use_target(home, url)
    one = analyze(config, dialect, {"table": "stats_keys_a"})
    many = analyze(config, dialect, {"tables": ["stats_keys_a", "stats_keys_b"]})
    assert set(one) == set(many) == declared()
    assert one["table"] == "stats_keys_a" and many["tables_analyzed"] == 2
