"""A virtual table (FTS5, R-Tree) keeps its data in shadow tables, b-trees of their own,
which PRAGMA integrity_check of the virtual table alone does not read: before SQLite
3.44 it checks nothing and answers ok. The corruption check reads them under the virtual
table's name, so damage there is found; a repair does not send the REINDEX that cannot
rebuild a virtual table, and says what would."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aishell import commands
from aishell.policy.approvers import PreApproved
from tests.helpers import one_step_plan, query, use_target


def _made(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
        conn.execute("CREATE VIRTUAL TABLE spots USING rtree(id, x0, x1)")
        rows = [(f"note {i} about maintenance {'x' * 200}",) for i in range(3000)]
        conn.executemany("INSERT INTO notes (body) VALUES (?)", rows)
        conn.executemany("INSERT INTO docs (body) VALUES (?)", rows)
        conn.executemany("INSERT INTO spots VALUES (?, ?, ?)", [(i, i, i + 1) for i in range(3000)])
    conn.close()


def _damage(path: Path, btree: str) -> None:
    """A leaf page of the b-tree made unreadable: its page type byte cleared."""
    [(page,)] = query(
        path,
        "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' "
        "ORDER BY pageno LIMIT 1 OFFSET 1",
        btree,
    )
    [(size,)] = query(path, "PRAGMA page_size")
    with path.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\x00")


def _check(home: Path, path: Path, tables: list[str]) -> dict:
    config = use_target(home, f"sqlite:///{path}")
    params = {"tables": tables}
    plan = one_step_plan("maintenance", "db", "sqlite", "check_table_corruption", params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    return dict(result.steps[0].output)


@pytest.mark.parametrize(("virtual", "shadow"), [("docs", "docs_content"), ("spots", "spots_node")])
def test_damage_in_a_shadow_table_is_the_virtual_table_s(
    home: Path, tmp_path: Path, virtual: str, shadow: str
) -> None:
    path = tmp_path / "virtual.db"
    _made(path)
    assert _check(home, path, [virtual, "notes"])["corrupted_tables"] == []
    _damage(path, shadow)
    found = _check(home, path, [virtual, "notes"])
    assert found["corrupted_tables"] == [virtual], found
    assert found["status_by_table"]["notes"] == "ok"


def test_the_check_shows_each_shadow_table_it_reads(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "virtual.db"
    _made(path)
    config = use_target(home, f"sqlite:///{path}")
    preview = commands.plan_job(config, "maintenance", {"type": "emergency", "tables": ["docs"]})
    shown = preview.steps[1].sql
    for name in ("docs", "docs_content", "docs_data", "docs_idx", "docs_docsize", "docs_config"):
        assert f'PRAGMA integrity_check("{name}")' in shown or (
            f"PRAGMA integrity_check({name})" in shown
        ), shown


def test_a_virtual_table_is_not_sent_to_reindex(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "virtual.db"
    _made(path)
    config = use_target(home, f"sqlite:///{path}")
    params = {"tables": ["docs", "notes"], "create_backup": False}
    plan = one_step_plan("maintenance", "db", "sqlite", "repair_corrupted_tables", params)
    result = commands.apply_plan(config, plan, approver=PreApproved())
    assert result.status == "completed", result.error
    out = result.steps[0].output
    assert out["repaired_tables"] == ["notes"], out
    [skipped] = out["skipped_tables"]
    assert skipped["table"] == "docs"
    assert "virtual table" in skipped["reason"] and "'rebuild'" in skipped["reason"]
