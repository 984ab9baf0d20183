"""An empty table's index has no leaf pages, and pgstatindex says NaN for how many of
them are out of order: a full maintenance of a PostgreSQL database holding one ran its
fragmentation step with NaN in its output, then failed its report step on it, and its
`--json` printed `NaN`, which no JSON reader takes."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import run_sql, use_target


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_full_maintenance_with_an_empty_indexed_table_completes_in_json(
    pg_url: str, home: Path
) -> None:
    run_sql(
        pg_url,
        "CREATE EXTENSION pgstattuple",
        "CREATE TABLE empty_one (id int PRIMARY KEY, k int)",
        "CREATE INDEX empty_one_k ON empty_one (k)",
        "CREATE TABLE full_one (id int PRIMARY KEY)",
        "INSERT INTO full_one SELECT generate_series(1, 100)",
    )
    use_target(home, pg_url)
    argv = ["run", "maintenance", "--type", "full", "--yes", "--target", "db", "--json"]
    result = CliRunner().invoke(cli, argv)
    shown = _strict(result.stdout)
    assert isinstance(shown, dict)
    assert result.exit_code == 0, shown.get("error")
    (scan,) = [s for s in shown["steps"] if s["tool"] == "analyze_table_fragmentation"]
    (table,) = [t for t in scan["output"]["by_table"] if t["table"] == "empty_one"]
    assert {i["fragmentation_percent"] for i in table["indexes"]} == {0.0}, table
