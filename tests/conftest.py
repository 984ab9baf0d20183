"""Fixtures: every test gets its own aishell home, config and demo database under tmp_path."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aishell.config.cache import CACHE_FOLDER
from aishell.config.models import Config, load_config
from aishell.targets.demo import create_demo
from aishell.tool.verdicts import VERDICTS_ENTRY
from tests.helpers import read_yaml, use_target, write_yaml
from tests.services import share_preferred_tls, start_servers

REPO = Path(__file__).resolve().parent.parent
# The test modules as pytest rewrites them (for its asserts) are kept in __pycache__
# even where PYTHONDONTWRITEBYTECODE is set: else every worker rewrites every one of them
# again, about 8 s of CPU each. The processes the tests start keep the variable.
sys.dont_write_bytecode = False
SMALL_LOG_ROWS = 6_000
share_preferred_tls()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small demo database per session; tests get copies."""
    path = tmp_path_factory.mktemp("template") / "demo.db"
    create_demo(path, log_rows=SMALL_LOG_ROWS, users=1_500, orders=8_000)
    return path


# What the client libraries and programs read from the environment besides the URL:
# a developer's or CI user's own settings must never reach a test's connections.
CLIENT_ENVIRONMENT = (
    "MYSQL_PWD",
    "MYSQL_HOST",
    "MYSQL_TCP_PORT",
    "MYSQL_UNIX_PORT",
    "MYSQL_TEST_LOGIN_FILE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGUSER",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGCONNECT_TIMEOUT",
)


@pytest.fixture(autouse=True)
def user_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test has a HOME of its own, empty: no ~/.my.cnf, ~/.pgpass or
    pg_service.conf of the user running the suite is read by a test's connections."""
    path = tmp_path_factory.mktemp("user-home")
    monkeypatch.setenv("HOME", str(path))
    for name in CLIENT_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture(scope="session")
def catalog_verdicts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parser's verdicts on the catalog's SQL that a home keeps from its first command
    on (tool/verdicts.py), made once per worker by an `aishell` process. Each test's home
    starts with a copy, as a DBA's does after that first command: without it, the first
    command of every test judged the whole catalog again (about 0.1 s of CPU a process).
    A copy is used only while the code and tool files that made it are unchanged; the
    load without it is tested where a home is made otherwise (tests/tool/
    test_catalog_verdicts.py, the home a test makes itself)."""
    made = tmp_path_factory.mktemp("judged-home")
    shutil.copytree(REPO / "config", made / "config")
    env = {**os.environ, "AISHELL_HOME": str(made), "AISHELL_SYSTEM_DIR": str(made / "none")}
    env.pop("AISHELL_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "aishell", "tools", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return made / CACHE_FOLDER / f"{VERDICTS_ENTRY}.json"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_verdicts: Path) -> Path:
    """An aishell home with the shipped config copied in and the catalog's verdicts kept
    (catalog_verdicts); no system-wide config under it."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / CACHE_FOLDER).mkdir(mode=0o700)
    shutil.copy2(catalog_verdicts, tmp_path / CACHE_FOLDER / catalog_verdicts.name)
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    monkeypatch.setenv("AISHELL_HOME", str(tmp_path))
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "no-system-config"))
    return tmp_path


@pytest.fixture
def demo_db(home: Path, demo_template: Path) -> Path:
    target = home / "demo.db"
    shutil.copyfile(demo_template, target)
    return target


@pytest.fixture
def config(home: Path) -> Config:
    return load_config(home=home)


EditConfig = Callable[..., Config]


@pytest.fixture
def edit_config(home: Path) -> EditConfig:
    """Change config/aishell.yaml or an agent's yaml, then reload."""

    def edit(main: dict[str, Any] | None = None, **agents: dict[str, Any]) -> Config:
        if main:
            path = home / "config" / "aishell.yaml"
            data = read_yaml(path)
            _merge(data, main)
            write_yaml(path, data)
        for agent, changes in agents.items():
            path = home / "config" / "agents" / f"{agent}.yaml"
            data = read_yaml(path)
            _merge(data[f"{agent}_agent"], changes)
            write_yaml(path, data)
        return load_config(home=home)

    return edit


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture
def pg_url() -> Any:
    from tests.services import scratch_postgresql

    with scratch_postgresql() as url:
        yield url


@pytest.fixture
def mysql_url() -> Any:
    from tests.services import scratch_mysql

    with scratch_mysql() as url:
        yield url


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request: pytest.FixtureRequest) -> Any:
    """Each server dialect in turn, as a scratch database."""
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch() as url:
        yield url


@pytest.fixture
def server_config(home: Path, server_url: str) -> Config:
    """The shipped config with the scratch database as the default target `db`."""
    return use_target(home, server_url)


def pytest_configure(config: pytest.Config) -> None:
    """Find or start the database servers once, in the process that runs the session
    (not in each xdist worker); what cannot be started is named here and again by each
    test that needs it."""
    if hasattr(config, "workerinput"):
        return
    # Compiled once here, not in every `aishell` process a test starts: where
    # PYTHONDONTWRITEBYTECODE is set, each of those would compile what it imports (about
    # 0.8 s of a 1.6 s run).
    compileall.compile_dir(REPO / "aishell", quiet=1)
    for problem in start_servers():
        print(f"aishell tests: {problem}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each worker's share starts with its part of the modules marked slow.

    xdist's worksteal hands each of the n workers a run of about len(items)/n tests, in
    collection order, and a worker out of tests takes the back half of the longest queue
    left. A slow module met last leaves one worker running it while the others wait; dealt
    to the heads of the shares, the slow modules start at once, side by side, and the
    short tests fill the end. A module stays whole (its module fixtures are made once)
    and the order is the same in every worker, as xdist requires."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers < 2:
        return
    slow: dict[Path, list[pytest.Item]] = {}
    rest: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("slow") is not None:
            slow.setdefault(item.path, []).append(item)
        else:
            rest.append(item)
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for number, module in enumerate(slow.values()):
        heads[number % workers].extend(module)
    ordered: list[pytest.Item] = []
    left = len(items)
    taken = 0
    for share, head in enumerate(heads):
        # The size of this share as xdist cuts it: what is left over the workers left.
        size = left // (workers - share)
        left -= size
        fill = max(0, size - len(head))
        ordered += head + rest[taken : taken + fill]
        taken += fill
    items[:] = ordered + rest[taken:]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The scratch databases made ahead or whose drops were left to a thread are gone
    before the process ends (tests.services.ReadyDatabases, LaterDrops)."""
    from tests.services import LATER_DROPS, READY_DATABASES

    READY_DATABASES.release()
    for failure in LATER_DROPS.drain():
        print(f"aishell tests: a scratch database was not dropped: {failure}")
