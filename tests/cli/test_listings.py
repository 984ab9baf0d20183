"""The listing commands (`targets list`, `runs list`, `tools list`) answer the same from
the listings' cache as from a full load, byte for byte, text and --json; an edited file
is read again, a broken one refused with the error a full load gives; the cache file is
private and holds no password; a warm listing imports none of the heavy libraries."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell.cli import cli
from aishell.commands.tools import load_catalog
from aishell.config.dburl import resolve_url
from aishell.config.models import Config, load_config
from aishell.config.selection import select_targets
from aishell.errors import CatalogError, ConfigError
from aishell.state.runlist import read_runs
from aishell.state.store import StateStore
from tests.conftest import REPO, EditConfig

SECRET = "Sup3rSecretPw"
TARGETS = {
    "demo": {"tags": ["dev"]},
    "shop": {
        "url": f"postgresql+psycopg://app:{SECRET}@db1:5433/shop?sslmode=require",
        "environment": "production",
        "description": "The shop's orders",
        "tags": ["prod", "eu"],
    },
    "orders": {"url": "mysql+pymysql://root@127.0.0.1:3306/orders", "tags": ["prod"]},
    "local": {"url": "sqlite:///data/local.db", "description": "A file under the home"},
}
HEAVY = ("sqlalchemy", "pydantic", "sqlglot", "psycopg", "pymysql", "yaml", "alembic")


def aishell(*args: str, code: int = 0) -> tuple[str, str]:
    done = CliRunner().invoke(cli, list(args))
    assert done.exit_code == code, done.output
    return done.stdout, done.stderr


def cache_of(home: Path, name: str) -> Path:
    return home / "cache" / f"{name}.json"


def twice(*args: str) -> str:
    """The command's output from a full load (no cache entry) and from the cache, which
    must be the same."""
    first = aishell(*args)
    second = aishell(*args)
    assert first == second
    return first[0]


@pytest.fixture
def fleet(edit_config: EditConfig) -> Config:
    return edit_config({"targets": TARGETS})


def test_targets_are_listed_alike_from_the_cache_and_as_sqlalchemy_shows_them(
    home: Path, fleet: Config
) -> None:
    assert not cache_of(home, "config").exists()
    listed = json.loads(twice("targets", "list", "--json"))["targets"]
    assert cache_of(home, "config").exists()
    twice("targets", "list")
    twice("targets", "list", "--targets", "tag:prod")
    shown = {}
    for name, target in fleet.main.targets.items():
        url = make_url(resolve_url(target.url, fleet.home))
        shown[name] = (url.get_backend_name(), url.render_as_string(hide_password=True))
    assert {row["name"]: (row["dialect"], row["location"]) for row in listed} == shown
    assert shown["shop"][1] == "postgresql+psycopg://app:***@db1:5433/shop?sslmode=require"
    assert [row["name"] for row in listed] == sorted(TARGETS)
    chosen = json.loads(aishell("targets", "list", "--targets", "tag:prod", "--json")[0])
    assert [r["name"] for r in chosen["targets"]] == sorted(select_targets(fleet, "tag:prod"))


def test_the_cache_is_private_and_holds_no_password(home: Path, edit_config: EditConfig) -> None:
    edit_config({"targets": TARGETS, "state": {"url": f"postgresql://st:{SECRET}@h/state"}})
    aishell("targets", "list")
    kept = cache_of(home, "config")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert SECRET.encode() not in kept.read_bytes()
    assert "***" in kept.read_text()


def test_an_edited_config_is_read_again_and_a_broken_one_refused_as_before(
    home: Path, fleet: Config
) -> None:
    aishell("targets", "list")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["shop"]["description"] = "Edited since"
    path.write_text(yaml.safe_dump(data))
    assert "Edited since" in aishell("targets", "list", "--json")[0]
    data["targets"]["shop"]["colour"] = "blue"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as refused:
        load_config(home=home)
    for command in (("targets", "list"), ("runs", "list"), ("tools", "list")):
        assert aishell(*command, code=2)[1] == f"Error: {refused.value}\n"


def test_a_cache_file_others_may_write_is_not_used(home: Path, fleet: Config) -> None:
    aishell("targets", "list")
    kept = cache_of(home, "config")
    kept.write_text(kept.read_text().replace("The shop's orders", "Planted"))
    kept.chmod(0o644)
    assert "Planted" not in aishell("targets", "list")[0]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # written again, its own


def _runs(config: Config) -> Path:
    """Four runs: finished, running in this process, running in a process that is gone,
    and another target's; the store's file."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with StateStore(config.state_url) as store:
        for run_id, target in (("r1", "demo"), ("r2", "demo"), ("r3", "demo"), ("r4", "shop")):
            store.create_run(
                run_id=run_id,
                agent="maintenance",
                target=target,
                dialect="sqlite",
                job={"type": "quick"},
                plan={},
                plan_hash="0" * 64,
                tool_fingerprints={},
                dry_run=run_id == "r4",
                safety_level="strict",
                step_rows=[],
            )
        store.finish_run("r1", "completed")
        store.finish_run("r4", "failed", "it broke")
    path = Path(make_url(config.state_url).database or "")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE run_id = 'r3'", (dead.pid,))
    return path


def test_runs_are_listed_alike_read_with_sqlite3_and_through_the_store(
    home: Path, fleet: Config
) -> None:
    path = _runs(fleet)
    with StateStore(fleet.state_url) as store:
        for status in (None, "running", "interrupted", "completed", "failed"):
            for limit in (1, 50):
                for targets in (None, ["demo"], ["shop", "orders"]):
                    full = store.list_runs(status=status, limit=limit, targets=targets)
                    assert read_runs(path, status, limit, targets) == full
        statuses = {r["run_id"]: r["status"] for r in store.list_runs()}
    assert statuses == {"r1": "completed", "r2": "running", "r3": "interrupted", "r4": "failed"}
    listed = json.loads(twice("runs", "list", "--json"))["runs"]
    assert [r["run_id"] for r in listed] == [r["run_id"] for r in read_runs(path, None, 50, None)]
    twice("runs", "list", "--targets", "tag:dev", "--status", "interrupted")


def test_a_store_to_upgrade_or_from_a_newer_aishell_goes_the_full_way(
    home: Path, fleet: Config
) -> None:
    path = _runs(fleet)
    assert read_runs(path, None, 50, None) is not None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    assert read_runs(path, None, 50, None) is None
    line = aishell("runs", "list", code=2)[1]
    assert "schema revision 0099_future, which this aishell does not know" in line
    path.with_name(path.name + ".has-history").unlink()
    assert read_runs(path, None, 50, None) is None  # no marker: the full open writes it
    assert read_runs(path.with_name("nowhere.db"), None, 50, None) is None


def _site_tool(home: Path, **changes: Any) -> Path:
    data = yaml.safe_load((REPO / "tools" / "count_table_rows.yaml").read_text())
    data.pop("planned", None)
    data.update(name="count_site_rows", **changes)
    folder = home / "site_tools"
    folder.mkdir(exist_ok=True)
    path = folder / "count_site_rows.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_tools_are_listed_alike_from_the_cache_and_a_full_load(
    home: Path, edit_config: EditConfig
) -> None:
    _site_tool(home)
    config = edit_config({"catalog_paths": ["site_tools"]})
    listed = json.loads(twice("tools", "list", "--json"))["tools"]
    assert listed == [t.metadata() for t in load_catalog(config).find()]
    assert "count_site_rows" in {t["name"] for t in listed}
    twice("tools", "list")
    twice("tools", "list", "--category", "analysis", "--risk", "safe")


def test_an_edited_tool_file_is_read_again_and_a_broken_one_refused_as_before(
    home: Path, edit_config: EditConfig
) -> None:
    path = _site_tool(home)
    config = edit_config({"catalog_paths": ["site_tools"]})
    aishell("tools", "list")
    _site_tool(home, description="Edited since the listing.")
    assert "Edited since the listing." in aishell("tools", "list", "--json")[0]
    path.with_name("another.yaml").write_text(path.read_text().replace("count_site", "other"))
    assert '"other_rows"' in aishell("tools", "list", "--json")[0]
    _site_tool(home, risk_level="unheard_of")
    with pytest.raises(CatalogError) as refused:
        load_catalog(config)
    assert aishell("tools", "list", code=2)[1] == f"Error: {refused.value}\n"


PROBE = """
import json, sys
from aishell.cli import cli
try:
    cli(sys.argv[2:], prog_name="aishell")
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))))
"""


@pytest.mark.parametrize(
    "command", [("targets", "list"), ("runs", "list"), ("tools", "list", "--json")]
)
def test_a_warm_listing_imports_no_heavy_library(
    home: Path, fleet: Config, command: tuple[str, ...]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(2):  # the first loads in full (and makes the store), the second is warm
        done = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(HEAVY), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def _plugin(where: Path, sql: str) -> Path:
    """An installed package (its dist-info on sys.path) whose `aishell.tools` entry point
    names a folder of one tool file; that file."""
    info = where / "fakeplug-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aishell.tools]\nfake = fakeplug_tools:folder\n")
    (where / "fakeplug_tools.py").write_text(
        "from pathlib import Path\n\n\ndef folder():\n    return Path(__file__).parent / 'fake'\n"
    )
    data = {
        "name": "count_plugin_rows",
        "description": "Count a table's rows, from a plugin.",
        "category": "analysis",
        "risk_level": "safe",
        "required_capabilities": ["database_read"],
        "max_execution_time": 60,
        "idempotent": True,
        "params": {
            "type": "object",
            "required": ["table"],
            "properties": {"table": {"type": "string", "x-identifier": "table"}},
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "users"}}],
        "implementations": {"sqlite": {"sql": sql, "result": "none"}},
        "locks": {"sqlite": []},
    }
    (where / "fake").mkdir(exist_ok=True)
    path = where / "fake" / "count_plugin_rows.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_plugin_installed_or_changed_is_listed_and_its_refusal_told_again(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aishell.config import plugins

    aishell("tools", "list")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _plugin(tmp_path / "site", "SELECT count(*) AS row_count FROM {table}")
    listed = twice("tools", "list", "--json")
    assert '"count_plugin_rows"' in listed
    _plugin(tmp_path / "site", "DELETE FROM {table}")  # tagged safe: refused alone
    told = []
    for _ in range(2):  # a full load, then the cache: the same warning, once a process
        monkeypatch.setattr(plugins, "_TOLD", set())
        told.append(aishell("tools", "list", "--json"))
    assert told[0] == told[1]
    assert '"count_plugin_rows"' not in told[0][0]
    assert (
        "a tool file of plugin 'fake' (aishell.tools) of package fakeplug was refused" in told[0][1]
    )


def test_a_listing_makes_no_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "no-system-config"))
    absent = tmp_path / "absent"
    for _ in range(2):
        assert "demo (default)" in aishell("--home", str(absent), "targets", "list")[0]
    assert not absent.exists()


def test_a_sqlite_store_with_a_busy_timeout_is_read_light_one_with_a_password_is_not(
    home: Path, edit_config: EditConfig
) -> None:
    from aishell.config.view import load_view

    edit_config({"state": {"busy_timeout_ms": 2000}})
    assert load_view().state_file() == home / "state.db"
    edit_config({"state": {"url": "sqlite:///other.db", "password_env": "NOT_FOR_SQLITE"}})
    assert load_view().state_file() is None
