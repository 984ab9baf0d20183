"""The command line starts without its heavy libraries: `aishell --help` (and every
command's help) imports none of SQLAlchemy, the model client, the metrics library, the
SQL parser or the config's models; each command imports what it uses when it runs.
How fast that is, bench/startup.py measures; here only what is imported."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HEAVY = (
    "sqlalchemy",
    "ollama",
    "prometheus_client",
    "sqlglot",
    "pydantic",
    "yaml",
    "rich",
    "psycopg",
    "pymysql",
    "apscheduler",
    "httpx",
    "tenacity",
    "starlette",
    "uvicorn",
    "jinja2",
)

# Run in a fresh interpreter: this test process has imported everything already.
PROBE = """
import json, sys
import click
from aishell.cli import cli

def helps(command, ctx):
    yield command.get_help(ctx)
    for name, sub in getattr(command, "commands", {}).items():
        yield from helps(sub, click.Context(sub, info_name=name, parent=ctx))

shown = list(helps(cli, click.Context(cli, info_name="aishell")))
try:
    cli(["--help"], prog_name="aishell")
except SystemExit as exc:
    assert exc.code == 0, exc.code
heavy = json.loads(sys.argv[1])
print(json.dumps({
    "helps": len(shown),
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
}))
"""


def _probe(code: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(HEAVY)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_help_of_every_command_imports_no_heavy_library() -> None:
    found = _probe(PROBE)
    assert found["helps"] > 40  # every group and command was asked for its help
    assert found["heavy"] == []


def test_importing_the_command_line_imports_no_heavy_library() -> None:
    code = (
        "import json, sys; import aishell.cli\n"
        'print(json.dumps({"heavy": sorted(m for m in sys.modules '
        'if m.split(".")[0] in json.loads(sys.argv[1]))}))\n'
    )
    assert _probe(code)["heavy"] == []


def test_a_command_that_runs_imports_what_it_uses() -> None:
    """The other side: the lazy names do resolve, so a command is not left without its
    library (the probe sees SQLAlchemy once a command's function is looked up)."""
    code = (
        "import json, sys\n"
        "from aishell import commands\n"
        "commands.run_job\n"
        'print(json.dumps({"heavy": sorted({m.split(".")[0] for m in sys.modules '
        'if m.split(".")[0] in json.loads(sys.argv[1])})}))\n'
    )
    assert "sqlalchemy" in _probe(code)["heavy"]


@pytest.mark.parametrize("package", ["aishell.commands", "aishell.render", "aishell.executor"])
def test_every_lazy_name_is_its_modules_own(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        _ = module.not_a_name


def test_a_lazy_package_whose_names_differ_from_its_all_fails_to_import() -> None:
    from aishell.lazy import exports

    with pytest.raises(ImportError, match=r"differ: \['missing'\]"):
        exports("aishell.example", ["present", "missing"], {"aishell.x": ("present",)})


def test_a_plan_by_the_rules_imports_no_model_client(tmp_path: Path) -> None:
    """Only a plan the model drafts needs the model's client (and its HTTP library), and
    only a target of an engine needs its driver."""
    code = (
        "import json, sys\n"
        "from aishell.cli import cli\n"
        "try:\n"
        f"    cli(['--home', {str(tmp_path)!r}, 'plan', 'maintenance', '--type', 'quick'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        'print(json.dumps({"heavy": sorted({m.split(".")[0] for m in sys.modules '
        'if m.split(".")[0] in json.loads(sys.argv[1])})}))\n'
    )
    for setup in (["init"], ["demo", "--log-rows", "100", "--users", "50", "--orders", "100"]):
        subprocess.run(
            [sys.executable, "-m", "aishell", "--home", str(tmp_path), *setup],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            check=True,
            timeout=120,
        )
    heavy = _probe(code)["heavy"]
    assert "sqlalchemy" in heavy  # it did plan, on the demo target
    assert "ollama" not in heavy and "httpx" not in heavy, heavy
    # Nor the drivers of the other engines: the demo target is SQLite.
    assert "psycopg" not in heavy and "pymysql" not in heavy, heavy
