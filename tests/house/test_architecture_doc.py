"""docs/architecture.md is drawn from the code as it is: every module, package and
function it names exists, and no module is over the size the doc promises."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import aishell
from tests.conftest import REPO

DOC = (REPO / "docs" / "architecture.md").read_text()
PACKAGE = REPO / "aishell"
# Dotted names in the run's flow and in backticks: `commands.run_job`, Executor.execute.
DOTTED = re.compile(r"\b([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\b")
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".md", ".db", ".json", ".sql")


def _modules() -> dict[str, ModuleType]:
    found = {"aishell": aishell}
    for info in pkgutil.walk_packages(aishell.__path__, "aishell."):
        if "_bundled" in info.name or ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        found[info.name] = importlib.import_module(info.name)
    return found


MODULES = _modules()
CLASSES = {
    name: value
    for module in MODULES.values()
    for name, value in vars(module).items()
    if isinstance(value, type) and getattr(value, "__module__", "").startswith("aishell")
}


def _resolves(dotted: str) -> bool:
    head, *rest = dotted.split(".")
    starts: list[object] = [m for n, m in MODULES.items() if n.rsplit(".", 1)[-1] == head]
    if head in CLASSES:
        starts.append(CLASSES[head])
    for start in starts:
        value: object = start
        for part in rest:
            value = getattr(value, part, None)
            if value is None and isinstance(start, ModuleType):
                value = MODULES.get(f"{start.__name__}.{part}")
            if value is None:
                break
        if value is not None:
            return True
    return False


def _flow() -> str:
    return DOC.split("## The flow of one run", 1)[1].split("## Layers", 1)[0]


def test_every_name_in_the_flow_of_a_run_exists() -> None:
    names = {
        m.group(1)
        for m in DOTTED.finditer(_flow())
        if not m.group(1).endswith(FILE_SUFFIXES) and not m.group(1).startswith("tools.")
    }
    assert len(names) > 20, names
    missing = sorted(n for n in names if not _resolves(n))
    assert missing == [], f"docs/architecture.md names what the code does not have: {missing}"


def test_every_file_in_the_flow_exists() -> None:
    paths = set(re.findall(r"\b([a-z_]+(?:/[a-z_]+)*\.py)\b", _flow()))
    assert paths
    missing = sorted(p for p in paths if not list(PACKAGE.rglob(p)))
    assert missing == [], missing


def test_the_package_table_names_every_package_and_each_says_what_it_holds() -> None:
    table = DOC.split("## Packages", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)/` \|", table, re.M)
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert sorted(listed) == packages
    for name in packages:
        doc = MODULES[f"aishell.{name}"].__doc__ or ""
        assert len(doc.split()) >= 15, f"aishell/{name}/__init__.py says too little of itself"


def test_no_module_is_over_the_size_the_doc_promises() -> None:
    assert "No module is over 500 lines" in DOC
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
        if "_bundled" not in path.parts
    }
    assert {p: n for p, n in sizes.items() if n > 500} == {}
