"""The recipe for an agent of one's own, as the docs give it: the code blocks of
docs/architecture.md's "Writing an agent" (the agent module, its tool file, the
pyproject's entry points) installed as a package in a site folder plan and run on the
demo database; the README's whole site tool file loads as written. And what
`aishell agents list` names: a declared tool the catalog lacks, an `aishell.tools`
entry point that fails, one tool file of a plugin refused while the others load."""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from aishell import commands
from aishell.cli import cli
from aishell.commands.tools import catalog_from
from aishell.config.models import load_config
from tests.agents.test_agent_recipe import AGENT_MODULE, TOOL
from tests.conftest import REPO

Install = Callable[..., str]

DOC = (REPO / "docs" / "architecture.md").read_text()
RECIPE = DOC.split("## Writing an agent", 1)[1].split("\n## ", 1)[0]
README = (REPO / "README.md").read_text()
# A path in backticks, a colon, then the code block that is that file.
FILE = re.compile(r"`(?P<path>[\w/.]+)`:\n\n```\w+\n(?P<code>.*?)```", re.S)


def _files() -> dict[str, str]:
    return {m.group("path"): m.group("code") for m in FILE.finditer(RECIPE)}


def _entry_points(pyproject: str) -> dict[str, dict[str, str]]:
    declared: dict[str, dict[str, str]] = tomllib.loads(pyproject)["project"]["entry-points"]
    return declared


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args)


def _json(args: list[str]) -> dict[str, Any]:
    result = _invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _install_the_recipe(site: Install) -> str:
    """The doc's files as a package of the site folder (`tidy_pkg` is its name)."""
    files = _files()
    assert sorted(files) == [
        "pyproject.toml",
        "tidy_pkg/agent.py",
        "tidy_pkg/tools/count_rows.yaml",
    ], sorted(files)
    points = _entry_points(files.pop("pyproject.toml"))
    package = {
        path.removeprefix("tidy_pkg/"): code.replace("tidy_pkg", "PKG")
        for path, code in files.items()
    }
    return site(
        package,
        agents={k: v.replace("tidy_pkg", "PKG") for k, v in points["aishell.agents"].items()},
        tools={k: v.replace("tidy_pkg", "PKG") for k, v in points["aishell.tools"].items()},
    )


def test_the_doc_s_agent_recipe_plans_and_runs_on_the_demo_database(
    demo_db: Path, site: Install
) -> None:
    _install_the_recipe(site)
    listed = _json(["agents", "list"])
    assert listed["failed"] == []
    (tidy,) = [a for a in listed["agents"] if a["name"] == "tidy"]
    assert tidy["tools"] == ["count_rows", "update_table_statistics"]
    assert tidy["missing_tools"] == []

    planned = _json(["plan", "tidy", "--table", "app_logs"])
    assert [s["tool"] for s in planned["steps"]] == ["count_rows", "update_table_statistics"]

    ran = _json(["run", "tidy", "--table", "app_logs", "--yes"])
    assert ran["status"] == "completed", ran
    counted, statistics = ran["steps"]
    assert counted["tool"] == "count_rows" and counted["output"]["row_count"] > 0
    assert statistics["status"] == "succeeded"


def test_the_readme_names_the_entry_points_the_recipe_defines() -> None:
    section = README.split("## Your own agents", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert _entry_points(block) == _entry_points(_files()["pyproject.toml"])


def test_the_readme_s_whole_site_tool_file_loads_as_written(tmp_path: Path) -> None:
    section = README.split("### Site tools", 1)[1].split("\n## ", 1)[0]
    whole = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if b.startswith("name:")]
    assert len(whole) == 1, "the README shows one whole site tool file"
    name = re.match(r"name: (\w+)", whole[0])
    assert name is not None
    folder = tmp_path / "site_tools"
    folder.mkdir()
    (folder / f"{name.group(1)}.yaml").write_text(whole[0])
    catalog = catalog_from([folder], ([], []))
    assert name.group(1) in catalog.tools


def test_agents_list_names_a_declared_tool_the_catalog_lacks(demo_db: Path, site: Install) -> None:
    unique = uuid.uuid4().hex[:8]
    agent = f"tidy_{unique}"
    module = AGENT_MODULE.format(agent=agent, tool=f"count_rows_{unique}")
    site({"agent.py": module}, agents={agent: "PKG.agent:TidyAgent"})
    (listed,) = [a for a in _json(["agents", "list"])["agents"] if a["name"] == agent]
    assert listed["missing_tools"] == [f"count_rows_{unique}"]
    text = _invoke(["agents", "list"])
    assert f"tools: count_rows_{unique} (not in the catalog), update_table_statistics" in (
        text.stdout
    )


def test_a_tools_entry_point_that_fails_is_listed_under_failed(
    demo_db: Path, site: Install
) -> None:
    package = site({"tools.py": "1/0\n"}, tools={"broken": "PKG.tools:folder"})
    failed = _json(["agents", "list"])["failed"]
    assert failed == [
        {
            "name": "broken",
            "group": "aishell.tools",
            "package": package,
            "error": "ZeroDivisionError: division by zero",
            "file": None,
        }
    ]
    text = _invoke(["agents", "list"])
    assert f"failed: broken ({package}): ZeroDivisionError" in text.stderr


def test_one_refused_tool_file_is_named_as_refused_and_the_others_load(
    demo_db: Path, home: Path, site: Install
) -> None:
    unique = uuid.uuid4().hex[:8]
    kept, bad = f"kept_{unique}", f"bad_{unique}"
    count = "SELECT count(*) AS row_count FROM {table}"
    files = {
        "__init__.py": "tools = 'tools'\n",
        f"tools/{kept}.yaml": TOOL.format(tool=kept, risk="safe", sql=count),
        f"tools/{bad}.yaml": TOOL.format(tool=bad, risk="safe", sql="DELETE FROM {table}"),
    }
    package = site(files, tools={"evil": "PKG:tools"})
    config = load_config(home=home)
    assert kept in commands.load_catalog(config).tools

    (failed,) = _json(["agents", "list"])["failed"]
    assert (failed["name"], failed["package"]) == ("evil", package)
    assert failed["file"].endswith(f"{bad}.yaml")
    assert failed["error"].startswith(f"{failed['file']}: risk_level: tagged safe")
    text = _invoke(["agents", "list"]).stderr
    assert f"refused: a tool file of evil ({package}), its other tools loaded: " in text

    (problem,) = [p["problem"] for p in commands.plugin_problems(config)]
    assert problem.startswith(
        f"a tool file of plugin 'evil' (aishell.tools) of package {package} was refused; "
        f"its other tools loaded: {failed['file']}: risk_level"
    )
    assert "skipped" not in problem
