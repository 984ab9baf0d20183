"""Each table's maintenance is planned for what its engine does. A statement the engine
lacks (MEMORY, CSV and BLACKHOLE have no OPTIMIZE TABLE and keep no statistics ANALYZE
TABLE refreshes; of an engine aishell does not know, neither is sent) is not sent, and
the preview says so instead of showing it; an InnoDB table with a FULLTEXT index, which
InnoDB rebuilds only by a copy that holds off its writes (the online ALTER TABLE ...
LOCK=NONE is refused), is not rebuilt by the online rebuild step; where OPTIMIZE TABLE
holds a table whole, or ANALYZE TABLE holds off its writes, the preview says so beside
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, run_sql, use_target


def _filled(table: str, engine: str, extra: str = "", delete: bool = True) -> list[str]:
    """A table of the engine, four rows in five deleted where the engine allows it."""
    made = [
        f"CREATE TABLE {table} (id INT NOT NULL, v VARCHAR(200) NOT NULL{extra}) ENGINE={engine}",
        f"INSERT INTO {table} (id, v) SELECT seq, REPEAT('x', 200) FROM seq_1_to_20000",
    ]
    return made + ([f"DELETE FROM {table} WHERE id % 5 <> 0"] if delete else [])


def _statements(preview: Any) -> list[str]:
    return [line for step in preview.steps for line in step.sql]


def _sent(lines: list[str], table: str) -> list[str]:
    """The statements (not the comments) that name the table."""
    return [s for s in lines if not s.startswith("--") and f"`{table}`" in s]


def test_nothing_is_sent_to_an_engine_without_the_operation(home: Path, mysql_url: str) -> None:
    run_sql(
        mysql_url,
        *_filled("w_memory", "MEMORY", ", PRIMARY KEY (id)"),
        *_filled("w_base", "MyISAM", delete=False),
        # A MERGE table over it: an engine whose statements aishell does not know.
        "CREATE TABLE w_merge (id INT NOT NULL, v VARCHAR(200) NOT NULL) "
        "ENGINE=MRG_MyISAM UNION=(w_base)",
        *_filled("w_csv", "CSV"),
        *_filled("w_innodb", "InnoDB", ", PRIMARY KEY (id)"),
    )
    config = use_target(home, mysql_url)
    job = {"type": "full", "tables": ["w_memory", "w_merge", "w_csv", "w_innodb"]}
    preview = commands.plan_job(config, "maintenance", job)
    lines = _statements(preview)
    for table in ("w_memory", "w_merge", "w_csv"):
        assert not any(
            s.startswith(("ANALYZE", "OPTIMIZE", "ALTER")) for s in _sent(lines, table)
        ), (table, lines)
    assert any("w_memory not rebuilt: the MEMORY engine has no OPTIMIZE TABLE" in s for s in lines)
    assert any("ANALYZE TABLE of w_csv not sent" in s for s in lines), lines
    assert any("w_merge not sent: its engine is MRG_MyISAM" in s for s in lines), lines
    assert any(s.startswith("ANALYZE TABLE") and "`w_innodb`" in s for s in lines), lines

    result = commands.run_job(config, "maintenance", job, approver=PreApproved())
    assert result.status == "completed", result.error
    stats = next(s.output for s in result.steps if s.tool == "update_table_statistics")
    assert stats["tables_done"] == ["w_innodb"]
    said = {s["table"]: s["reason"] for s in stats["skipped_tables"]}
    assert set(said) == {"w_memory", "w_merge", "w_csv"}
    assert all("not sent" in why for why in said.values()), said


@pytest.mark.parametrize("engine", ["Aria", "MyISAM"])
def test_the_preview_names_the_whole_table_lock_beside_optimize(
    home: Path, mysql_url: str, engine: str
) -> None:
    table = f"w_{engine.lower()}"
    run_sql(mysql_url, *_filled(table, engine))
    config = use_target(home, mysql_url)
    preview = _preview_one(config, "optimize_table", {"table": table, "fragmentation_threshold": 0})
    lines = preview.steps[0].sql
    at = next(i for i, s in enumerate(lines) if s.startswith("OPTIMIZE TABLE"))
    assert any(
        f"{table} ({engine}): no read or write of it until OPTIMIZE TABLE ends" in s
        for s in lines[:at]
    ), lines


def test_the_preview_names_the_tables_whose_analyze_holds_off_writes(
    home: Path, mysql_url: str
) -> None:
    """MyISAM and Aria take their table read lock for ANALYZE TABLE (writers wait);
    InnoDB samples under its row versions and lets writes go on."""
    run_sql(
        mysql_url,
        *_filled("w_isam", "MyISAM", delete=False),
        *_filled("w_aria", "Aria", delete=False),
        *_filled("w_inno", "InnoDB", ", PRIMARY KEY (id)", delete=False),
    )
    config = use_target(home, mysql_url)
    tables = ["w_isam", "w_inno", "w_aria"]
    lines = _preview_one(config, "update_table_statistics", {"tables": tables}).steps[0].sql
    at = next(i for i, s in enumerate(lines) if s.startswith("ANALYZE TABLE"))
    notes = [s for s in lines[:at] if "ANALYZE TABLE ends" in s]
    assert notes == [
        "-- w_isam (MyISAM), w_aria (Aria): writes to each wait until ANALYZE TABLE ends "
        "(the engine's table read lock); reads go on"
    ], lines
    # An InnoDB table alone: no such line.
    alone = _preview_one(config, "update_table_statistics", {"table": "w_inno"}).steps[0].sql
    assert not any("ANALYZE TABLE ends" in s for s in alone), alone


def _preview_one(config: Any, tool: str, params: dict[str, Any]) -> Any:
    """The preview of a plan of one step, as `aishell plan` shows a plan's."""
    from aishell.commands.previews import preview_plan
    from aishell.commands.tools import load_catalog
    from aishell.targets.engines import open_target

    plan = one_step_plan("maintenance", "db", "mysql", tool, params)
    handle = open_target(config, None, read_only=True)
    try:
        return preview_plan(config, load_catalog(config), handle, plan, "moderate")
    finally:
        handle.close()


@pytest.mark.parametrize(
    ("extra", "index"),
    [
        (", FULLTEXT KEY w_text_v (v)", "FULLTEXT index w_text_v"),
        (
            ", g POINT NOT NULL DEFAULT (POINT(1, 1)), SPATIAL KEY w_text_g (g)",
            "SPATIAL index w_text_g",
        ),
    ],
)
def test_an_innodb_table_with_an_index_it_cannot_rebuild_online_is_not_rebuilt(
    home: Path, mysql_url: str, extra: str, index: str
) -> None:
    run_sql(
        mysql_url,
        *_filled("w_text", "InnoDB", f", PRIMARY KEY (id){extra}"),
        *_filled("w_plain", "InnoDB", ", PRIMARY KEY (id)"),
    )
    config = use_target(home, mysql_url)
    params = {"tables": ["w_text", "w_plain"], "fragmentation_threshold": 0, "min_pages": 1}
    plan = one_step_plan("maintenance", "db", "mysql", "rebuild_fragmented_indexes", params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert out["tables_done"] == ["w_plain"], out
    [skipped] = out["skipped_tables"]
    assert skipped["table"] == "w_text"
    assert index in skipped["reason"] and "not rebuilt online" in skipped["reason"]

    # OPTIMIZE TABLE rebuilds it holding off its writes: its preview says so.
    preview = _preview_one(
        config, "optimize_table", {"table": "w_text", "fragmentation_threshold": 0}
    )
    lines = preview.steps[0].sql
    at = next(i for i, s in enumerate(lines) if s.startswith("OPTIMIZE TABLE"))
    assert any(
        index in s and "writes to it wait until OPTIMIZE TABLE ends" in s for s in lines[:at]
    ), lines


@pytest.mark.parametrize("tool", ["optimize_table", "rebuild_fragmented_indexes"])
def test_a_steps_innodb_tables_indexes_it_cannot_rebuild_online_are_read_once(
    home: Path, mysql_url: str, tool: str
) -> None:
    from tests.targets.test_catalog_round_trips import sent_to

    tables = ["w_one", "w_two", "w_three", "w_four"]
    run_sql(
        mysql_url,
        *_filled("w_one", "InnoDB", ", PRIMARY KEY (id), FULLTEXT KEY w_one_v (v)"),
        *[s for t in tables[1:] for s in _filled(t, "InnoDB", ", PRIMARY KEY (id)")],
    )
    config = use_target(home, mysql_url)
    params: dict[str, Any] = {"tables": tables, "fragmentation_threshold": 0}
    if tool == "rebuild_fragmented_indexes":
        params["min_pages"] = 1
    with sent_to(mysql_url) as sent:
        preview = _preview_one(config, tool, params)
    asked = [sql for sql, _ in sent if "INDEX_TYPE IN ('FULLTEXT'" in sql]
    # One read for the step, whatever the number of its tables.
    assert len(asked) == 1, asked
    shown = "\n".join(_statements(preview))
    assert "FULLTEXT index w_one_v" in shown, shown
