"""Each name of aishell arrives by one door: it is imported from the module that defines
it, or, for the names a lazy face hands out (commands, render, executor), from that
face and only from it. No module re-exports another's names for convenience."""

from __future__ import annotations

from functools import cache

from tests.conftest import REPO
from tests.house.imports import Import, every_import, modules
from tests.house.names import defined_in, lazy_names


# Read when a test first asks, not at the module's import: every xdist worker imports
# this module to collect it, and parsing every aishell module there cost each about 4 s
# of CPU, for tests that run in one of them.
@cache
def defined() -> dict[str, set[str]]:
    """The names each aishell module defines itself."""
    return {name: defined_in(path) for name, path in modules().items()}


@cache
def faces() -> dict[str, set[str]]:
    """The lazy faces, each with the names it hands out."""
    found = {name: lazy_names(path) for name, path in modules().items()}
    return {name: names for name, names in found.items() if names}


def _where(i: Import) -> str:
    return f"{i.path.relative_to(REPO)}:{i.line}"


def reexported(imports: list[Import]) -> list[str]:
    return [
        f"{_where(i)}: {name} is not defined in {i.imported}"
        for i in imports
        for name in i.names
        if name not in defined()[i.imported] and name not in faces().get(i.imported, ())
    ]


def behind_the_face(imports: list[Import]) -> list[str]:
    """A face's name imported from its own module by a module outside the face."""
    found = []
    for i in imports:
        for face, names in faces().items():
            inside = i.importer == face or i.importer.startswith(face + ".")
            if i.imported.startswith(face + ".") and not inside:
                found += [f"{_where(i)}: {n} comes through {face}" for n in i.names if n in names]
    return found


def test_the_faces_were_found() -> None:
    assert {"aishell.commands", "aishell.render", "aishell.executor"} <= faces().keys()


def test_no_name_is_imported_from_a_module_that_only_passes_it_on() -> None:
    imports = every_import()
    assert sum(len(i.names) for i in imports) > 800
    assert reexported(imports) == []


def test_a_lazy_face_is_the_only_door_of_its_names() -> None:
    assert behind_the_face(every_import()) == []


def test_a_name_passed_on_is_named_with_its_file_and_line() -> None:
    passed = Import(
        "aishell.cli", "aishell.registry", REPO / "aishell/cli/x.py", 4, ("Path",), False
    )
    assert reexported([passed]) == ["aishell/cli/x.py:4: Path is not defined in aishell.registry"]
