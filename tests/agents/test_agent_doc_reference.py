"""The guide for writing an agent (docs/architecture.md) lists every field of `Option`,
every kind a job option may be and every field of `DraftLimits`, each with the type and
default the code gives it: a field or kind added to the code and not to the guide, or
one whose type or default changed, fails here."""

from __future__ import annotations

import re
from dataclasses import MISSING, Field, fields

from aishell.agents.base import DraftLimits
from aishell.config.options import KINDS, NUMERIC_KINDS, Option
from tests.conftest import REPO

DOC = (REPO / "docs" / "architecture.md").read_text()


def _table(heading: str) -> dict[str, list[str]]:
    """The rows of the table under `### heading`, by their first cell (its backticks off)."""
    section = DOC.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def _default(field: Field[object]) -> str:
    """A field's default as the guide writes it."""
    if field.default is MISSING and field.default_factory is MISSING:
        return "(none: given)"
    value = field.default_factory() if field.default is MISSING else field.default  # type: ignore[misc]
    return f"`{value!r}`".replace("''", '""')


def _fields_as_documented(cls: type, heading: str) -> None:
    rows = _table(heading)
    assert list(rows) == [f.name for f in fields(cls)], heading
    for field in fields(cls):
        kind, default = rows[field.name][0], rows[field.name][1]
        assert kind == f"`{field.type}`", (field.name, kind)
        assert default == _default(field), (field.name, default)


def test_every_field_of_option_is_in_the_guide_with_its_type_and_default() -> None:
    _fields_as_documented(Option, "Job options: the fields of an `Option`")


def test_every_field_of_draft_limits_is_in_the_guide_with_its_type_and_default() -> None:
    _fields_as_documented(DraftLimits, "A model's draft: the fields of `DraftLimits`")


def test_every_kind_of_option_is_in_the_guide_with_whether_it_takes_bounds() -> None:
    rows = _table("Job options: the kinds")
    assert list(rows) == list(KINDS)
    for kind, cells in rows.items():
        assert cells[2] == ("yes" if kind in NUMERIC_KINDS else "no"), kind
