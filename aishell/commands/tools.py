"""The tool catalog every command loads, and the tools' own commands (list, show)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aishell.config.kinds import Category
from aishell.config.models import Config
from aishell.config.resources import bundled_catalog_dir
from aishell.errors import UsageError
from aishell.registry import Registry, ToolDefinition, load_registry
from aishell.risk import RiskLevel
from aishell.sqltext import quote_identifier
from aishell.tool.context import ToolContext
from aishell.tool.definition import DIALECTS


def load_catalog(config: Config) -> Registry:
    """The built-in catalog plus the site's folders named in config."""
    return load_registry([bundled_catalog_dir(), *config.catalog_paths])


def list_tools(
    config: Config, category: str | None = None, risk: str | None = None
) -> list[ToolDefinition]:
    registry = load_catalog(config)
    return registry.find(
        category=Category(category) if category else None,
        risk=RiskLevel(risk) if risk else None,
    )


def show_tool(config: Config, name: str, dialect: str | None = None) -> dict[str, Any]:
    """A tool's metadata and, per dialect, the SQL it runs for its first example."""
    tool = load_catalog(config).get(name)
    if dialect is not None and dialect not in DIALECTS:
        raise UsageError(f"Unknown dialect '{dialect}'; expected one of: {', '.join(DIALECTS)}")
    dialects = [dialect] if dialect else sorted(tool.implementations)
    example = tool.examples[0]["params"]
    sql: dict[str, list[str]] = {}
    for name_ in dialects:
        impl = tool.implementation(name_)
        offline = ToolContext(conn=None, dialect=name_, target="(example)", dry_run=True)
        offline.quote_identifier = _quoter(name_)
        sql[name_] = impl.render_sql(example, offline)
    data = {**tool.metadata(), "example_params": example, "sql": sql}
    for key in ("risks", "mitigations"):  # as for the SQL: those of the dialects shown
        data[key] = {d: lists for d, lists in data[key].items() if d in dialects}
    return data


def _quoter(dialect: str) -> Callable[[str], str]:
    from sqlalchemy.engine import make_url

    sa_dialect = make_url(f"{dialect}://").get_dialect()()
    return lambda name: quote_identifier(sa_dialect, name)
