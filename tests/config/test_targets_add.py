"""`aishell targets add NAME LOCATION|--service NAME`: a target written into the home's
config file as a person would write it, once aishell has logged in to it.

A URL with or without its driver, a libpq keyword DSN and a pg_service.conf service are
each added and checked on the real servers; a password, a taken or bad name, an
unknown engine and a server that cannot be reached each end in one line with the file
unchanged, byte for byte."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config

CONFIG = Path("config") / "aishell.yaml"


def _add(*args: str, code: int = 0) -> str:
    done = CliRunner().invoke(cli, ["targets", "add", *args])
    assert done.exit_code == code, done.output
    return done.output


def _config_text(home: Path) -> str:
    return (home / CONFIG).read_text()


def test_a_url_without_its_driver_and_a_libpq_dsn_are_added_and_checked(
    home: Path, pg_url: str, mysql_url: str
):
    before = _config_text(home)
    pg = make_url(pg_url)
    dsn = f"host={pg.host} port={pg.port or 5432} dbname={pg.database} user={pg.username} "
    dsn += "sslmode=disable"
    out = _add("shop", dsn, "--environment", "production", "--description", "the shop")
    assert "Added target shop" in out and "(postgresql)" in out
    my = make_url(mysql_url)
    shown = json.loads(_add("orders", f"mysql://{my.username}@{my.host}/{my.database}", "--json"))
    assert shown["checked"]["dialect"] == "mysql" and shown["checked"]["tables"] == 0
    assert shown["url"] == f"mysql+pymysql://{my.username}@{my.host}/{my.database}"

    config = load_config(home=home)
    shop = config.main.targets["shop"]
    assert shop.environment == "production" and shop.description == "the shop"
    url = make_url(shop.url)
    assert url.drivername == "postgresql+psycopg" and url.database == pg.database
    assert url.query == {"sslmode": "disable"}
    assert config.main.targets["orders"].url.startswith("mysql+pymysql://")
    # Every line of the file as it was, comments included; only the targets are new.
    after = _config_text(home)
    assert [line for line in before.splitlines() if line not in after.splitlines()] == []
    # And the targets work: a plan reaches each.
    for name in ("shop", "orders"):
        assert commands.check_target(config, name)["target"] == name


def test_a_pg_service_is_added_by_name(home: Path, user_home: Path, pg_url: str):
    service = f"svc_{uuid.uuid4().hex[:6]}"
    database = make_url(pg_url).database
    (user_home / ".pg_service.conf").write_text(
        f"[{service}]\nhost=127.0.0.1\nport=5432\ndbname={database}\nuser=postgres\n"
    )
    out = _add("svc", "--service", service)
    assert "Added target svc" in out
    target = load_config(home=home).main.targets["svc"]
    assert make_url(target.url).query == {"service": service}
    # A service in no file is refused, naming the files looked in.
    before = _config_text(home)
    out = _add("svc2", "--service", "nosuch_service", code=2)
    assert "nosuch_service" in out and ".pg_service.conf" in out
    assert _config_text(home) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "postgresql://app:secret@db1/shop"], "has a password"),
        (["a", "host=db1 dbname=shop password=secret"], "has a password"),
        (["demo", "sqlite:///other.db"], "exists in"),
        (["a b", "sqlite:///x.db"], "may hold letters"),
        (["a", "oracle://app@db1/shop"], "Unknown engine 'oracle'"),
        (["a", "db1.example.com"], "neither a URL"),
        (["a", "host=db1 port=five"], "port"),
        (["a", "host='unclosed"], "not one libpq reads"),
        (["a"], "Give where the target is"),
        (["a", "sqlite:///x.db", "--service", "s"], "not both"),
        (["a", "postgresql://postgres@127.0.0.1:1/test"], "Cannot connect to target 'a'"),
    ],
)
def test_what_cannot_be_added_is_one_line_and_the_file_is_unchanged(
    home: Path, args: list[str], message: str
):
    before = _config_text(home)
    done = CliRunner().invoke(cli, ["targets", "add", *args])
    assert done.exit_code in (1, 2), done.output
    assert message in done.output and done.output.strip().count("\n") == 0, done.output
    assert _config_text(home) == before
    assert not [p.name for p in (home / "config").iterdir() if p.name.startswith(".")]
    assert "secret" not in _config_text(home)


def test_no_check_writes_a_target_that_cannot_be_reached_yet(home: Path):
    out = _add("later", "postgresql://app@192.0.2.1/shop", "--no-check", "--password-env", "PW")
    assert "Not checked" in out
    later = load_config(home=home).main.targets["later"]
    assert later.password_env == "PW" and later.url == "postgresql+psycopg://app@192.0.2.1/shop"


@pytest.mark.parametrize(
    "text",
    [
        "targets:\n    demo:\n        url: sqlite:///demo.db\n",
        "targets:   # what aishell keeps\n  # a note on demo\n\n  demo: {url: 'sqlite:///demo.db'}\n",
        "state:\n  url: sqlite:///state.db\ntargets:\n\n  demo:\n    url: sqlite:///demo.db",
    ],
)
def test_the_target_goes_where_the_file_keeps_its_targets(home: Path, text: str):
    path = home / CONFIG
    path.write_text(text)
    _add("new", "sqlite:///new.db", "--no-check")
    data = yaml.safe_load(path.read_text())
    assert data["targets"]["new"]["url"] == "sqlite:///new.db"
    assert data["targets"]["demo"]["url"] == "sqlite:///demo.db"
    assert [line for line in text.splitlines() if line not in path.read_text().splitlines()] == []
    assert {"new", "demo"} <= set(load_config(home=home).main.targets)


def test_a_file_an_open_umask_made_keeps_its_mode(home: Path):
    path = home / CONFIG
    path.chmod(0o640)
    _add("kept", "sqlite:///kept.db", "--no-check")
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_config_file_that_is_a_link_is_left_alone(home: Path, tmp_path: Path):
    """A config kept elsewhere and linked into the home (a dotfiles repository) is not
    replaced by a file of its own: one line, the link and its file as they were."""
    path = home / CONFIG
    kept = tmp_path / "dotfiles-aishell.yaml"
    kept.write_text(path.read_text())
    path.unlink()
    path.symlink_to(kept)
    before = kept.read_text()
    done = CliRunner().invoke(cli, ["targets", "add", "new", "sqlite:///new.db", "--no-check"])
    assert done.exit_code == 2, done.output
    assert "symbolic link" in done.output and done.output.strip().count("\n") == 0
    assert path.is_symlink() and kept.read_text() == before


def test_targets_add_takes_every_environment_the_config_takes() -> None:
    from typing import get_args

    from aishell.config.models import Environment

    (add,) = [c for name, c in cli.commands["targets"].commands.items() if name == "add"]  # type: ignore[attr-defined]
    (option,) = [p for p in add.params if p.name == "environment"]
    assert list(option.type.choices) == list(get_args(Environment))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["zq", "postgresql://postgres@127.0.0.1:99999/x"],
            "The location is not one aishell can use: the URL's port 99999 is not between 1 "
            "and 65535",
        ),
        (
            ["zq", "postgresql://postgres@127.0.0.1/x", "--password-env", "lower-case bad"],
            "--password-env: not an environment variable's name",
        ),
    ],
)
def test_a_refused_target_names_the_option_not_the_file_nor_its_checked_copy(
    home: Path, args: list[str], said: str
):
    before = _config_text(home)
    out = _add(*args, code=2)
    assert out.startswith(f"Error: {said}"), out
    assert ".partial" not in out and str(home) not in out
    assert _config_text(home) == before
