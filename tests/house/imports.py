"""Every import of one aishell module by another, read from the source: at load time,
inside functions and under `if TYPE_CHECKING:` alike, each with its file and line."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "aishell"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name
    path: Path
    line: int
    names: tuple[str, ...]  # names taken from `imported` (empty for `import x`)
    typing_only: bool


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if "migrations" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _typing_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            for inner in node.body:
                lines |= {n.lineno for n in ast.walk(inner) if hasattr(n, "lineno")}
    return lines


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """`from package import module` imports the module; `from module import name` the
    module. Relative imports are resolved against the importer's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing = _typing_lines(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.append(
                        Import(name, alias.name, path, node.lineno, (), node.lineno in typing)
                    )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            plain: list[str] = []
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(name, sub, path, node.lineno, (), node.lineno in typing))
                else:
                    plain.append(alias.name)
            if plain and base in known:
                found.append(
                    Import(name, base, path, node.lineno, tuple(plain), node.lineno in typing)
                )
    return [i for i in found if i.imported != name]


def every_import() -> list[Import]:
    """Every import of one aishell module by another (a new list each call)."""
    return list(_every_import())


# Parsed once per process: several house tests ask, and the source does not change while
# they run.
@cache
def _every_import() -> tuple[Import, ...]:
    known = modules()
    return tuple(i for name, path in known.items() for i in imports_of(name, path, known))
