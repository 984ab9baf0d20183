"""A SQLite plan of many tables reads the whole file's pages once instead of finding each
b-tree by name (each lookup reads sqlite_schema through); either way of reading gives
the same preview, down to the scattered index it rebuilds."""

from __future__ import annotations

from typing import Any

import pytest

from aishell import commands
from aishell.handlers.sqlite import catalog


def _preview(config: Any, monkeypatch: pytest.MonkeyPatch, lookups_per_page: int) -> Any:
    monkeypatch.setattr(catalog, "_LOOKUPS_PER_PAGE", lookups_per_page)
    found: list[bool] = []
    chose = catalog._reads_whole_file

    def watched(ctx: Any, tables: int) -> bool:
        found.append(chose(ctx, tables))
        return found[-1]

    monkeypatch.setattr(catalog, "_reads_whole_file", watched)
    preview = commands.plan_job(config, "maintenance", {"type": "full"}).to_dict()
    preview.pop("plan_hash")
    return preview, found


def test_the_whole_file_read_and_the_lookups_by_name_preview_alike(
    config: Any, demo_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, chosen_whole = _preview(config, monkeypatch, 0)
    by_name, chosen_by_name = _preview(config, monkeypatch, 10**12)
    assert True in chosen_whole and True not in chosen_by_name
    assert whole == by_name
    rebuild = next(s for s in whole["steps"] if s["tool"] == "rebuild_fragmented_indexes")
    assert 'REINDEX "idx_app_logs_level"' in rebuild["sql"]
