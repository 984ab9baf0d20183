"""The home: found the same way from any folder (--home, AISHELL_HOME, the user's folders),
/etc/aishell under the user's file, `aishell init`, and what doctor says of it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import ConfigError
from tests.helpers import tmpfs, use_target

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with an empty home folder and nothing set: no AISHELL_HOME, no
    AISHELL_CONFIG, and a system-wide config folder of the test's own (empty)."""
    home = tmp_path / "user"
    for name, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("AISHELL_HOME", raising=False)
    monkeypatch.delenv("AISHELL_CONFIG", raising=False)
    monkeypatch.setenv("AISHELL_SYSTEM_DIR", str(tmp_path / "etc-aishell"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return home


def aishell(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return done.exit_code, done.stdout, done.stderr


def user_dirs(user: Path) -> tuple[Path, Path, Path]:
    """Config, data and state folders of aishell for this user (XDG)."""
    return (
        user / ".config" / "aishell",
        user / ".local" / "share" / "aishell",
        user / ".local" / "state" / "aishell",
    )


# --- where the home is ----------------------------------------------------------------------


def test_the_users_folders_hold_everything_whatever_the_current_folder(user, tmp_path):
    config_dir, data_dir, state_dir = user_dirs(user)
    # A config in the current folder is a project's: never used unless named.
    (Path.cwd() / "config").mkdir()
    (Path.cwd() / "config" / "aishell.yaml").write_text("targets: {}\n")
    code, out, err = aishell("demo", "--log-rows", "500", "--users", "100", "--orders", "500")
    assert code == 0, err
    config = load_config()
    assert config.chosen_by == "user folders"
    assert config.path == REPO / "config" / "aishell.yaml"  # the bundled defaults
    assert config.home == data_dir and (data_dir / "demo.db").is_file()
    assert config.state_location == str(state_dir / "state.db")
    code, out, err = aishell("run", "maintenance", "--type", "quick", "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    assert (state_dir / "state.db").is_file()
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["config"]  # nothing written here
    # From another folder, the same runs.
    other = tmp_path / "other"
    other.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(other)
        code, out, err = aishell("runs", "list", "--json")
    assert code == 0, err
    assert run_id in [r["run_id"] for r in json.loads(out)["runs"]]
    assert not config_dir.exists()  # nothing wrote a config: that is `aishell init`'s


def test_home_option_over_aishell_home_over_user_folders(user, tmp_path, monkeypatch):
    by_env, by_option = tmp_path / "by-env", tmp_path / "by-option"
    monkeypatch.setenv("AISHELL_HOME", str(by_env))
    assert load_config().home == by_env and load_config().chosen_by == "AISHELL_HOME"
    assert load_config(home=by_option).home == by_option
    code, out, err = aishell("--home", str(by_option), "init", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["config_dir"] == str(by_option / "config") and made["chosen_by"] == "--home"
    assert (by_option / "config" / "aishell.yaml").is_file() and (by_option / "state.db").is_file()
    assert not by_env.exists() and not user_dirs(user)[0].exists()


def test_a_named_config_replaces_the_homes_own(user, tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "agents").mkdir(parents=True)
    (project / "site.yaml").write_text(
        "default_target: app\ntargets:\n  app:\n    url: sqlite:///app.db\n"
    )
    agent = (REPO / "config" / "agents" / "maintenance.yaml").read_text()
    (project / "agents" / "maintenance.yaml").write_text(
        agent.replace("max_execution_time: 3600", "max_execution_time: 77")
    )
    code, _, err = aishell("init")
    assert code == 0, err
    for how in ("option", "environment"):
        if how == "environment":
            monkeypatch.setenv("AISHELL_CONFIG", str(project / "site.yaml"))
            config = load_config()
        else:
            config = load_config(project / "site.yaml")
        assert config.path == project / "site.yaml"
        assert sorted(config.main.targets) == ["app"]
        assert config.agent("maintenance").defaults.max_execution_time == 77
        # An agent the project has no file for: the bundled default, not the home's.
        assert config.agent("backup").path == REPO / "config" / "agents" / "backup.yaml"
        assert config.home == user_dirs(user)[1]  # relative paths stay under the home
    with pytest.raises(ConfigError, match="Config file .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


# --- /etc/aishell under the user's file -----------------------------------------------------


def test_the_users_file_extends_the_system_wide_one(user, tmp_path):
    system = tmp_path / "etc-aishell"
    system.mkdir()
    (system / "aishell.yaml").write_text(
        "default_target: shared\n"
        "backup_dir: /srv/backups\n"
        "state:\n  url: sqlite:////srv/aishell/state.db\n"
        "targets:\n"
        "  shared:\n    url: postgresql+psycopg://aishell@db1/shop\n    environment: production\n"
        "  replaced:\n    url: sqlite:///system.db\n"
    )
    config = load_config()  # no user file yet: the system's alone, not the bundled one
    assert config.files == (system / "aishell.yaml",) and "demo" not in config.main.targets

    config_dir = user_dirs(user)[0]
    config_dir.mkdir(parents=True)
    (config_dir / "aishell.yaml").write_text(
        "backup_dir: mine\n"
        "targets:\n"
        "  replaced:\n    url: sqlite:///mine.db\n"
        "  added:\n    url: sqlite:///added.db\n"
    )
    config = load_config()
    assert config.files == (system / "aishell.yaml", config_dir / "aishell.yaml")
    assert config.path == config_dir / "aishell.yaml"
    # Top-level keys: the user's replace the system's; the rest stay the system's.
    assert config.main.backup_dir == "mine" and config.main.default_target == "shared"
    assert config.state_location == "/srv/aishell/state.db"
    # Targets merge by name; a target of the same name is the user's, whole.
    targets = config.main.targets
    assert sorted(targets) == ["added", "replaced", "shared"]
    assert targets["replaced"].url == "sqlite:///mine.db"
    assert targets["replaced"].environment == "development"
    assert targets["shared"].environment == "production"

    # An error names the file the key came from.
    (system / "aishell.yaml").write_text(
        (system / "aishell.yaml").read_text().replace("production", "prod")
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(system))}/aishell.yaml: targets"):
        load_config()
    (config_dir / "aishell.yaml").write_text(
        "targets:\n  shared:\n    url: sqlite:///s.db\n    enviroment: test\n"
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config_dir))}/aishell.yaml: targ"):
        load_config()


def test_an_agents_file_is_taken_from_the_first_folder_that_has_it(user, tmp_path):
    system = tmp_path / "etc-aishell"
    (system / "agents").mkdir(parents=True)
    original = (REPO / "config" / "agents" / "maintenance.yaml").read_text()
    (system / "agents" / "maintenance.yaml").write_text(
        original.replace("max_execution_time: 3600", "max_execution_time: 1800")
    )
    config = load_config()
    assert config.agent("maintenance").defaults.max_execution_time == 1800
    assert config.agent("backup").path == REPO / "config" / "agents" / "backup.yaml"
    # init copies the bundled defaults of the others only: a copy would hide the site's.
    code, _, err = aishell("init")
    assert code == 0, err
    agents = user_dirs(user)[0] / "agents"
    assert sorted(p.name for p in agents.iterdir()) == ["backup.yaml", "log_cleanup.yaml"]
    assert load_config().agent("maintenance").defaults.max_execution_time == 1800
    # The user's own file, when there is one, comes first.
    (agents / "maintenance.yaml").write_text(original)
    assert load_config().agent("maintenance").defaults.max_execution_time == 3600


def test_init_over_a_system_wide_config_sets_nothing_of_its_own(user, tmp_path):
    system, shared = tmp_path / "etc-aishell", tmp_path / "srv"
    system.mkdir()
    shared.mkdir()
    (system / "aishell.yaml").write_text(
        "default_target: shared\n"
        f"state:\n  url: sqlite:///{shared}/state.db\n"
        "targets:\n  shared:\n    url: sqlite:///shared.db\n"
    )
    code, _, err = aishell("init")
    assert code == 0, err
    path = user_dirs(user)[0] / "aishell.yaml"
    text = path.read_text()
    assert text.startswith(f"# This file extends the system-wide {system / 'aishell.yaml'}")
    assert "\n# targets:\n#   demo:\n" in text and "\n#     url: sqlite:///demo.db\n" in text
    assert all(not line or line.startswith("#") for line in text.splitlines())
    config = load_config()
    assert config.files == (system / "aishell.yaml", path)
    assert sorted(config.main.targets) == ["shared"]
    assert config.state_location == str(shared / "state.db")
    assert (shared / "state.db").is_file()  # init made the store in use


# --- aishell init -----------------------------------------------------------------------------


def test_init_writes_a_commented_config_and_refuses_to_overwrite_it(user):
    config_dir, data_dir, state_dir = user_dirs(user)
    code, out, err = aishell("init")
    assert code == 0, err
    path = config_dir / "aishell.yaml"
    assert f"wrote {path}" in out and f"state store {state_dir / 'state.db'}" in out
    assert (state_dir / "state.db").is_file() and data_dir.is_dir()
    assert sorted(p.name for p in (config_dir / "agents").iterdir()) == [
        "backup.yaml",
        "log_cleanup.yaml",
        "maintenance.yaml",
    ]
    text = path.read_text()
    assert yaml.safe_load(text) == yaml.safe_load((REPO / "config" / "aishell.yaml").read_text())
    # Every section is explained by the comment just above it.
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            assert lines[number - 1].startswith("#"), f"{line!r} has no comment above it"

    path.write_text(text + "# mine\n")
    code, out, err = aishell("init")
    assert code == 2
    assert f"{path} exists; `aishell init --force` replaces it" in err
    assert path.read_text().endswith("# mine\n")
    code, out, err = aishell("init", "--force")
    assert code == 0, err
    assert path.read_text() == text
    assert (config_dir / "aishell.yaml.bak").read_text().endswith("# mine\n")


# --- aishell doctor ----------------------------------------------------------------------------


def test_doctor_says_which_files_and_store_are_in_use(user):
    code, _, err = aishell("init")
    assert code == 0, err
    config_dir, data_dir, state_dir = user_dirs(user)
    code, out, err = aishell("demo", "--log-rows", "500", "--users", "100", "--orders", "500")
    assert code == 0, err
    code, out, err = aishell("doctor", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["problems"] == []
    home = report["home"]
    assert home["chosen_by"] == "user folders"
    assert home["config_files"] == [str(config_dir / "aishell.yaml")]
    assert home["state"] == str(state_dir / "state.db")
    assert home["agent_files"]["maintenance"] == str(config_dir / "agents" / "maintenance.yaml")
    assert home["backup_dir"] == str(data_dir / "backups")
    assert report["versions"]["aishell"] and report["versions"]["sqlalchemy"]
    [demo] = report["targets"]
    assert demo["reachable"] and demo["server_version"].startswith("SQLite 3.")
    assert demo["backups"]["folder"] == str(data_dir / "backups" / "demo")
    assert demo["backups"]["free_bytes"] > demo["backups"]["database_bytes"] > 0

    code, out, err = aishell("doctor")
    assert code == 0, out
    assert f"  config   {config_dir / 'aishell.yaml'}\n" in out
    assert f"  state    {state_dir / 'state.db'}\n" in out
    assert out.endswith("Nothing left behind by killed runs.\nNo problems found.\n")


def test_doctor_names_each_problem_with_its_fix(user, tmp_path):
    code, _, err = aishell("init")
    assert code == 0, err
    path = user_dirs(user)[0] / "aishell.yaml"
    text = path.read_text().replace(
        "targets:\n",
        "targets:\n"
        "  nowhere:\n    url: postgresql+psycopg://aishell@127.0.0.1:1/shop\n"
        "    connect_timeout_seconds: 2\n"
        "  secret:\n    url: postgresql+psycopg://aishell@127.0.0.1/shop\n"
        "    password_env: AISHELL_TEST_UNSET_PW\n",
        1,
    )
    path.write_text(text)
    code, out, err = aishell("doctor", "--json")
    assert code == 1, err
    problems = {p["target"]: p for p in json.loads(out)["problems"]}
    assert set(problems) == {"demo", "nowhere", "secret"}
    assert "demo.db does not exist" in problems["demo"]["problem"]
    assert problems["demo"]["fix"].startswith("`aishell demo --target demo` makes a demo")
    assert problems["nowhere"]["problem"].startswith("Cannot connect to target 'nowhere'")
    assert problems["nowhere"]["fix"].startswith("start the server, or correct targets.nowhere")
    assert problems["secret"]["fix"] == (
        "export AISHELL_TEST_UNSET_PW with the password of targets.secret"
    )
    code, out, err = aishell("doctor", "--target", "secret")
    assert code == 1
    assert out.endswith(
        "1 problem:\n"
        "  secret: Target 'secret': the environment variable AISHELL_TEST_UNSET_PW "
        f"(targets.secret.password_env in {path}) is not set; export AISHELL_TEST_UNSET_PW "
        "where aishell runs (the scheduler's service too), or change "
        "targets.secret.password_env\n"
        "    fix: export AISHELL_TEST_UNSET_PW with the password of targets.secret\n"
    )
    code, out, err = aishell("doctor", "--target", "nope")
    assert code == 2 and "Unknown target 'nope'" in err

    # A config that does not load: doctor still says where it looked, and why.
    path.write_text(text.replace("default_target: demo", "default_target: [demo"))
    code, out, err = aishell("doctor", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["home"]["config_files"] == [str(path)]
    [problem] = report["problems"]
    assert re.match(rf"{re.escape(str(path))}:\d+: invalid YAML", problem["problem"])
    assert problem["fix"].startswith("correct the key it names in that file")


def test_doctor_weighs_the_backup_folders_free_space_against_the_database(
    home, demo_db, tmp_path, edit_config
):
    with tmpfs(tmp_path / "small", "256k") as folder:
        edit_config({"backup_dir": str(folder)})
        code, out, err = aishell("doctor", "--json")
        assert code == 1, err
        [problem] = json.loads(out)["problems"]
        size = demo_db.stat().st_size
        assert problem["target"] == "demo"
        assert re.fullmatch(
            rf"backups go to {folder}/demo: [\d,]+ bytes free there, the database is "
            rf"{size:,} bytes",
            problem["problem"],
        ), problem
        assert problem["fix"] == (
            f"free space on that file system, or set backup_dir in {home}/config/aishell.yaml "
            "to another folder on a larger disk"
        )


def test_doctor_finds_a_pg_dump_older_than_the_server(home, pg_url, tmp_path, monkeypatch):
    use_target(home, pg_url)
    # An old pg_dump first on PATH: a program that says what an old one says.
    old = tmp_path / "old-bin"
    old.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (old / name).write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 9.6.24'\n")
        (old / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{old}:{os.environ['PATH']}")
    code, out, err = aishell("doctor", "--target", "db", "--json")
    assert code == 1, err
    report = json.loads(out)
    [target] = report["targets"]
    major = int(target["server_version"].split(".")[0])
    found = {p["problem"]: p["fix"] for p in report["problems"]}
    for name in ("pg_dump", "pg_restore"):
        problem = (
            f"{name} 9 ({old / name}) is older than the server (PostgreSQL {major}) and refuses it"
        )
        assert found[problem] == (
            f"install the PostgreSQL {major} client programs (postgresql-client-{major}) and "
            "put them first on PATH"
        )
