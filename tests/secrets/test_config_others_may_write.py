"""A config, agent or site tool file any user may write to is refused when it is read,
in one line naming it and the chmod that closes it: whoever writes it chooses what
aishell runs and as whom (a target, a notify command, a safety level, a tool's SQL).
One its group may write to is the owner's choice (an administrators' group) and is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import use_target

REPO = Path(__file__).resolve().parents[2]
COMMANDS = (
    ["targets", "list"],
    ["tools", "list"],
    ["run", "maintenance", "--type", "quick", "--dry-run"],
)


def _files(home: Path) -> dict[str, Path]:
    folder = home / "site_tools"
    folder.mkdir()
    shutil.copyfile(REPO / "tools" / "update_table_statistics.yaml", folder / "site_stats.yaml")
    tool = yaml.safe_load((folder / "site_stats.yaml").read_text())
    tool["name"] = "site_stats"
    (folder / "site_stats.yaml").write_text(yaml.safe_dump(tool))
    config = home / "config" / "aishell.yaml"
    data = yaml.safe_load(config.read_text())
    data["catalog_paths"] = ["site_tools"]
    config.write_text(yaml.safe_dump(data))
    return {
        "config": config,
        "agent": home / "config" / "agents" / "maintenance.yaml",
        "site tool": folder / "site_stats.yaml",
    }


@pytest.mark.parametrize("which", ["config", "agent", "site tool"])
def test_a_file_any_user_may_write_is_refused_and_its_groups_is_read(
    which: str, home: Path, demo_db: Path
) -> None:
    use_target(home, f"sqlite:///{demo_db}")
    path = _files(home)[which]
    for command in COMMANDS:  # all is well as the files were made
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)

    path.chmod(0o666)
    # Each command that reads the file: a listing of targets reads only the config,
    # one of tools no agent's file.
    reading = {"config": COMMANDS, "agent": COMMANDS[2:], "site tool": COMMANDS[1:]}
    for command in reading[which]:
        for extra in ([], ["--json"] if command[0] != "run" else []):
            result = CliRunner().invoke(cli, [*command, *extra])
            assert result.exit_code == 2, (command, result.output)
            assert f"chmod o-w {path}" in result.output, result.output
            assert "internal error" not in result.output
        assert len(CliRunner().invoke(cli, command).output.strip().splitlines()) == 1

    path.chmod(0o664)  # the group's to write: read as before
    for command in COMMANDS:
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (command, result.output)
