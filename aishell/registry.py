"""The tool registry: what the agents may run, how risky it is, and how it runs per dialect.

The catalog lives in tools/*.yaml (one file per tool); extra folders named in config
follow the same rules. The loader refuses, at start-up, anything a reviewer could
not trust: duplicates, missing metadata, unknown handlers, and a tool tagged safe
whose SQL writes.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from sqlalchemy import text
from sqlalchemy.engine import Connection

from aishell import schema
from aishell.config import YAML_LOADER
from aishell.errors import CatalogError, ToolNotFound
from aishell.risk import RiskLevel
from aishell.scratch import Ledger
from aishell.sqlcheck import write_reason
from aishell.statements import classify

DIALECTS = ("sqlite", "postgresql", "mysql")


class Category(StrEnum):
    ANALYSIS = "analysis"
    MAINTENANCE = "maintenance"
    BACKUP = "backup"
    CLEANUP = "cleanup"
    DDL = "ddl"


class Capability(StrEnum):
    DATABASE_READ = "database_read"
    DATABASE_WRITE = "database_write"
    DATABASE_DDL = "database_ddl"
    FILE_READ = "file_read"
    FILE_WRITE = "file_write"
    BACKUP_CREATE = "backup_create"
    BACKUP_RESTORE = "backup_restore"
    SCHEMA_ANALYZE = "schema_analyze"
    SCHEMA_MODIFY = "schema_modify"
    QUERY_OPTIMIZE = "query_optimize"
    INDEX_MANAGE = "index_manage"


@dataclass
class ToolContext:
    """What a tool gets besides its params: the guarded connection and where it runs."""

    conn: Connection | None
    dialect: str
    target: str
    dry_run: bool = False
    backup_dir: Path | None = None
    run_id: str | None = None
    quote_identifier: Callable[[str], str] = field(default=lambda name: f'"{name}"')
    # Long tools (batched deletes) ask between batches whether to stop resumably.
    should_stop: Callable[[], bool] = field(default=lambda: False)
    # What a tool measured to render a step's SQL, reused when the step runs, so the
    # statements that run are the ones shown (and the catalog is not read twice).
    step_cache: dict[str, Any] = field(default_factory=dict)
    # The backup catalog of this target (read-only), for the tools that choose backups.
    backup_catalog: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])
    # Long steps: what an earlier attempt of this step got to, a durable checkpoint of
    # where this one is, figures for the progress display, and an event for the log.
    load_progress: Callable[[], Mapping[str, Any] | None] = field(default=lambda: None)
    save_progress: Callable[[dict[str, Any]], None] = field(default=lambda _p: None)
    report: Callable[[dict[str, Any]], None] = field(default=lambda _f: None)
    record_event: Callable[[str, dict[str, Any]], None] = field(default=lambda _k, _d: None)
    # When the maintenance window closes (in the window's time zone), if one applies,
    # and how many seconds that was away when the step started.
    ends_at: datetime | None = None
    seconds_left: float | None = None
    # Another configured target, read-only (a replica whose lag a purge watches).
    open_target: Callable[[str], Connection] | None = None
    # Scratch files, databases and child processes, recorded before they are made so
    # that what a killed run leaves is found and removed; and when (time.monotonic())
    # the step's time runs out, for the child processes a tool waits on.
    scratch: Ledger = field(default_factory=Ledger)
    deadline: float | None = None

    def quote(self, name: str) -> str:
        return self.quote_identifier(name)

    @property
    def connection(self) -> Connection:
        if self.conn is None:
            raise RuntimeError("this tool needs a database connection")
        return self.conn


class Implementation(Protocol):
    """One dialect's way of running a tool; render_sql never touches the database's data."""

    sql_templates: tuple[str, ...]

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]: ...

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]: ...

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        """After a crash: is the step's effect in the database? None when it cannot tell."""
        ...


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def fill_template(sql: str, params: Mapping[str, Any], ctx: ToolContext) -> str:
    """Fill {name} with the quoted identifier from params, or <name> when it is not known yet."""

    def quoted(match: re.Match[str]) -> str:
        value = params.get(match.group(1))
        return ctx.quote(value) if isinstance(value, str) else f"<{match.group(1)}>"

    return _PLACEHOLDER.sub(quoted, sql)


@dataclass(frozen=True)
class SqlImplementation:
    """A tool whose work is fixed SQL: identifiers as {name} (quoted), values as :name (bound)."""

    sql_templates: tuple[str, ...]
    result: Literal["none", "one", "all"]
    identifiers: frozenset[str]
    check_sql: str | None = None

    def render_sql(self, params: Mapping[str, Any], ctx: ToolContext) -> list[str]:
        return [fill_template(sql, params, ctx) for sql in self.sql_templates]

    def run(self, params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
        conn = ctx.connection
        output: dict[str, Any] = {}
        statements = self.render_sql(params, ctx)
        for position, sql in enumerate(statements, start=1):
            bound = {k: v for k, v in params.items() if f":{k}" in sql}
            result = conn.execute(text(sql), bound)
            if position < len(statements):
                continue  # the result mode applies to the last statement
            if self.result == "one":
                row = result.mappings().first()
                output = dict(row) if row is not None else {}
            elif self.result == "all":
                output = {"rows": [dict(r) for r in result.mappings()]}
            else:
                output = {"rowcount": max(result.rowcount, 0)}
        if conn.in_transaction():
            conn.commit()
        return output

    def check_done(self, params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
        if self.check_sql is None:
            return None
        sql = fill_template(self.check_sql, params, ctx)
        bound = {k: v for k, v in params.items() if f":{k}" in sql}
        return bool(ctx.connection.execute(text(sql), bound).scalar())


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    category: Category
    risk_level: RiskLevel
    required_capabilities: frozenset[Capability]
    params: dict[str, Any]
    returns: dict[str, Any]
    requires_approval: bool
    destructive: bool
    max_execution_time: int
    max_retries: int | None
    idempotent: bool
    examples: tuple[dict[str, Any], ...]
    implementations: Mapping[str, Implementation]
    notes: str
    risks: tuple[str, ...]
    mitigations: tuple[str, ...]
    source: Path
    fingerprint: str

    def implementation(self, dialect: str) -> Implementation:
        try:
            return self.implementations[dialect]
        except KeyError:
            have = ", ".join(sorted(self.implementations))
            raise ToolNotFound(
                f"Tool '{self.name}' has no {dialect} implementation (it has: {have})"
            ) from None

    def tables_in(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The table names a step's params give this tool (its x-identifier: table params)."""
        tables: list[str] = []
        for name, (kind, is_list) in schema.identifier_params(self.params).items():
            if kind != "table" or name not in params:
                continue
            values = params[name] if is_list else [params[name]]
            if isinstance(values, list | tuple):
                tables += [v for v in values if isinstance(v, str)]
        return tuple(tables)

    def metadata(self) -> dict[str, Any]:
        """The tool's metadata as plain data, for --json and docs."""
        return {
            "name": self.name,
            "description": self.description,
            "category": self.category.value,
            "risk_level": self.risk_level.value,
            "required_capabilities": sorted(c.value for c in self.required_capabilities),
            "requires_approval": self.requires_approval,
            "destructive": self.destructive,
            "max_execution_time": self.max_execution_time,
            "max_retries": self.max_retries,
            "idempotent": self.idempotent,
            "params": self.params,
            "returns": self.returns,
            "examples": list(self.examples),
            "dialects": sorted(self.implementations),
            "notes": self.notes,
            "risks": list(self.risks),
            "mitigations": list(self.mitigations),
        }


@dataclass(frozen=True)
class Registry:
    tools: Mapping[str, ToolDefinition]

    def get(self, name: str) -> ToolDefinition:
        try:
            return self.tools[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.tools), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ToolNotFound(f"No tool named '{name}' in the catalog{hint}") from None

    def find(
        self,
        category: Category | None = None,
        max_risk: RiskLevel | None = None,
        risk: RiskLevel | None = None,
        capabilities: Iterable[Capability] | None = None,
    ) -> list[ToolDefinition]:
        """Tools matching every given filter, by name."""
        allowed = frozenset(capabilities) if capabilities is not None else None
        return [
            t
            for t in sorted(self.tools.values(), key=lambda t: t.name)
            if (category is None or t.category is category)
            and (max_risk is None or t.risk_level.rank <= max_risk.rank)
            and (risk is None or t.risk_level is risk)
            and (allowed is None or t.required_capabilities <= allowed)
        ]


_TOOL_KEYS = {
    "name",
    "description",
    "category",
    "risk_level",
    "required_capabilities",
    "params",
    "returns",
    "requires_approval",
    "destructive",
    "max_execution_time",
    "idempotent",
    "examples",
    "implementations",
    "notes",
    "risks",
    "mitigations",
    "max_retries",
}
_REQUIRED_KEYS = {
    "name",
    "description",
    "category",
    "risk_level",
    "required_capabilities",
    "params",
    "returns",
    "max_execution_time",
    "idempotent",
    "examples",
    "implementations",
}


def load_registry(folders: Iterable[Path]) -> Registry:
    """Load every tools/*.yaml of the given folders; any problem is a CatalogError."""
    tools: dict[str, ToolDefinition] = {}
    for folder in folders:
        if not folder.is_dir():
            raise CatalogError(f"Tool catalog folder {folder} does not exist")
        for path in sorted(folder.glob("*.yaml")):
            tool = load_tool(path)
            if tool.name in tools:
                raise CatalogError(
                    f"{path}: duplicate tool name '{tool.name}' "
                    f"(already defined in {tools[tool.name].source})"
                )
            tools[tool.name] = tool
    return Registry(tools=tools)


def load_tool(path: Path) -> ToolDefinition:
    raw = path.read_bytes()
    try:
        data = yaml.load(raw, Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: a tool definition must be a mapping")

    def fail(message: str) -> CatalogError:
        return CatalogError(f"{path}: {message}")

    unknown = set(data) - _TOOL_KEYS
    if unknown:
        raise fail(f"unknown keys: {', '.join(sorted(unknown))}")
    missing = _REQUIRED_KEYS - set(data)
    if missing:
        raise fail(f"missing required keys: {', '.join(sorted(missing))}")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise fail("name must be lower_snake_case")
    description = data["description"]
    if not isinstance(description, str) or not description.strip():
        raise fail("description must be a non-empty sentence")
    category = _enum(Category, data["category"], "category", fail)
    risk = _enum(RiskLevel, data["risk_level"], "risk_level", fail)
    capabilities = frozenset(
        _enum(Capability, c, "required_capabilities", fail)
        for c in data["required_capabilities"] or []
    )
    for key in ("params", "returns"):
        problems = schema.check_schema(data[key], key)
        if problems:
            raise fail("; ".join(problems))
    if data["params"].get("type") != "object":
        raise fail("params must be a schema of type object")
    max_time = data["max_execution_time"]
    if not isinstance(max_time, int) or isinstance(max_time, bool) or max_time <= 0:
        raise fail("max_execution_time must be a positive number of seconds")
    retries = data.get("max_retries")
    if retries is not None and (
        not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
    ):
        raise fail("max_retries must be a whole number, 0 or more")
    for key in ("risks", "mitigations"):
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise fail(f"{key} must be a list of sentences")
    for key in ("idempotent", "requires_approval", "destructive"):
        if not isinstance(data.get(key, False), bool):
            raise fail(f"{key} must be true or false")
    examples = data["examples"]
    if not isinstance(examples, list) or not examples:
        raise fail("examples must list at least one example")
    for i, example in enumerate(examples):
        if not isinstance(example, dict) or "params" not in example:
            raise fail(f"examples[{i}] must have params")
        problems = schema.validate(example["params"], data["params"], f"examples[{i}].params")
        if problems:
            raise fail("; ".join(problems))
    identifiers = frozenset(schema.identifier_params(data["params"]))
    impls_raw = data["implementations"]
    if not isinstance(impls_raw, dict) or not impls_raw:
        raise fail("implementations must map at least one dialect to sql or a handler")
    implementations: dict[str, Implementation] = {}
    for dialect, spec in impls_raw.items():
        if dialect not in DIALECTS:
            raise fail(f"implementations: unknown dialect '{dialect}'")
        impl = _implementation(spec, identifiers, f"implementations.{dialect}", fail)
        floor, why = implied_risk(impl, dialect, spec.get("handler"))
        if floor.rank > risk.rank:
            # What a tool may run sets its least risk; a declaration cannot lower it.
            raise fail(
                f"risk_level: tagged {risk.value} but its {dialect} implementation needs at "
                f"least {floor.value}: {why}"
            )
        implementations[dialect] = impl
    return ToolDefinition(
        name=name,
        description=description.strip(),
        category=category,
        risk_level=risk,
        required_capabilities=capabilities,
        params=data["params"],
        returns=data["returns"],
        requires_approval=bool(data.get("requires_approval", False)),
        destructive=bool(data.get("destructive", False)),
        max_execution_time=max_time,
        max_retries=retries,
        idempotent=data["idempotent"],
        examples=tuple(examples),
        implementations=implementations,
        notes=str(data.get("notes") or "").strip(),
        risks=tuple(data.get("risks") or ()),
        mitigations=tuple(data.get("mitigations") or ()),
        source=path,
        fingerprint=hashlib.sha256(raw).hexdigest(),
    )


def implied_risk(
    impl: Implementation, dialect: str, handler: str | None = None
) -> tuple[RiskLevel, str]:
    """The least risk an implementation implies, and why: the riskiest of its statements
    as the parser classifies them, and for a handler what the handler itself does."""
    floor, why = RiskLevel.SAFE, "it only reads"
    handler_risk = getattr(impl, "risk", None)
    if isinstance(handler_risk, RiskLevel) and handler_risk.rank > floor.rank:
        floor = handler_risk
        why = f"the handler {handler} {getattr(impl, 'effect', '') or 'is of that risk'}"
    for sql in impl.sql_templates:
        found = classify(_PLACEHOLDER.sub('"x"', sql), dialect)
        if found.risk.rank > floor.rank:
            floor, why = found.risk, f"{found.reason}: {sql.strip()}"
    return floor, why


def _enum(enum: type[Enum], value: Any, key: str, fail: Callable[[str], Exception]) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise fail(f"{key}: '{value}' is not one of: {allowed}") from None


def _implementation(
    spec: Any, identifiers: frozenset[str], where: str, fail: Callable[[str], Exception]
) -> Implementation:
    if not isinstance(spec, dict) or len({"sql", "handler"} & set(spec)) != 1:
        raise fail(f"{where}: give exactly one of sql or handler")
    if "handler" in spec:
        if set(spec) != {"handler"}:
            raise fail(f"{where}: a handler takes no other keys")
        return _resolve_handler(spec["handler"], where, fail)
    unknown = set(spec) - {"sql", "result", "check_sql"}
    if unknown:
        raise fail(f"{where}: unknown keys: {', '.join(sorted(unknown))}")
    check_sql = spec.get("check_sql")
    if check_sql is not None:
        dialect = where.rsplit(".", 1)[-1]
        if not isinstance(check_sql, str) or write_reason(
            _PLACEHOLDER.sub('"x"', check_sql), dialect
        ):
            raise fail(f"{where}.check_sql must be one read-only query")
    sql = spec["sql"]
    statements = tuple([sql] if isinstance(sql, str) else sql or [])
    if not statements or not all(isinstance(s, str) and s.strip() for s in statements):
        raise fail(f"{where}.sql must be a statement or a list of statements")
    for statement in statements:
        found = classify(_PLACEHOLDER.sub('"x"', statement), where.rsplit(".", 1)[-1])
        if found.reason in ("transaction control inside a step", "more than one statement"):
            # Each statement is one call: the executor owns transactions and the guard
            # sees every statement on its own.
            raise fail(f"{where}.sql: {found.reason} is not allowed: {statement.strip()}")
        for placeholder in _PLACEHOLDER.findall(statement):
            if placeholder not in identifiers:
                raise fail(
                    f"{where}.sql: {{{placeholder}}} is not a param marked x-identifier; "
                    "values must be bound as :name"
                )
    result = spec.get("result", "none")
    if result not in ("none", "one", "all"):
        raise fail(f"{where}.result must be none, one or all")
    return SqlImplementation(
        sql_templates=statements, result=result, identifiers=identifiers, check_sql=check_sql
    )


def _resolve_handler(name: Any, where: str, fail: Callable[[str], Exception]) -> Implementation:
    from aishell.handlers import Handler

    if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*", name):
        raise fail(f"{where}.handler must be 'module.name' inside aishell.handlers")
    module_name, attr = name.split(".")
    try:
        module = importlib.import_module(f"aishell.handlers.{module_name}")
    except ModuleNotFoundError:
        raise fail(f"{where}: handler module aishell.handlers.{module_name} not found") from None
    handler = getattr(module, attr, None)
    if not isinstance(handler, Handler):
        raise fail(f"{where}: aishell.handlers.{module_name} has no handler '{attr}'")
    return handler
