"""A PostgreSQL target's URL that sets session options (`?options=-csearch_path=other`,
or `options=` in a libpq DSN) is refused in one line, at `targets add` and when a config
holding it is read: aishell's sessions set their own options, so such a search_path
reached some sessions and not others, and the schema the catalog was read in (whose
tables a run checks) was not the one every statement ran in. Without it, the tables a
run covers are those of the session's own schema, and its statements work on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.policy.approvers import PreApproved
from tests.helpers import run_sql, use_target

CONFIG = Path("config") / "aishell.yaml"
REFUSED = "a PostgreSQL target's URL may not set options"


def _two_schemas(url: str) -> None:
    run_sql(
        url,
        "CREATE TABLE in_public (id int PRIMARY KEY)",
        "CREATE SCHEMA other",
        "CREATE TABLE other.in_other (id int PRIMARY KEY)",
    )


@pytest.mark.parametrize("form", ["url", "dsn"])
def test_postgresql_targets_add_refuses_options(home: Path, pg_url: str, form: str) -> None:
    _two_schemas(pg_url)
    pg = make_url(pg_url)
    where = (
        f"postgresql://{pg.username}@{pg.host}:{pg.port or 5432}/{pg.database}"
        "?options=-csearch_path%3Dother"
        if form == "url"
        else f"host={pg.host} port={pg.port or 5432} dbname={pg.database} "
        f"user={pg.username} options=-csearch_path=other"
    )
    before = (home / CONFIG).read_bytes()
    done = CliRunner().invoke(cli, ["targets", "add", "shop", where])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: The location is not one aishell can use: {REFUSED}"), line
    assert (home / CONFIG).read_bytes() == before


def test_postgresql_a_config_holding_options_is_refused_when_read(home: Path, pg_url: str) -> None:
    path = home / CONFIG
    data = yaml.safe_load(path.read_text())
    data["targets"]["shop"] = {"url": f"{pg_url}?options=-csearch_path%3Dother"}
    path.write_text(yaml.safe_dump(data))
    done = CliRunner().invoke(cli, ["targets", "list"])
    assert done.exit_code == 2, done.output
    [line] = done.output.strip().splitlines()
    assert f"targets.shop.url: {REFUSED}" in line, line


def test_postgresql_options_elsewhere_in_the_url_are_not_taken_for_options(
    home: Path, pg_url: str
) -> None:
    """Only libpq's `options` key is refused: another key, and the other engines, pass."""
    path = home / CONFIG
    data = yaml.safe_load(path.read_text())
    data["targets"]["shop"] = {"url": f"{pg_url}?application_name=options"}
    data["targets"]["file"] = {"url": "mysql://app@db2/orders?options=whatever"}
    path.write_text(yaml.safe_dump(data))
    assert set(load_config(home=home).main.targets) >= {"shop", "file"}


def test_postgresql_a_run_covers_and_works_on_the_sessions_own_schema(
    home: Path, pg_url: str
) -> None:
    """The check is what runs: the tables the run covers are the schema its statements
    work in (public here), never the other schema's."""
    _two_schemas(pg_url)
    config = use_target(home, pg_url)
    done = commands.run_job(config, "maintenance", {"type": "quick"}, approver=PreApproved())
    assert done.status == "completed", done.error
    worked = {t for s in done.steps for t in (s.params.get("tables") or [])}
    assert worked == {"in_public"}
