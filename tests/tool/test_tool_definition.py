"""A tool definition file read through its model: a wrong shape anywhere, however deep,
is one line naming the file and the key."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell.errors import CatalogError
from aishell.registry import load_tool
from aishell.tool.definition import ToolFile, read_tool_file
from tests.registry.test_registry import tool


def _refusal(tmp_path: Path, data: Any) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError) as raised:
        load_tool(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


def _sql(**spec: Any) -> dict[str, Any]:
    return tool(implementations={"sqlite": {"sql": "SELECT count(*) AS n FROM {table}", **spec}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Each of these stopped the load with a TypeError and no file named.
        (_sql(sql=5), "implementations.sqlite.sql must be a statement or a list of statements"),
        (tool(required_capabilities=5), "required_capabilities must be a list of capabilities"),
        (_sql(sql=["SELECT 1", 7]), "implementations.sqlite.sql must be a statement or a list"),
        (_sql(result=["one"]), "implementations.sqlite.result must be none, one or all"),
        (_sql(check_sql={"a": 1}), "implementations.sqlite.check_sql must be one read-only query"),
        (tool(examples=[{"params": {"table": "t"}}, "t"]), "examples[1] must have params"),
        (
            tool(implementations={"sqlite": {"handler": "report.x", "result": "one"}}),
            "implementations.sqlite: a handler takes no other keys",
        ),
        (
            tool(implementations={"sqlite": {"sql": "SELECT 1", "handler": "report.x"}}),
            "implementations.sqlite: give exactly one of sql or handler",
        ),
        (_sql(rows="all"), "implementations.sqlite: unknown keys: rows"),
        (tool(implementations={"oracle": {"sql": "SELECT 1"}}), "implementations: unknown dialect"),
        (tool(max_retries=True), "max_retries must be a whole number, 0 or more"),
        (tool(idempotent="yes"), "idempotent must be true or false"),
    ],
)
def test_a_wrong_shape_at_a_nested_key_names_that_key(tmp_path, data, message):
    assert _refusal(tmp_path, data).startswith(message)


def test_unknown_and_missing_keys_are_each_named_together(tmp_path):
    data = tool(zeta=1, alpha=2)
    del data["examples"], data["returns"]
    assert _refusal(tmp_path, data) == "unknown keys: alpha, zeta"
    del data["zeta"], data["alpha"]
    assert _refusal(tmp_path, data) == "missing required keys: examples, returns"


def test_every_field_of_the_model_says_what_its_error_says():
    """A field's description is the words of its error: a field with limits or a type
    narrower than any has one."""
    for name, field in ToolFile.model_fields.items():
        if name in ("category", "risk_level", "required_capabilities", "notes"):
            continue  # their validators word their own errors
        if name in ("risks", "mitigations", "locks", "report"):
            continue  # tool.risks, tool.locks and tool.report check these
        assert field.description, name


def test_the_model_reads_every_bundled_tool():
    from aishell.config.resources import bundled_catalog_dir

    for path in sorted(bundled_catalog_dir().glob("*.yaml")):
        read = read_tool_file(yaml.safe_load(path.read_text()))
        assert isinstance(read, ToolFile), (path, read)
