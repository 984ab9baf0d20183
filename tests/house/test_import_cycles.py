"""aishell's modules import each other without a cycle: each can be understood, and
loaded, after the modules it imports. Every import counts: at load time, inside a
function (a lazy import is still an edge) and under `if TYPE_CHECKING:`."""

from __future__ import annotations

from tests.house.imports import every_import, modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_no_module_of_aishell_imports_itself_through_others() -> None:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    imports = every_import()
    for i in imports:
        graph[i.importer].add(i.imported)
    indented = [i for i in imports if i.path.read_text().splitlines()[i.line - 1][:1] == " "]
    assert indented  # the imports inside functions were read
    assert sum(len(edges) for edges in graph.values()) > 600
    assert _cycles(graph) == []


def test_a_cycle_is_found() -> None:
    """The check itself: two modules importing each other are a cycle."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
