"""A server that drops aishell's connection mid-step (a terminated backend, a restart):
the step is retried on a new connection when it may be, else it fails resumably with
a line naming the lost connection, and resume finishes the run."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.approval import PreApproved
from aishell.config import Config, load_config
from aishell.plan import Plan, Step
from tests.helpers import use_target
from tests.services import MYSQL_ADMIN, PG_ADMIN, engine

# Reads that keep the server busy for seconds without any volatile function.
SLOW_READ = {
    "postgresql": (
        "SELECT count(*) AS n FROM generate_series(1, 40000) a, generate_series(1, 2000) b "
        "WHERE a + b > CAST(:floor AS integer)"
    ),
    "mysql": (
        "SELECT count(*) AS n FROM seq_1_to_40000 a, seq_1_to_3000 b WHERE a.seq + b.seq > :floor"
    ),
}
MARKER = {"postgresql": "generate_series", "mysql": "seq_1_to_40000"}


def _site_tool(home: Path, *, idempotent: bool) -> Config:
    folder = home / "site_tools"
    folder.mkdir(exist_ok=True)
    tool: dict[str, Any] = {
        "name": "long_count",
        "description": "Counts pairs for a while; a test tool for lost connections.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 120,
        "idempotent": idempotent,
        "params": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"floor": {"type": "integer", "description": "Lower bound."}},
            "required": ["floor"],
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"floor": 0}}],
        "implementations": {dialect: {"sql": sql} for dialect, sql in SLOW_READ.items()},
    }
    (folder / "long_count.yaml").write_text(yaml.safe_dump(tool))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = ["site_tools"]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def _terminate_when_busy(url: str, stop: threading.Event) -> list[int]:
    """End aishell's session on `url`'s database from the server side, the first time
    it runs the slow read (pg_terminate_backend; MariaDB's KILL CONNECTION)."""
    database = make_url(url).database
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    killed: list[int] = []
    admin = engine(PG_ADMIN if dialect == "postgresql" else MYSQL_ADMIN)
    find = (
        "SELECT pid FROM pg_stat_activity WHERE datname = :db AND application_name = 'aishell' "
        "AND state = 'active' AND query LIKE :marker AND pid <> pg_backend_pid()"
        if dialect == "postgresql"
        else "SELECT id FROM information_schema.processlist WHERE db = :db "
        "AND info LIKE :marker AND id <> CONNECTION_ID()"
    )
    try:
        with admin.connect() as conn:
            while not stop.is_set() and not killed:
                pid = conn.execute(
                    text(find), {"db": database, "marker": f"%{MARKER[dialect]}%"}
                ).scalar()
                if pid is not None:
                    if dialect == "postgresql":
                        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    else:
                        conn.execute(text(f"KILL CONNECTION {int(pid)}"))
                    killed.append(pid)
                time.sleep(0.05)
    finally:
        admin.dispose()
    return killed


def _run_with_a_kill(config: Config, url: str) -> tuple[commands.RunResult, list[int]]:
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.extend(_terminate_when_busy(url, stop)))
    killer.start()
    dialect = "postgresql" if url.startswith("postgresql") else "mysql"
    plan = Plan(
        "maintenance", "db", dialect, {"type": "custom"}, (Step("s0", "long_count", {"floor": 1}),)
    )
    try:
        result = commands.apply_plan(config, plan, approver=PreApproved())
    finally:
        stop.set()
        killer.join(10)
    return result, killed


def test_a_terminated_backend_is_retried_on_a_new_connection(home, server_url):
    use_target(home, server_url)
    config = _site_tool(home, idempotent=True)
    result, killed = _run_with_a_kill(config, server_url)
    assert killed, "the slow read was never seen running"
    assert result.status == "completed", result.error
    assert result.steps[0].attempts == 2
    events = commands.show_run(config, result.run_id)["events"]
    retry = [e for e in events if e["kind"] == "step_retry"]
    assert len(retry) == 1


def test_a_step_that_may_not_be_retried_fails_resumably_naming_the_lost_connection(
    home, server_url
):
    use_target(home, server_url)
    config = _site_tool(home, idempotent=False)
    result, killed = _run_with_a_kill(config, server_url)
    assert killed
    assert result.status == "failed"
    error = result.steps[0].error or ""
    assert "lost the connection to target 'db'" in error
    assert f"aishell resume {result.run_id}" in error
    assert "internal error" not in (result.error or "")
    # Its effect is unknown and it may not run twice: a person decides, then it goes on.
    held = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert held.status == "waiting_approval"
    assert "not idempotent" in (held.steps[0].error or "")
    commands.decide_steps(config, result.run_id, "approved", step=0)
    resumed = commands.resume_run(config, result.run_id, approver=PreApproved())
    assert resumed.status == "completed", resumed.error


@pytest.fixture(autouse=True)
def _no_stray_sessions(server_url):
    yield
    # Whatever the test did, no aishell session stays on its database.
    database = make_url(server_url).database
    if server_url.startswith("postgresql"):
        admin = engine(PG_ADMIN)
        count = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
            "AND application_name = 'aishell'"
        )
    else:
        admin = engine(MYSQL_ADMIN)
        count = "SELECT count(*) FROM information_schema.processlist WHERE db = :db"
    with admin.connect() as conn:
        left = conn.execute(text(count), {"db": database}).scalar()
    admin.dispose()
    assert left == 0
