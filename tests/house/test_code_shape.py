"""The code's shape, read from its syntax: no function in aishell/ is over 60 lines, and
the modules and packages directly under aishell/, each package taken whole, import each
other without a cycle: a package's modules do not import a module that imports the
package back. (No module over 500 lines: tests/house/test_architecture_doc.py; no cycle
between single modules: tests/test_import_graph.py.)"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "aishell"
MAX_FUNCTION_LINES = 60

# Functions allowed over MAX_FUNCTION_LINES, each with why: only where splitting it
# would hide the logic. "aishell/path.py:Class.function": "the reason".
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_bundled" not in path.parts:
            yield str(path.relative_to(REPO)), ast.parse(path.read_text(), str(path))


def _functions(
    node: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method under `node`, named Class.method or outer.inner."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{child.name}", child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def _function_lengths() -> dict[str, int]:
    """Each function's lines, from its `def` to its last line (decorators not counted)."""
    return {
        f"{path}:{name}": (function.end_lineno or function.lineno) - function.lineno + 1
        for path, tree in _sources()
        for name, function in _functions(tree)
    }


def test_no_function_is_over_60_lines() -> None:
    lengths = _function_lengths()
    assert len(lengths) > 1000, "the walk found too few functions to be reading aishell/"
    too_long = {
        name: lines
        for name, lines in sorted(lengths.items())
        if lines > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS_ALLOWED
    }
    assert too_long == {}, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers named for "
        f"what they do): {too_long}"
    )


def test_every_allowed_long_function_is_still_long() -> None:
    lengths = _function_lengths()
    stale = [name for name in LONG_FUNCTIONS_ALLOWED if lengths.get(name, 0) <= MAX_FUNCTION_LINES]
    assert stale == [], f"LONG_FUNCTIONS_ALLOWED names functions no longer over: {stale}"


def _node(module: str) -> str | None:
    """The module or package directly under aishell that `module` is or is in."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "aishell" and len(parts) > 1 else None


def _module_level_imports(tree: ast.Module) -> Iterator[str]:
    """What a module imports when it is imported: not inside functions, not under
    TYPE_CHECKING; `from a import b` yields a and a.b (b may be a module)."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))


def _import_graph() -> dict[str, set[str]]:
    names = {
        ".".join(Path(path).with_suffix("").parts).removesuffix(".__init__"): tree
        for path, tree in _sources()
    }
    nodes = {node for name in names if (node := _node(name))}
    graph: dict[str, set[str]] = {node: set() for node in nodes}
    for name, tree in names.items():
        source = _node(name)
        for imported in _module_level_imports(tree):
            target = _node(imported)
            if source and target in nodes and target != source:
                graph[source].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, as the path that closes it; [] when there is none."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for after in sorted(graph[node]):
            if found := visit(after, [*path, node]):
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        if found := visit(start, []):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_aishell_modules_and_packages_import_each_other_without_a_cycle() -> None:
    graph = _import_graph()
    assert {"aishell.registry", "aishell.handlers", "aishell.cli"} <= set(graph)
    assert "aishell.tool" in graph["aishell.registry"]
    cycle = _cycle(graph)
    assert cycle == [], (
        "aishell's modules and packages import each other in a cycle: "
        + " -> ".join(cycle)
        + "; import a name from the module that defines it, or move it below both"
    )
