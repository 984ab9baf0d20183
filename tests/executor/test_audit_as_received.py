"""The statement audit shows each statement as the server received it: PostgreSQL's
`$1` placeholders (its values sent apart), MariaDB's values inline as PyMySQL quotes
them, and a literal `%` once, never the drivers' doubled `%%`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, use_target

LIKE_TOOL: dict[str, Any] = {
    "name": "count_named_like",
    "description": "Count the tables whose name starts so; a test tool for the audit.",
    "category": "analysis",
    "risk_level": "safe",
    "required_capabilities": ["database_read"],
    "max_execution_time": 60,
    "idempotent": True,
    "params": {
        "type": "object",
        "additionalProperties": False,
        "required": ["prefix"],
        "properties": {"prefix": {"type": "string", "description": "Name prefix."}},
    },
    "returns": {"type": "object"},
    "examples": [{"params": {"prefix": "a"}}],
    "locks": {"postgresql": [], "mysql": []},
    "implementations": {
        "postgresql": {
            "sql": "SELECT count(*) AS n FROM pg_catalog.pg_class "
            "WHERE relname LIKE 'pg%' AND relname >= :prefix AND relname >= :prefix",
            "result": "one",
        },
        "mysql": {
            "sql": "SELECT count(*) AS n FROM information_schema.tables "
            "WHERE table_name LIKE 'a%' AND table_name >= :prefix",
            "result": "one",
        },
    },
}


def audited(home: Path, url: str) -> tuple[str, str]:
    """The tool's statement as `runs show --sql` prints it and as run_statements has it."""
    use_target(home, url)
    (home / "site_tools").mkdir()
    (home / "site_tools" / "like.yaml").write_text(yaml.safe_dump(LIKE_TOOL))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    plan = one_step_plan("maintenance", "db", dialect, "count_named_like", {"prefix": "it's"})
    run = commands.apply_plan(config, plan, approver=PreApproved())
    assert run.status == "completed", run.error
    (sent,) = [s["sql"] for s in commands.run_statements(config, run.run_id) if "LIKE" in s["sql"]]
    shown = CliRunner().invoke(cli, ["runs", "show", run.run_id, "--sql"])
    assert shown.exit_code == 0, shown.output
    (line,) = [line for line in shown.output.splitlines() if "LIKE" in line]
    return sent, line


def test_postgresql_shows_numbered_placeholders_and_one_percent(home: Path, pg_url: str) -> None:
    sent, line = audited(home, pg_url)
    assert "LIKE 'pg%' AND relname >= $1 AND relname >= $1" in sent
    assert "%%" not in sent and "%(" not in sent
    assert "LIKE 'pg%' AND relname >= $1" in line


def test_mariadb_shows_the_values_inline_as_sent(home: Path, mysql_url: str) -> None:
    sent, line = audited(home, mysql_url)
    assert "LIKE 'a%' AND table_name >= 'it\\'s'" in sent
    assert "%%" not in sent
    assert "LIKE 'a%' AND table_name >= 'it\\'s'" in line
