"""Identifiers are quoted in one place, aishell/sqltext.py: no SQL text elsewhere puts a
value between identifier quotes itself, nor doubles the quotes inside a name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "aishell"
SQL_WORDS = re.compile(r"\b(SELECT|FROM|TABLE|GRANT|INTO|UPDATE|DELETE|INDEX|ON|VACUUM|ANALYZE)\b")
QUOTES = ('"', "`")
DOUBLED = (['"', '""'], ["`", "``"])


def hand_quoted(path: Path, root: Path = REPO) -> list[str]:
    """f-strings of SQL that wrap a value in identifier quotes; quotes doubled by hand."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            literal = "".join(p.value for p in parts if isinstance(p, ast.Constant))
            for before, value, after in zip(parts, parts[1:], parts[2:], strict=False):
                if not (isinstance(value, ast.FormattedValue) and SQL_WORDS.search(literal)):
                    continue
                if (
                    isinstance(before, ast.Constant)
                    and isinstance(after, ast.Constant)
                    and str(before.value)[-1:] in QUOTES
                    and str(after.value)[:1] == str(before.value)[-1:]
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "replace"
            and [a.value for a in node.args if isinstance(a, ast.Constant)] in DOUBLED
        ):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_identifier_is_quoted_outside_sqltext() -> None:
    paths = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "sqltext.py"]
    assert len(paths) > 200
    assert [where for path in paths for where in hand_quoted(path)] == []


def test_a_name_quoted_by_hand_is_found(tmp_path: Path) -> None:
    module = tmp_path / "aishell" / "m.py"
    module.parent.mkdir()
    module.write_text(
        "a = f'SELECT count(*) FROM \"{table}\"'\n"
        "b = f'GRANT ALL ON `{db}`.* TO x'\n"
        "c = name.replace('\"', '\"\"')\n"
        "d = f'`aishell resume {run}` goes on'\n"
    )
    assert hand_quoted(module, tmp_path) == ["aishell/m.py:1", "aishell/m.py:2", "aishell/m.py:3"]
