"""Every `aishell.yaml` block the docs show loads as the config it says it is.

A ```yaml block of the README or docs/*.md whose top-level keys are all keys of
`aishell.yaml` is a piece of one: pasted as written over the shipped config (its keys
replace the shipped ones; the docs' example target `shop` is there for a block that
names it), the file is loaded as any config is, so a key the docs name that the config
does not take, or a value it refuses, fails with the file and line. docs/guide.md's
block is loaded by tests/house/test_guide.py as the guide runs. Where a block offers
alternatives (a `# or` line), each is loaded on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell.config.files import parse_yaml
from aishell.config.models import MainConfig, load_config
from aishell.errors import ConfigError
from tests.helpers import read_yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    REPO / "README.md",
    *sorted(p for p in (REPO / "docs").glob("*.md") if p.name not in ("cli.md", "guide.md")),
]
BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```", re.S | re.M)
ALTERNATIVE = re.compile(r"^[ \t]*# or[ \t]*\n", re.M)
# The target the docs' examples maintain (the guide's database), for blocks that name it.
EXAMPLE_TARGETS = {"shop": {"url": "sqlite:///shop.db"}}


def config_blocks() -> Iterator[tuple[str, str]]:
    """(file:line, block) for each block of the docs made of aishell.yaml's keys."""
    for path in DOCS:
        text = path.read_text()
        for found in BLOCK.finditer(text):
            block = found.group(1)
            data = parse_yaml(block.encode(), path)
            if isinstance(data, dict) and set(data) <= set(MainConfig.model_fields):
                line = text.count("\n", 0, found.start()) + 1
                yield f"{path.relative_to(REPO)}:{line}", block


def alternatives(block: str) -> list[str]:
    """The block, or each of the alternatives its `# or` lines part, with the lines
    before the first alternative's (the top-level key) kept for each."""
    parts = ALTERNATIVE.split(block)
    if len(parts) == 1:
        return [block]
    head, first = re.match(r"(\S[^\n]*\n)(.*)", parts[0], re.S).groups()  # type: ignore[union-attr]
    return [head + first, *(head + part for part in parts[1:])]


BLOCKS = list(config_blocks())


def test_the_docs_show_config_blocks():
    assert len(BLOCKS) >= 10, [where for where, _ in BLOCKS]


@pytest.mark.parametrize(("where", "block"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_a_config_block_of_the_docs_loads(home: Path, where: str, block: str):
    path = home / "config" / "aishell.yaml"
    shipped: dict[str, Any] = read_yaml(path)
    shipped["targets"].update(EXAMPLE_TARGETS)
    for each in alternatives(block):
        given = parse_yaml(each.encode(), path)
        rest = {k: v for k, v in shipped.items() if k not in given}
        if "targets" in given and "default_target" not in given:
            rest["default_target"] = next(iter(given["targets"]))
        # The block as written (YAML it parses its own way: `on:` is a key, not true).
        path.write_text(each + yaml.safe_dump(rest))
        try:
            load_config(home=home)
        except ConfigError as exc:
            pytest.fail(f"{where}: {exc}")


def test_alternatives_are_loaded_each_on_its_own():
    block = "web:\n  token_env: X   # one\n  # or\n  token_file: f\n"
    assert alternatives(block) == ["web:\n  token_env: X   # one\n", "web:\n  token_file: f\n"]
