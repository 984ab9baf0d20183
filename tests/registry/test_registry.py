from pathlib import Path
from typing import Any

import pytest
import yaml

from aishell.config.kinds import Capability, Category
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import CatalogError, ToolNotFound
from aishell.guard.sqlcheck import write_reason
from aishell.registry import load_registry
from aishell.risk import RiskLevel

SKELETON_TOOLS = {
    "analyze_database_health": "safe",
    "count_table_rows": "safe",
    "analyze_table_fragmentation": "safe",
    "update_table_statistics": "low",
    "rebuild_fragmented_indexes": "medium",
    "optimize_table": "medium",
    "check_table_corruption": "safe",
    "repair_corrupted_tables": "high",
    "generate_maintenance_report": "safe",
}


def tool(**overrides: Any) -> dict[str, Any]:
    writes = overrides.get("risk_level", "safe") != "safe"
    base = {
        "name": "count_rows_here",
        "description": "Count rows.",
        "category": "analysis",
        "risk_level": "safe",
        # What a tool that may write must declare (tool/capabilityfloor.py).
        "required_capabilities": ["database_read", *(["database_write"] * writes)],
        "max_execution_time": 10,
        "idempotent": True,
        "params": {
            "type": "object",
            "required": ["table"],
            "properties": {"table": {"type": "string", "x-identifier": "table"}},
        },
        "returns": {"type": "object"},
        "examples": [{"params": {"table": "t"}}],
        "implementations": {
            "sqlite": {"sql": "SELECT count(*) AS n FROM {table}", "result": "one"}
        },
    }
    base.update(overrides)
    if (
        "locks" not in overrides
        and isinstance(base["implementations"], dict)
        and base["implementations"]
    ):
        # A lock on the database file per engine it implements, as SQLite's reads take.
        base["locks"] = {d: [] for d in base["implementations"]}
        if "sqlite" in base["locks"]:
            base["locks"]["sqlite"] = [{"lock": "SHARED", "object": "database file", "held": "x"}]
    return {k: v for k, v in base.items() if v is not None}


def catalog(tmp_path: Path, *tools: dict[str, Any], folder: str = "tools") -> Path:
    path = tmp_path / folder
    path.mkdir(exist_ok=True)
    for i, data in enumerate(tools):
        (path / f"{i}_{data.get('name', 'x')}.yaml").write_text(yaml.safe_dump(data))
    return path


def test_bundled_catalog_has_every_skeleton_tool_with_metadata():
    registry = load_registry([bundled_catalog_dir()])
    for name, risk in SKELETON_TOOLS.items():
        definition = registry.get(name)
        assert definition.risk_level is RiskLevel(risk)
        assert definition.description
        assert definition.examples
        assert "sqlite" in definition.implementations
        assert definition.max_execution_time > 0
        assert definition.params["type"] == "object"
        assert definition.required_capabilities <= set(Capability)


def test_find_filters_by_category_risk_and_capabilities():
    registry = load_registry([bundled_catalog_dir()])
    safe = registry.find(max_risk=RiskLevel.SAFE)
    assert {t.name for t in safe} >= {"analyze_database_health", "check_table_corruption"}
    assert all(t.risk_level is RiskLevel.SAFE for t in safe)
    maintenance = registry.find(category=Category.MAINTENANCE)
    assert "optimize_table" in {t.name for t in maintenance}
    readers = registry.find(capabilities=[Capability.DATABASE_READ])
    assert "count_table_rows" in {t.name for t in readers}
    assert "repair_corrupted_tables" not in {t.name for t in readers}


def test_unknown_tool_suggests_the_closest():
    registry = load_registry([bundled_catalog_dir()])
    with pytest.raises(ToolNotFound, match="did you mean 'optimize_table'"):
        registry.get("optimise_table")


def test_a_valid_site_tool_loads(tmp_path):
    registry = load_registry([catalog(tmp_path, tool())])
    assert registry.get("count_rows_here").risk_level is RiskLevel.SAFE


def test_a_tool_loaded_again_is_a_definition_of_its_own(tmp_path):
    folder = catalog(tmp_path, tool())
    first = load_registry([folder]).get("count_rows_here")
    first.params["properties"]["table"]["type"] = "integer"
    first.examples[0]["params"]["table"] = 7
    again = load_registry([folder]).get("count_rows_here")
    assert again.params["properties"]["table"]["type"] == "string"
    assert again.examples[0]["params"] == {"table": "t"}
    assert again.fingerprint == first.fingerprint


def test_a_tool_file_edited_between_loads_is_read_and_checked_again(tmp_path):
    folder = catalog(tmp_path, tool())
    before = load_registry([folder]).get("count_rows_here")
    path = next(folder.glob("*.yaml"))
    path.write_text(yaml.safe_dump(tool(description="Count the rows again.")))
    after = load_registry([folder]).get("count_rows_here")
    assert after.description == "Count the rows again."
    assert after.fingerprint != before.fingerprint
    path.write_text(yaml.safe_dump(tool(risk_level="scary")))
    for _ in range(2):  # a file that fails its checks fails every load
        with pytest.raises(CatalogError, match="risk_level: 'scary' is not one of"):
            load_registry([folder])
    path.write_text("name: [unclosed\n")
    for _ in range(2):
        with pytest.raises(CatalogError, match="invalid YAML"):
            load_registry([folder])


def test_duplicate_names_across_folders_are_refused(tmp_path):
    first = catalog(tmp_path, tool(), folder="a")
    second = catalog(tmp_path, tool(), folder="b")
    with pytest.raises(CatalogError, match="duplicate tool name 'count_rows_here'"):
        load_registry([first, second])


def test_duplicate_of_a_builtin_is_refused(tmp_path):
    extra = catalog(tmp_path, tool(name="optimize_table"))
    with pytest.raises(CatalogError, match="duplicate tool name 'optimize_table'"):
        load_registry([bundled_catalog_dir(), extra])


@pytest.mark.parametrize("missing", ["risk_level", "description"])
def test_missing_risk_or_description_is_refused(tmp_path, missing):
    with pytest.raises(CatalogError, match=f"missing required keys: {missing}"):
        load_registry([catalog(tmp_path, tool(**{missing: None}))])


def test_blank_description_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="description must be a non-empty sentence"):
        load_registry([catalog(tmp_path, tool(description="  "))])


def test_unknown_risk_level_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="risk_level: 'scary' is not one of"):
        load_registry([catalog(tmp_path, tool(risk_level="scary"))])


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM {table}",
        "UPDATE {table} SET a = 1",
        "VACUUM",
        "WITH gone AS (DELETE FROM {table} RETURNING *) SELECT count(*) FROM gone",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA optimize",
        "REINDEX {table}",
    ],
)
def test_a_safe_tool_whose_sql_writes_is_refused(tmp_path, sql):
    bad = tool(implementations={"sqlite": {"sql": sql}})
    with pytest.raises(
        CatalogError, match="risk_level: tagged safe but its sqlite implementation needs at least"
    ):
        load_registry([catalog(tmp_path, bad)])


def test_two_statements_in_one_sql_are_refused_at_any_risk(tmp_path):
    bad = tool(
        risk_level="critical",
        implementations={"sqlite": {"sql": "SELECT 1; DROP TABLE {table}"}},
    )
    with pytest.raises(CatalogError, match="more than one statement is not allowed"):
        load_registry([catalog(tmp_path, bad)])


@pytest.mark.parametrize(
    ("sql", "least", "below"),
    [
        ("DELETE FROM {table} WHERE rowid < 10", "medium", "low"),
        ("DELETE FROM {table}", "high", "medium"),
        ("DROP TABLE {table}", "critical", "high"),
    ],
)
def test_a_write_is_accepted_at_its_least_risk_and_refused_below(tmp_path, sql, least, below):
    writer = tool(risk_level=least, implementations={"sqlite": {"sql": sql}})
    assert load_registry([catalog(tmp_path, writer, folder="ok")]).get("count_rows_here")
    under = tool(risk_level=below, implementations={"sqlite": {"sql": sql}})
    with pytest.raises(CatalogError, match=f"tagged {below} but .* needs at least {least}"):
        load_registry([catalog(tmp_path, under, folder="under")])


@pytest.mark.parametrize(
    ("risk", "implementation", "declared", "needs"),
    [
        ("high", {"sql": "DELETE FROM {table}"}, ["database_read"], "needs database_write"),
        ("high", {"sql": "DELETE FROM {table}"}, ["index_manage"], "needs database_write"),
        ("high", {"sql": "UPDATE {table} SET a = 1"}, [], "needs database_write"),
        ("low", {"sql": "ANALYZE {table}"}, ["database_read"], "needs one of backup_restore"),
        (
            "low",
            {"handler": "sqlite_maintenance.update_table_statistics"},
            ["database_read", "schema_analyze"],
            "needs one of backup_create, backup_restore",
        ),
    ],
)
def test_a_tool_declaring_less_than_it_does_is_refused(
    tmp_path, risk, implementation, declared, needs
):
    """An agent's capabilities are held to what its tools declare: a declaration below
    what the tool runs would let an agent allowed to read delete rows."""
    under = tool(
        risk_level=risk, required_capabilities=declared, implementations={"sqlite": implementation}
    )
    with pytest.raises(CatalogError, match=f"required_capabilities: .* {needs}"):
        load_registry([catalog(tmp_path, under)])


@pytest.mark.parametrize(
    ("sql", "declared"),
    [
        ("ANALYZE {table}", ["index_manage"]),
        ("DELETE FROM {table}", ["database_read", "database_write"]),
        ("SELECT count(*) AS n FROM {table}", []),
    ],
)
def test_a_tool_declaring_what_it_does_loads(tmp_path, sql, declared):
    risk = "safe" if sql.startswith("SELECT") else "high"
    fits = tool(
        risk_level=risk, required_capabilities=declared, implementations={"sqlite": {"sql": sql}}
    )
    assert load_registry([catalog(tmp_path, fits)]).get("count_rows_here")


@pytest.mark.parametrize("engine", ["sqlite", "postgresql", "mysql"])
def test_a_handler_is_still_found_by_its_former_module(tmp_path, engine):
    spec = {"handler": f"{engine}_maintenance.update_table_statistics"}
    stats = tool(risk_level="low", implementations={engine: spec})
    loaded = load_registry([catalog(tmp_path, stats)]).get("count_rows_here")
    bundled = load_registry([bundled_catalog_dir()]).get("update_table_statistics")
    assert loaded.implementation(engine) is bundled.implementation(engine)


def test_missing_handler_is_refused(tmp_path):
    bad = tool(implementations={"sqlite": {"handler": "sqlite_maintenance.no_such_thing"}})
    with pytest.raises(CatalogError, match="has no handler 'no_such_thing'"):
        load_registry([catalog(tmp_path, bad)])


def test_handler_outside_the_handlers_package_is_refused(tmp_path):
    bad = tool(implementations={"sqlite": {"handler": "os.system"}})
    with pytest.raises(CatalogError, match="handler module aishell.handlers.os not found"):
        load_registry([catalog(tmp_path, bad)])


def test_a_placeholder_that_is_not_an_identifier_param_is_refused(tmp_path):
    bad = tool(implementations={"sqlite": {"sql": "SELECT * FROM {table} WHERE a = {value}"}})
    with pytest.raises(CatalogError, match=r"\{value\} is not a param marked x-identifier"):
        load_registry([catalog(tmp_path, bad)])


def test_an_example_that_does_not_match_the_params_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="examples\\[0\\].params: missing required 'table'"):
        load_registry([catalog(tmp_path, tool(examples=[{"params": {}}]))])


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(CatalogError, match="unknown keys: risk"):
        load_registry([catalog(tmp_path, tool(risk="safe"))])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM t",
        "SELECT name FROM pragma_index_list('t')",
        'PRAGMA integrity_check("t")',
        "PRAGMA main.freelist_count",
        "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    ],
)
def test_reads_are_recognised(sql):
    assert write_reason(sql, "sqlite") is None
