"""Where each name of aishell is defined, and through which module each is imported."""

from __future__ import annotations

import ast
from pathlib import Path


def defined_in(path: Path) -> set[str]:
    """The names a module defines itself at its top level (not those it imports)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            found |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            found.add(node.target.id)
        elif isinstance(node, ast.TypeAlias) if hasattr(ast, "TypeAlias") else False:
            found.add(node.name.id)  # type: ignore[attr-defined]
        elif isinstance(node, (ast.If, ast.Try)):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
                continue
            nodes += node.body + node.orelse
            if isinstance(node, ast.Try):
                nodes += [s for h in node.handlers for s in h.body] + node.finalbody
    return found


def lazy_names(path: Path) -> set[str]:
    """The names a lazy face (aishell.lazy) hands out from its submodules."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and str(key.value).startswith("aishell.")
                    and isinstance(value, ast.Tuple)
                ):
                    names |= {e.value for e in value.elts if isinstance(e, ast.Constant)}
    return names
