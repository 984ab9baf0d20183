"""A file of the agents' folders that no agent reads, though its name is like an agent's
(`maintenance.yml`, `log-cleanup.yaml` after the command, capitals, a near miss), is
refused when that agent loads, one line naming the file and the name it should have:
skipped, the bundled file applied and the stricter limits in it were lost without a
word. A name an agent may have, of an agent not installed here, is left alone; one of
an installed package's agent is that agent's file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from aishell.config.agentfiles import MisnamedAgentFile
from aishell.config.models import load_config

AGENTS = Path("config") / "agents"


def _stricter_log_cleanup(home: Path, name: str) -> Path:
    """The log cleanup agent's file, a stricter floor in it, under `name`; its own gone."""
    own = home / AGENTS / "log_cleanup.yaml"
    text = own.read_text().replace("min_retention_days: 7", "min_retention_days: 60")
    own.unlink()
    path = home / AGENTS / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name", ["log-cleanup.yaml", "log_cleanup.yml", "Log_Cleanup.yaml", "log_cleaup.yaml"]
)
def test_a_misnamed_agent_file_is_refused_naming_the_name_it_should_have(
    demo_db: Path, home: Path, name: str
) -> None:
    path = _stricter_log_cleanup(home, name)
    done = CliRunner().invoke(
        cli, ["plan", "log-cleanup", "--table", "app_logs", "--retention-days", "30"]
    )
    assert done.exit_code == 2, done.output
    assert done.output.splitlines() == [
        f"Error: {path}: no agent reads a file of this name; the log_cleanup agent's file is "
        "log_cleanup.yaml: rename it"
    ]


def test_beside_the_agents_own_file_the_two_are_to_be_merged(home: Path) -> None:
    path = home / AGENTS / "maintenance.yml"
    shutil.copy(home / AGENTS / "maintenance.yaml", path)
    with pytest.raises(MisnamedAgentFile) as refused:
        load_config(home=home).agent("maintenance")
    assert str(refused.value) == (
        f"{path}: no agent reads a file of this name; the maintenance agent reads "
        "maintenance.yaml beside it: merge the two into that one"
    )


def test_a_file_meant_for_another_agent_leaves_this_one_alone(home: Path) -> None:
    _stricter_log_cleanup(home, "log-cleanup.yaml")
    config = load_config(home=home)
    assert config.agent("maintenance").path == home / AGENTS / "maintenance.yaml"
    with pytest.raises(MisnamedAgentFile):
        config.agent("log_cleanup")


def test_a_yaml_file_no_agent_could_read_is_refused_for_every_agent(home: Path) -> None:
    path = home / AGENTS / "Nightly-Jobs.yml"
    path.write_text("nightly_jobs_agent: {}\n")
    for agent in ("backup", "maintenance"):
        with pytest.raises(MisnamedAgentFile) as refused:
            load_config(home=home).agent(agent)
        assert str(refused.value) == (
            f"{path}: no agent reads a file of this name; an agent's file is named after "
            "it, AGENT.yaml (agents: backup, log_cleanup, maintenance): rename or remove it"
        )


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "log_cleanup.yaml~",
        "log_cleanup.yaml.bak",
        ".log_cleanup.yaml",
        "site_reindex.yaml",
    ],
)
def test_what_is_no_agents_file_by_its_name_is_left_alone(home: Path, name: str) -> None:
    """Not YAML by its ending, hidden (an editor's), or a name an agent may have that no
    agent here has (a package's not installed on this machine)."""
    (home / AGENTS / name).write_text("not: read\n")
    config = load_config(home=home)
    for agent in ("backup", "log_cleanup", "maintenance"):
        config.agent(agent)


def test_an_installed_packages_agent_has_its_file(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backups.yaml` is close to the backup agent's file, but it is the file of the
    agent `backups` a package installs (its entry point is what names it)."""
    (home / AGENTS / "backups.yaml").write_text("backups_agent: {capabilities: []}\n")
    with pytest.raises(MisnamedAgentFile, match="the backup agent reads backup.yaml beside it"):
        load_config(home=home).agent("backup")
    site = tmp_path / "site-packages"
    info = site / "pr_backups_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pr-backups-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aishell.agents]\nbackups = pr_backups:Agent\n")
    monkeypatch.syspath_prepend(str(site))
    assert load_config(home=home).agent("backup").path == home / AGENTS / "backup.yaml"


def test_the_doctor_names_a_misnamed_file_once(home: Path) -> None:
    path = home / AGENTS / "Nightly-Jobs.yml"
    path.write_text("nightly_jobs_agent: {}\n")
    done = CliRunner().invoke(cli, ["doctor", "--json"])
    problems = [
        p for p in json.loads(done.stdout)["problems"] if p["problem"].startswith(str(path))
    ]
    assert [p["fix"] for p in problems] == ["rename the file as it says"]
