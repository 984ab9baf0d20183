"""The web view's backups page reads only what it shows: ROWS_SHOWN target names from
`?offset=` on, with a link to the next, each target's rows counted by the store, and only
its KEPT_LOOKED newest rows read for its newest backup in place; every row it counts as
kept is one the home's key signed as it is (state/backups.py: sealed).

Before, the page read and checked every row of the catalog on each request (a catalog of
30,000 rows, all of them), and showed no target past the first ROWS_SHOWN."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from aishell.config.models import Config
from aishell.state.seals import seal
from aishell.state.signing import load_key
from aishell.state.store import StateStore
from aishell.view.pages import KEPT_LOOKED, ROWS_SHOWN, backups_page
from tests.conftest import EditConfig
from tests.fleet.builders import TARGETS, fleet_config
from tests.fleet.test_web import client

MANY = 30_000  # rows of the target `many`, its three newest unsigned
NAMED = ROWS_SHOWN + 5  # other target names, one signed row each
BOUND = 8 * 2**20  # bytes the page's reads may hold at once: far below MANY rows


def _rows(config: Config) -> dict[str, Any]:
    """The catalog: `many`'s rows, `no-signed`'s (none signed), and NAMED targets'."""
    key = load_key(config.home)
    with StateStore(config.state_url, key=key):
        pass  # the store's tables, made as any command makes them
    file = config.home / "kept.db"
    file.write_bytes(b"x" * 4096)
    rows: list[dict[str, Any]] = []

    def add(target: str, at: str, signed: bool) -> None:
        row = {
            "id": len(rows) + 1,
            "target": target,
            "run_id": None,
            "kind": "full",
            "path": str(file),
            "sha256": "ab" * 32,
            "size_bytes": 4096,
            "manifest": json.dumps({"tables": {"t": 1}}),
            "created_at": at,
            "verified_at": None,
            "verification": None,
            "deleted_at": None,
        }
        rows.append({**row, "seal": seal(key, "backup", str(row["id"]), row) if signed else None})

    for i in range(MANY):
        add("many", f"2026-01-01T00:00:00.{i:06d}+00:00", i < MANY - 3)
    for i in range(KEPT_LOOKED + 2):
        add("no-signed", f"2026-02-01T00:00:{i:02d}.000+00:00", i == 0)
    for i in range(NAMED):
        add(f"t{i:04d}", "2026-03-01T00:00:00.000+00:00", True)
    engine = create_engine(config.state_url)
    try:
        with engine.begin() as conn:
            columns = list(rows[0])
            conn.execute(
                text(
                    f"INSERT INTO backups ({', '.join(columns)}) "
                    f"VALUES ({', '.join(':' + c for c in columns)})"
                ),
                rows,
            )
    finally:
        engine.dispose()
    return {"newest_signed": rows[MANY - 4]["created_at"]}


def test_the_backups_page_pages_its_targets_and_reads_their_newest_rows(
    edit_config: EditConfig, home: Path, demo_template: Path
) -> None:
    config = fleet_config(edit_config, home, demo_template)
    made = _rows(config)
    total = len(TARGETS) + 2 + NAMED

    tracemalloc.start()
    try:
        read = backups_page(config)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BOUND, peak
    shown = {row["target"]: row for row in read["backups"]}
    assert len(shown) == ROWS_SHOWN and read["total"] == total
    # Counted by the store, signed or not; the newest kept only among signed rows.
    assert shown["many"]["recorded"] == MANY
    assert shown["many"]["newest_at"] == made["newest_signed"]
    assert shown["no-signed"]["recorded"] == KEPT_LOOKED + 2
    assert shown["no-signed"]["newest_at"] is None

    view = client(config)
    first = view.get("/backups").text
    assert f"Targets 1 to {ROWS_SHOWN} of {total}, by name." in first
    assert f'href="/backups?offset={ROWS_SHOWN}">Next targets' in first
    assert f"none signed and in place among its newest {KEPT_LOOKED}" in first
    second = view.get(f"/backups?offset={ROWS_SHOWN}").text
    assert f"Targets {ROWS_SHOWN + 1} to {total} of {total}, by name." in second
    assert f"<td>t{NAMED - 1:04d}</td>" in second and "<td>many</td>" not in second
    assert "Next targets" not in second
