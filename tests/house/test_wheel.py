"""The built wheel, installed in a fresh venv, is a tool of its own: it carries the catalog
and default config, keeps its home in the user's folders whatever folder it runs in, and
its doctor finds what a target lacks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.services import PG_ADMIN, engine, scratch_postgresql

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

# Every dependency the installed wheel declares is importable at a version it accepts.
CHECK_REQUIREMENTS = """
import importlib.metadata as md
from packaging.requirements import Requirement
missing = []
for line in md.requires("aishell") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        missing.append(f"{req.name} not installed")
        continue
    if not req.specifier.contains(version, prereleases=True):
        missing.append(f"{req.name} {version} does not meet {req.specifier}")
assert not missing, missing
"""


@dataclass
class Installed:
    wheel: Path
    venv: Path

    @property
    def aishell(self) -> str:
        return str(self.venv / "bin" / "aishell")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from this checkout, installed alone into a new venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(REPO),
        ],
        check=True,
    )
    wheel = next(dist.glob("aishell-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The wheel alone goes into the fresh venv; its dependencies are lent by the test's
    # own environment (resolving them again from the registry took two minutes), and
    # are checked against what the wheel declares.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            str(wheel),
        ],
        check=True,
    )
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "lent_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    declared = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    assert declared.returncode == 0, declared.stderr
    return Installed(wheel, venv)


class User:
    """A person with a fresh home folder and nothing of aishell set in the environment,
    running the installed aishell from folders of their own."""

    def __init__(self, root: Path, installed: Installed) -> None:
        self.home = root / "home"
        self.installed = installed
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AISHELL_", "XDG_"))}
        env.pop("PYTHONPATH", None)
        env.update(
            HOME=str(self.home),
            XDG_CONFIG_HOME=str(self.home / ".config"),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_STATE_HOME=str(self.home / ".local" / "state"),
            # No system-wide config: this machine's /etc/aishell is not the test's.
            AISHELL_SYSTEM_DIR=str(root / "no-etc-aishell"),
            NO_COLOR="1",
        )
        self.env = env
        self.config_dir = self.home / ".config" / "aishell"
        self.data_dir = self.home / ".local" / "share" / "aishell"
        self.state_dir = self.home / ".local" / "state" / "aishell"

    def folder(self, name: str) -> Path:
        path = self.home.parent / name
        path.mkdir(exist_ok=True)
        return path

    def run(
        self, where: Path, *args: str, code: int = 0, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = self.env if path is None else {**self.env, "PATH": path}
        done = subprocess.run(
            [self.installed.aishell, *args],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        assert done.returncode == code, f"aishell {' '.join(args)}: {done.stdout}{done.stderr}"
        return done


def test_the_wheel_carries_the_catalog_config_and_state_schema(installed):
    names = zipfile.ZipFile(installed.wheel).namelist()
    catalog = {Path(n).name for n in names if n.startswith("aishell/_bundled/tools/")}
    assert catalog == {p.name for p in (REPO / "tools").glob("*.yaml")}
    assert "aishell/_bundled/config/aishell.yaml" in names
    agents = {Path(n).name for n in names if n.startswith("aishell/_bundled/config/agents/")}
    assert agents == {p.name for p in (REPO / "config" / "agents").glob("*.yaml")}
    assert "aishell/state/migrations/versions/0001_baseline.py" in names  # the state schema


def test_the_wheel_declares_its_agents_as_entry_points_and_lists_them(installed):
    """aishell's own agents reach the installed aishell as any package's would."""
    wheel = zipfile.ZipFile(installed.wheel)
    points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    declared = wheel.read(points).decode()
    assert "[aishell.agents]" in declared
    assert "maintenance = aishell.agents.maintenance:MaintenanceAgent" in declared
    done = subprocess.run(
        [installed.aishell, "agents", "list", "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    listed = {a["name"]: a["package"] for a in json.loads(done.stdout)["agents"]}
    assert listed == {"backup": "aishell", "log_cleanup": "aishell", "maintenance": "aishell"}


def test_the_wheel_carries_the_units_and_init_systemd_prints_them(installed, tmp_path):
    names = zipfile.ZipFile(installed.wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("aishell/_bundled/packaging/")}
    assert shipped == {p.name for p in (REPO / "packaging").iterdir() if p.is_file()}
    user = User(tmp_path, installed)
    where = user.folder("anywhere")
    printed = user.run(where, "init", "--systemd").stdout
    listed = json.loads(user.run(where, "init", "--systemd", "--json").stdout)
    folder = Path(listed["folder"])
    # Installed inside the venv (where the install steps copy them from), not a checkout.
    assert folder.is_relative_to(installed.venv) and folder.name == "packaging", folder
    assert folder.match("lib/python3*/site-packages/aishell/_bundled/packaging")
    for name in shipped:
        text = (REPO / "packaging" / name).read_text()
        assert listed["files"][name] == text
        assert f"# {folder / name}\n{text}" in printed, name
    # It only prints: no home was made.
    assert not user.config_dir.exists() and not user.data_dir.exists()


def test_the_quick_start_runs_anywhere_and_keeps_its_files_in_the_users_folders(
    installed, tmp_path
):
    user = User(tmp_path, installed)
    elsewhere = user.folder("elsewhere")
    version = user.run(elsewhere, "--version").stdout
    assert version == "aishell, version 0.1.0\n"
    tools = json.loads(user.run(elsewhere, "tools", "list", "--json").stdout)["tools"]
    assert {t["name"] for t in tools} >= {"optimize_table", "generate_maintenance_report"}
    # No config yet: the bundled defaults, and the demo database made in the home.
    user.run(elsewhere, "demo", "--log-rows", "3000", "--users", "300", "--orders", "2000")
    result = json.loads(
        user.run(elsewhere, "run", "maintenance", "--type", "full", "--json").stdout
    )
    assert result["status"] == "completed"
    assert all(s["status"] == "succeeded" for s in result["steps"])
    assert (user.data_dir / "demo.db").is_file() and (user.state_dir / "state.db").is_file()
    assert [p.name for p in elsewhere.iterdir()] == []
    # The installed package, not the repository, answered.
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import aishell; print(aishell.__file__)"],
        cwd=elsewhere,
        env=user.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(installed.venv) in where
    doctor = json.loads(user.run(elsewhere, "doctor", "--json").stdout)
    assert doctor["home"]["bundled_defaults"] is True
    assert doctor["home"]["config_files"][0].startswith(str(installed.venv))


@pytest.fixture
def pg_low_role() -> Iterator[tuple[str, str]]:
    """A scratch database with a table its admin owns, and a login role that may only
    connect to it: (the database's admin URL, the role). Both dropped afterwards."""
    role = f"aishell_home_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with scratch_postgresql() as url:
        admin = engine(url)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            conn.execute(text(f'GRANT CONNECT ON DATABASE "{make_url(url).database}" TO {role}'))
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
            conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY, note text)"))
            conn.execute(text("CREATE INDEX orders_note ON orders (note)"))
            conn.execute(
                text("INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 500) g")
            )
        admin.dispose()
        yield url, role
    # The database went first: nothing depends on the role any more.
    admin = engine(PG_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
    admin.dispose()


def test_an_installed_home_from_init_to_doctor(installed, tmp_path, pg_low_role):
    url, role = pg_low_role
    user = User(tmp_path, installed)
    setting_up, running, looking = (user.folder(n) for n in ("setup", "cron", "later"))

    out = user.run(setting_up, "init").stdout
    config = user.config_dir / "aishell.yaml"
    assert f"wrote {config}" in out
    low = make_url(url).set(username=role).render_as_string(hide_password=False)
    # The DBA adds a SQLite and a PostgreSQL target by editing the file init made.
    text_before = config.read_text()
    added = re.sub(
        r"^targets:\n",
        "targets:\n"
        "  lite:\n    url: sqlite:///lite.db\n    environment: test\n"
        f"  pg:\n    url: {url}\n    environment: test\n"
        f"  pg_low:\n    url: {low}\n    environment: test\n",
        text_before,
        count=1,
        flags=re.M,
    )
    assert added != text_before
    config.write_text(added)
    user.run(
        setting_up,
        "demo",
        "--target",
        "lite",
        "--log-rows",
        "3000",
        "--users",
        "300",
        "--orders",
        "2000",
    )
    assert (user.data_dir / "lite.db").is_file()

    # Maintenance from a folder unrelated to the home; the runs found from yet another.
    lite = json.loads(
        user.run(
            running, "run", "maintenance", "--type", "full", "--target", "lite", "--json"
        ).stdout
    )
    pg = json.loads(
        user.run(
            running, "run", "maintenance", "--type", "quick", "--target", "pg", "--json"
        ).stdout
    )
    assert lite["status"] == pg["status"] == "completed"
    listed = json.loads(user.run(looking, "runs", "list", "--json").stdout)["runs"]
    assert {r["run_id"]: r["target"] for r in listed} == {
        lite["run_id"]: "lite",
        pg["run_id"]: "pg",
    }
    assert [p.name for d in (setting_up, running, looking) for p in d.iterdir()] == []

    # The doctor, with a PATH that holds no PostgreSQL client programs.
    bare = str(installed.venv / "bin")
    report = json.loads(user.run(looking, "doctor", "--json", code=1, path=bare).stdout)
    assert report["home"]["config_files"] == [str(config)]
    assert report["home"]["state"] == str(user.state_dir / "state.db")
    problems = [(p["target"], p["problem"], p["fix"]) for p in report["problems"]]
    missing_dump = [p for p in problems if p[1].startswith("pg_dump is not on PATH")]
    assert {t for t, _, _ in missing_dump} == {"pg", "pg_low"}
    assert all(f.startswith("install the PostgreSQL client programs") for _, _, f in missing_dump)
    backup = [p for p in problems if p[0] == "pg_low" and p[1].startswith("backup lacks SELECT")]
    assert backup == [
        (
            "pg_low",
            "backup lacks SELECT on every table and sequence, needed for pg_dump: "
            "not on public.orders",
            f"GRANT pg_read_all_data TO {role}",
        )
    ]
    vacuum = [p for p in problems if p[0] == "pg_low" and "VACUUM and ANALYZE" in p[1]]
    assert [f for _, _, f in vacuum] == [
        f"run aishell as the owner (postgres), or ALTER TABLE orders OWNER TO {role} "
        "(each table listed)"
    ]
    assert not any(p[0] == "lite" for p in problems)
    asking = engine(url)
    with asking.connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar()
    asking.dispose()
    [pg_target] = [t for t in report["targets"] if t["target"] == "pg"]
    assert pg_target["server_version"] == server
    assert [(p["name"], p["path"]) for p in pg_target["programs"]] == [
        ("pg_dump", None),
        ("pg_restore", None),
    ]

    # As a person reads it: each problem, then its fix on the next line.
    shown = user.run(looking, "doctor", "--target", "pg_low", code=1, path=bare).stdout
    assert (
        f"  pg_low: backup lacks SELECT on every table and sequence, needed for pg_dump: "
        f"not on public.orders\n    fix: GRANT pg_read_all_data TO {role}\n"
    ) in shown
    assert "  pg_low: pg_dump is not on PATH" in shown
    assert (
        "\n    fix: install the PostgreSQL client programs (Debian/Ubuntu: apt-get install "
        in shown
    )
