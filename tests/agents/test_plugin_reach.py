"""What reaches an agent from a package besides its run: the shell's completion and
the job groups' help list it, `targets check` and `doctor` test the privileges it
declares on each engine (with the GRANT for what is missing), and a name that a job
group's own command holds is refused."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell.agents.api import AgentSpec, BaseAgent, Privilege, UsageError, register_agent
from aishell.agents.available import COMMAND_NAMES, agent_names, reload_agents
from aishell.cli import cli
from aishell.cli.context import JobGroup
from tests.conftest import use_target

PG_NEEDS = (
    Privilege(("SELECT", "DELETE"), "reading and purging its tables"),
    Privilege(("CREATE",), "its archive tables", on="schema"),
    Privilege(("CREATE",), "its archive schema", on="database"),
    Privilege(("pg_monitor",), "reading other sessions", on="server", optional=True),
    "a word of advice",
)
MYSQL_NEEDS = (
    Privilege(("SELECT", "DELETE"), "reading and purging its tables"),
    Privilege(("PROCESS",), "reading other sessions", on="server"),
)
SQLITE_NEEDS = (Privilege(("SELECT",), "reading"), Privilege(("DELETE",), "purging"))


def _agent(name: str) -> BaseAgent:
    class Declaring(BaseAgent):
        spec = AgentSpec(
            name=name,
            description="Declares what it needs.",
            privileges={"postgresql": PG_NEEDS, "mysql": MYSQL_NEEDS, "sqlite": SQLITE_NEEDS},
        )

    return Declaring()


@pytest.fixture
def declaring() -> Iterator[str]:
    name = f"declaring_{uuid.uuid4().hex[:8]}"
    reload_agents()
    register_agent(_agent(name), package="declaring-pkg")
    yield name
    reload_agents()


def _needs(home: Path, agent: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--home", str(home), "targets", "check", "--json"])
    assert result.exit_code == 0, result.output
    return [n for n in json.loads(result.stdout)["needs"] if n["agent"] == agent]


def _by_use(needs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n["needed_for"]: n for n in needs}


def test_a_plugin_agent_is_in_the_job_groups_help_and_the_shell_s_completion(
    declaring: str,
) -> None:
    for group in ("run", "plan"):
        shown = CliRunner().invoke(cli, [group, "--help"])
        assert shown.exit_code == 0 and declaring in shown.output
        offered = CliRunner().invoke(
            cli,
            [],
            prog_name="aishell",
            env={
                "_AISHELL_COMPLETE": "bash_complete",
                "COMP_WORDS": f"aishell {group} decl",
                "COMP_CWORD": "2",
            },
        )
        assert f"plain,{declaring}" in offered.output.splitlines()
    # The built-ins are offered once, by the agent's own name.
    rows = CliRunner().invoke(cli, ["run", "--help"]).output.splitlines()
    spelled = ("log_cleanup", "log-cleanup")
    assert [row.split()[0] for row in rows if row.strip().startswith(spelled)] == ["log_cleanup"]


def test_an_agent_named_as_a_job_group_s_own_command_is_refused() -> None:
    for name in COMMAND_NAMES:
        with pytest.raises(UsageError, match="is a command of"):
            register_agent(_agent(name))


def test_every_command_of_the_job_groups_is_an_agent_or_a_name_agents_may_not_take() -> None:
    agents = set(agent_names())
    for group in ("run", "plan"):
        command = cli.commands[group]
        assert isinstance(command, JobGroup)
        own = click.Group.list_commands(command, click.Context(command))
        assert {n.replace("-", "_") for n in own} <= agents | COMMAND_NAMES


def test_declared_privileges_are_checked_on_sqlite(demo_db: Path, home: Path, declaring: str):
    needs = _by_use(_needs(home, declaring))
    assert needs["reading"]["missing"] is None and needs["purging"]["missing"] is None
    assert needs["reading"]["privilege"] == "SELECT on its tables"


@pytest.fixture
def pg_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """A login of its own on the scratch database, owning nothing, granted SELECT only."""
    role = f"decl_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text("CREATE TABLE kept (id int primary key)"))
        conn.execute(text("CREATE TABLE logs (id int primary key)"))
        conn.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
        conn.execute(text(f'REVOKE CREATE ON SCHEMA public FROM "{role}", PUBLIC'))
    try:
        yield role, make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_declared_privileges_are_checked_on_postgresql_with_the_grant_to_run(
    home: Path, pg_role: tuple[str, str], declaring: str
) -> None:
    role, url = pg_role
    use_target(home, url)
    needs = _by_use(_needs(home, declaring))
    purge = needs["reading and purging its tables"]
    assert purge["missing"] == "DELETE not on kept, logs"
    assert purge["fix"] == f"GRANT DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    archive = needs["its archive tables"]
    assert archive["missing"] == "CREATE on schema public"
    assert archive["fix"] == f"GRANT CREATE ON SCHEMA public TO {role}"
    schema = needs["its archive schema"]
    database = make_url(url).database
    assert schema["missing"] == f"CREATE on database {database}"
    assert schema["fix"] == f"GRANT CREATE ON DATABASE {database} TO {role}"
    monitor = needs["reading other sessions"]
    assert monitor["missing"] == "not a member of pg_monitor" and monitor["optional"]
    assert needs["declared in words: not checked"]["privilege"] == "a word of advice"

    # Doctor names what is missing as a problem, and no longer once it is granted.
    def problems() -> list[str]:
        out = CliRunner().invoke(cli, ["--home", str(home), "doctor", "--json"])
        found = json.loads(out.stdout)
        return [p["problem"] for p in found["problems"] if declaring in p["problem"]]

    assert any("DELETE not on kept, logs" in p for p in problems())
    admin = create_engine(make_url(url).set(username="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for fixed in (purge, archive, schema):
            conn.execute(text(fixed["fix"]))
    admin.dispose()
    assert problems() == []


@pytest.fixture
def mysql_login(mysql_url: str) -> Iterator[tuple[str, str]]:
    user = f"decl_{uuid.uuid4().hex[:10]}"
    url = make_url(mysql_url)
    admin = create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE TABLE logs (id int primary key)"))
        conn.execute(text(f"CREATE USER '{user}'@'%'"))
        conn.execute(text(f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'"))
    try:
        yield user, url.set(username=user, password="").render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def test_declared_privileges_are_checked_on_mariadb(
    home: Path, mysql_login: tuple[str, str], declaring: str
) -> None:
    user, url = mysql_login
    use_target(home, url)
    needs = _by_use(_needs(home, declaring))
    purge = needs["reading and purging its tables"]
    assert purge["missing"] == "DELETE not on logs"
    database = make_url(url).database
    assert purge["fix"] == f"GRANT SELECT, DELETE ON `{database}`.* TO '{user}'@'%'"
    process = needs["reading other sessions"]
    assert process["missing"] == "PROCESS globally"
    assert process["fix"] == f"GRANT PROCESS ON *.* TO '{user}'@'%'"


def test_a_privilege_is_named_in_words_the_engine_grants() -> None:
    with pytest.raises(ValueError, match="privilege names are words"):
        Privilege(("SELECT; DROP TABLE x",), "nothing")
