"""aishell's packages import only downwards, in the order docs/architecture.md draws:
every import counts, at load time, inside a function or for type checking alone."""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.house.imports import Import, every_import, modules

# Highest first. A module may import its own layer's packages and any layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "cli"),
    ("render",),
    ("commands",),
    ("planners", "executor", "scheduling", "fleet", "view"),
    ("agents",),
    ("policy", "plan"),
    ("registry",),
    ("handlers",),
    ("tool", "guard"),
    ("scratch",),
    ("state",),
    ("targets",),
    ("config",),
    (
        "errors",
        "risk",
        "sqltext",
        "dialects",
        "inspection",
        "terminal",
        "units",
        "lazy",
        "files",
        "diskfaults",
        "retry",
        "signalrelay",
    ),
)
RANK = {room: rank for rank, layer in enumerate(LAYERS) for room in layer}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "aishell"


def against_the_layers(imports: list[Import]) -> list[str]:
    return [
        f"{i.path.relative_to(REPO)}:{i.line}: {room(i.importer)} imports {i.imported}"
        for i in imports
        if room(i.importer) != "aishell" and RANK[room(i.importer)] > RANK[room(i.imported)]
    ]


def test_every_room_has_a_layer() -> None:
    rooms = {room(name) for name in modules()} - {"aishell"}
    assert rooms - RANK.keys() == set()
    assert RANK.keys() - rooms == set()


def test_no_import_runs_against_the_layers() -> None:
    imports = every_import()
    assert len(imports) > 600  # the code was read
    assert against_the_layers(imports) == []


def test_an_import_against_the_layers_is_named_with_its_file_and_line() -> None:
    wrong = Import(
        "aishell.targets.x", "aishell.handlers.y", REPO / "aishell/targets/x.py", 7, (), False
    )
    right = Import(
        "aishell.handlers.y", "aishell.targets.x", REPO / "aishell/handlers/y.py", 3, (), True
    )
    assert against_the_layers([wrong, right]) == [
        "aishell/targets/x.py:7: targets imports aishell.handlers.y"
    ]


def test_the_architecture_doc_draws_the_same_layers() -> None:
    """The picture at the top of docs/architecture.md lists the layers in this order."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    picture = doc.split("```text", 1)[1].split("```", 1)[0]
    drawn = [
        tuple(sorted(re.findall(r"[a-z_]+", line)))
        for line in picture.splitlines()
        if line.strip() and not set(line.strip()) <= set("│↓|v ")
    ]
    assert drawn == [tuple(sorted(layer)) for layer in LAYERS]
