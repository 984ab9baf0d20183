"""The built wheel carries the catalog and default config and works outside the repo."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

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


def test_wheel_installs_in_a_fresh_venv_and_runs_from_elsewhere(tmp_path):
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
    names = zipfile.ZipFile(wheel).namelist()
    catalog = {Path(n).name for n in names if n.startswith("aishell/_bundled/tools/")}
    assert catalog == {p.name for p in (REPO / "tools").glob("*.yaml")}
    assert "aishell/_bundled/config/aishell.yaml" in names

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
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISHELL_")}
    env.pop("PYTHONPATH", None)
    aishell = str(venv / "bin" / "aishell")

    def run(*args):
        done = subprocess.run(
            [aishell, *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    tools = json.loads(run("tools", "list", "--json"))["tools"]
    assert {t["name"] for t in tools} >= {"optimize_table", "generate_maintenance_report"}
    run("demo", "--log-rows", "3000")
    result = json.loads(run("run", "maintenance", "--type", "full", "--json"))
    assert result["status"] == "completed"
    assert all(s["status"] == "succeeded" for s in result["steps"])
    assert (elsewhere / "state.db").is_file() and (elsewhere / "demo.db").is_file()
    # The installed package, not the repository, answered.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import aishell; print(aishell.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(venv) in where
