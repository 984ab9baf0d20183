"""The parser's verdicts on the catalog's SQL are kept in the home's cache: a load whose
tools and code are unchanged asks the parser nothing, and gets every risk a full load
gets; a changed statement, or a cache file others could have written, is judged anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import aishell.guard.sqlcheck
import aishell.guard.statements
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import CatalogError
from aishell.registry import load_registry
from aishell.tool.verdicts import VERDICTS_ENTRY, CatalogVerdicts
from tests.registry.test_registry import tool


@pytest.fixture
def parser_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the catalog's load hands the parser."""
    calls: list[str] = []
    classify, write_reason = aishell.guard.statements.classify, aishell.guard.sqlcheck.write_reason

    def counted_classify(sql: str, dialect: str) -> Any:
        calls.append(sql)
        return classify(sql, dialect)

    def counted_write_reason(sql: str, dialect: str) -> Any:
        calls.append(sql)
        return write_reason(sql, dialect)

    monkeypatch.setattr(aishell.guard.statements, "classify", counted_classify)
    monkeypatch.setattr(aishell.guard.sqlcheck, "write_reason", counted_write_reason)
    return calls


def risks(home: Path, *folders: Path) -> dict[str, str]:
    registry = load_registry([bundled_catalog_dir(), *folders], (), CatalogVerdicts(home))
    return {name: t.risk_level.value for name, t in registry.tools.items()}


def test_a_second_load_asks_the_parser_nothing_and_finds_the_same(tmp_path, parser_calls):
    first = risks(tmp_path)
    assert parser_calls  # the first load judged the catalog's SQL
    cache = tmp_path / "cache" / f"{VERDICTS_ENTRY}.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    parser_calls.clear()
    assert risks(tmp_path) == first
    assert parser_calls == []
    # Without a home, every load judges all of it.
    load_registry([bundled_catalog_dir()])
    assert parser_calls


def test_a_statement_changed_since_is_judged_and_a_write_tagged_safe_is_refused(
    tmp_path, parser_calls
):
    site = tmp_path / "site"
    site.mkdir()
    path = site / "count_rows_here.yaml"
    path.write_text(yaml.safe_dump(tool()))
    home = tmp_path / "home"
    home.mkdir()
    assert risks(home, site)["count_rows_here"] == "safe"
    # The same tool, still tagged safe, now deletes: its verdict is not the one kept.
    writes = {"sqlite": {"sql": "DELETE FROM {table}", "result": "none"}}
    path.write_text(yaml.safe_dump(tool(implementations=writes)))
    parser_calls.clear()
    with pytest.raises(CatalogError, match="tagged safe but its sqlite implementation needs"):
        risks(home, site)
    assert parser_calls == ['DELETE FROM "x"']


def test_a_check_query_that_writes_is_refused_from_a_warm_cache(tmp_path, parser_calls):
    site = tmp_path / "site"
    site.mkdir()
    path = site / "count_rows_here.yaml"
    reads = {"sqlite": {"sql": "SELECT 1 AS n FROM {table}", "check_sql": "SELECT 1"}}
    path.write_text(yaml.safe_dump(tool(implementations=reads)))
    risks(tmp_path, site)
    writes = {"sqlite": {"sql": "SELECT 1 AS n FROM {table}", "check_sql": "DELETE FROM t"}}
    path.write_text(yaml.safe_dump(tool(implementations=writes)))
    with pytest.raises(CatalogError, match="check_sql"):
        risks(tmp_path, site)


def test_a_cache_file_others_can_write_is_not_used(tmp_path, parser_calls):
    risks(tmp_path)
    cache = tmp_path / "cache" / f"{VERDICTS_ENTRY}.json"
    cache.chmod(0o666)
    parser_calls.clear()
    risks(tmp_path)
    assert parser_calls  # judged anew, and kept again as this user's alone
    assert cache.stat().st_mode & 0o777 == 0o600
