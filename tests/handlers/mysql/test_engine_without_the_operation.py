"""A table whose engine has no ANALYZE or OPTIMIZE (MEMORY, CSV), which the server would
answer with a note alone ("The storage engine for the table doesn't support analyze"),
is sent neither. The step says so, skipping it with why, and the report counts only what
the server did: no statistics update, rebuild or compaction of it is claimed."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.guard.test_guard import execute
from tests.helpers import use_target

# MEMORY keeps the space of deleted rows (DATA_FREE) until the table is copied: over the
# threshold, a rebuild and a compaction are planned for it.
MEMORY, CSV, INNODB = "t_memory", "t_csv", "t_innodb"


def test_a_table_the_engine_cannot_analyze_or_optimize_is_skipped_not_done(
    home: Path, mysql_url: str
) -> None:
    execute(
        mysql_url,
        f"CREATE TABLE {MEMORY} (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=MEMORY",
        f"INSERT INTO {MEMORY} SELECT seq, REPEAT('x', 200) FROM seq_1_to_20000",
        f"DELETE FROM {MEMORY} WHERE id % 2 = 0",
        f"CREATE TABLE {CSV} (id INT NOT NULL) ENGINE=CSV",
        f"INSERT INTO {CSV} VALUES (1), (2)",
        f"CREATE TABLE {INNODB} (id INT PRIMARY KEY) ENGINE=InnoDB",
        f"INSERT INTO {INNODB} SELECT seq FROM seq_1_to_100",
    )
    config = use_target(home, mysql_url)
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": [MEMORY, CSV, INNODB]},
        approver=PreApproved(),
    )
    assert result.status == "completed", result.error
    outputs = {s.tool: s.output for s in result.steps}

    stats = outputs["update_table_statistics"]
    assert stats["tables_done"] == [INNODB]
    assert stats["tables_analyzed"] == 1
    said = {s["table"]: s["reason"] for s in stats["skipped_tables"]}
    assert set(said) == {MEMORY, CSV}
    assert all("keeps no statistics" in why and "not sent" in why for why in said.values())

    # The rebuild and the compaction the MEMORY table's free space called for: neither
    # was done, and neither is counted.
    for tool in ("rebuild_fragmented_indexes", "optimize_table"):
        skipped = {s["table"]: s["reason"] for s in outputs[tool]["skipped_tables"]}
        assert "MEMORY engine has no OPTIMIZE TABLE" in skipped[MEMORY], (tool, skipped)
        assert MEMORY not in outputs[tool]["tables_done"]
    assert outputs["rebuild_fragmented_indexes"]["indexes_rebuilt"] == 0

    report = result.report
    assert report["statistics_updated"] == 1
    assert report["indexes_rebuilt"] == 0
    assert report["tables_optimized"] == 0
    assert {(s["tool"], s["table"]) for s in report["skipped"]} >= {
        ("update_table_statistics", MEMORY),
        ("update_table_statistics", CSV),
        ("optimize_table", MEMORY),
        ("rebuild_fragmented_indexes", MEMORY),
    }
