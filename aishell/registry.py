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
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from aishell.config.files import parse_yaml
from aishell.config.kinds import Capability, Category
from aishell.config.plugins import PLUGIN_FAILURES, TOOLS_GROUP, failure, note_package_code
from aishell.config.sources import read_source
from aishell.errors import CatalogError, ConfigError, ToolNotFound
from aishell.handlers import Handler
from aishell.risk import RiskLevel
from aishell.tool import locks as toollocks
from aishell.tool import params as schema
from aishell.tool import risks as toolrisks
from aishell.tool.capabilityfloor import capability_problem
from aishell.tool.context import (
    GLUED_PLACEHOLDER,
    PLACEHOLDER,
    Implementation,
    ToolContext,
    fill_template,
)
from aishell.tool.definition import (
    CHECK_SQL_MUST,
    HandlerSpec,
    Planned,
    SqlSpec,
    ToolFile,
    read_tool_file,
)
from aishell.tool.fixedsql import SqlImplementation
from aishell.tool.report import ReportRule, check_against_result, parse_report_rules
from aishell.tool.risks import PerDialect
from aishell.tool.sqltextrules import sql_text_problem
from aishell.tool.verdicts import CatalogVerdicts

# Re-exported: the rest of aishell imports the catalog's vocabulary from here.
__all__ = [
    "Capability",
    "Category",
    "Implementation",
    "Registry",
    "RiskLevel",
    "SqlImplementation",
    "ToolContext",
    "ToolDefinition",
    "fill_template",
    "implied_risk",
    "load_registry",
    "load_tool",
]


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
    # By dialect: what its statements risk there, and what limits that.
    risks: PerDialect
    mitigations: PerDialect
    # By dialect: the locks its statements take there (toollocks.py).
    locks: toollocks.PerDialect
    source: Path
    fingerprint: str
    # What a step of this tool adds to the maintenance report, one rule per section
    # (none: only its skips).
    report: tuple[ReportRule, ...] = ()
    # Its output is the run's report (the last such step that succeeded).
    run_report: bool = False
    # The field of its output counting the rows it deleted, summed into the metrics.
    rows_purged: str | None = None
    # A step of its tables that cannot lock one of them within the lock wait (after its
    # retries), or finds it dropped since the plan, ends skipped with the table named
    # (and who holds it), not failed: the run goes on with the other tables.
    skips_held_tables: bool = False
    # By agent: where it plans this tool on the tool's own word (its `planned:`).
    planned: Mapping[str, Planned] = field(default_factory=dict)

    def risks_on(self, dialect: str | None) -> tuple[str, ...]:
        """Its risks on this dialect's engine (None: on every one it implements)."""
        return toolrisks.on(self.risks, dialect)

    def mitigations_on(self, dialect: str | None) -> tuple[str, ...]:
        return toolrisks.on(self.mitigations, dialect)

    def locks_on(self, dialect: str) -> tuple[toollocks.Lock, ...]:
        return self.locks.get(dialect, ())

    def step_locks(
        self, params: Mapping[str, Any], target: str, config: Any, dialect: str
    ) -> toollocks.StepLocks:
        """The locks a step with these params takes on the target, and the lock wait."""
        tables = self.tables_in(params)
        return toollocks.step_locks(self.locks_on(dialect), tables, params, target, config, dialect)

    def implementation(self, dialect: str) -> Implementation:
        try:
            return self.implementations[dialect]
        except KeyError:
            have = ", ".join(sorted(self.implementations))
            raise ToolNotFound(
                f"Tool '{self.name}' has no {dialect} implementation (it has: {have})"
            ) from None

    def in_catalog(self, rules: Mapping[str, tuple[ReportRule, ...]]) -> ToolDefinition:
        """This tool as a catalog with these report rules runs it: a handler that sums up
        other steps (the report) is given them."""
        bound = {
            dialect: impl.in_catalog(rules) if isinstance(impl, Handler) else impl
            for dialect, impl in self.implementations.items()
        }
        if all(bound[d] is impl for d, impl in self.implementations.items()):
            return self
        return replace(self, implementations=bound)

    @cached_property
    def params_json(self) -> str:
        """Its params schema's canonical JSON, which its validator is found by: made once,
        as every step of the tool is checked against it."""
        return schema.canonical(self.params)

    @cached_property
    def identifiers(self) -> dict[str, tuple[str, bool]]:
        """Its params that name database objects: name -> (kind, is_list); worked out once,
        as every step of the tool asks."""
        return schema.identifier_params(self.params)

    def tables_in(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The table names a step's params give this tool (its x-identifier: table params)."""
        tables: list[str] = []
        for name, (kind, is_list) in self.identifiers.items():
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
            "risks": {d: list(r) for d, r in self.risks.items()},
            "mitigations": {d: list(m) for d, m in self.mitigations.items()},
            "locks": {d: [lock.to_dict() for lock in locks] for d, locks in self.locks.items()},
        }


@dataclass(frozen=True)
class Registry:
    tools: Mapping[str, ToolDefinition]
    # Plugins' tool files refused at load, each "file: why": left out, the rest loaded.
    refused: tuple[str, ...] = ()

    def get(self, name: str) -> ToolDefinition:
        try:
            return self.tools[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.tools), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ToolNotFound(f"No tool named '{name}' in the catalog{hint}") from None

    def joining_plans(self, built_in: Path) -> list[str]:
        """The tools from outside the built-in catalog (a site's folders) that join a
        built-in agent's plans by their `planned:`, each in words: what `aishell doctor`
        lists, so that a change to nightly maintenance is never silent."""
        return [
            f"tool {tool.name} ({tool.source}) joins the {agent} agent's plans after "
            f"{where.after} in {', '.join(where.types)} runs"
            for tool in sorted(self.tools.values(), key=lambda t: t.name)
            if tool.source.parent.resolve() != built_in.resolve()
            for agent, where in sorted(tool.planned.items())
        ]

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


def load_registry(
    folders: Iterable[Path],
    plugins: Iterable[Path] = (),
    verdicts: CatalogVerdicts | None = None,
) -> Registry:
    """Load every tools/*.yaml of the given folders, where any problem is a CatalogError;
    then those of plugins' folders, checked the same, where a file with a problem is
    refused alone (Registry.refused) and every other tool still loads. `verdicts`: the
    parser's verdicts kept by earlier loads (tool/verdicts.py)."""
    verdicts = verdicts or CatalogVerdicts()
    tools: dict[str, ToolDefinition] = {}
    for folder in folders:
        if not folder.is_dir():
            raise CatalogError(f"Tool catalog folder {folder} does not exist")
        for path in sorted(folder.glob("*.yaml")):
            _add(tools, load_tool(path, verdicts))
    refused: list[str] = []
    for folder in plugins:
        for path in sorted(folder.glob("*.yaml")):
            try:
                _add(tools, load_tool(path, verdicts, from_package=True))
            except CatalogError as exc:
                refused.append(str(exc))
    verdicts.keep()
    for tool in tools.values():
        for agent, where in tool.planned.items():
            if where.after not in tools:
                raise CatalogError(
                    f"{tool.source}: planned.{agent}.after: no tool named '{where.after}' "
                    "in the catalog"
                )
    rules = {name: tool.report for name, tool in tools.items() if tool.report}
    return Registry(
        tools={name: tool.in_catalog(rules) for name, tool in tools.items()},
        refused=tuple(refused),
    )


def _add(tools: dict[str, ToolDefinition], tool: ToolDefinition) -> None:
    if tool.name in tools:
        raise CatalogError(
            f"{tool.source}: duplicate tool name '{tool.name}' "
            f"(already defined in {tools[tool.name].source})"
        )
    tools[tool.name] = tool


PACKAGE_PLANNED = (
    "planned: a tool from an installed package may not ask aishell's agents to plan it; "
    "only the built-in catalog and the folders of catalog_paths may (copy the file into "
    "one of those to have it planned)"
)

# Tool files parsed before in this process, by the sha256 of their bytes: a long-lived
# process (the scheduler) runs many jobs, each loading the whole catalog. The parse is
# kept pickled, so each load gets objects of its own; the checks below run every time.
_PARSED: dict[str, bytes] = {}
_PARSED_MAX = 256


def _parsed(raw: bytes, digest: str, path: Path) -> Any:
    kept = _PARSED.get(digest)
    if kept is not None:
        return pickle.loads(kept)
    try:
        data = parse_yaml(raw, path)
    except ConfigError as exc:  # the catalog's own kind of error, with the same line
        raise CatalogError(str(exc)) from None
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[digest] = pickle.dumps(data)
    return data


def load_tool(
    path: Path, verdicts: CatalogVerdicts | None = None, *, from_package: bool = False
) -> ToolDefinition:
    """One tool definition, checked in full; any problem is a CatalogError naming the file.
    `from_package`: it came with an installed package (an `aishell.tools` entry point),
    whose tools may not ask aishell's own agents to plan them."""
    verdicts = verdicts or CatalogVerdicts()
    try:
        raw = read_source(path, "tool file")
    except ConfigError as exc:
        raise CatalogError(str(exc)) from None
    fingerprint = hashlib.sha256(raw).hexdigest()
    data = _parsed(raw, fingerprint, path)

    def fail(message: str) -> CatalogError:
        return CatalogError(f"{path}: {message}")

    spec = read_tool_file(data)
    if isinstance(spec, str):
        raise fail(spec)
    if from_package and spec.planned:
        # A package's tool would otherwise join the built-in agents' plans (nightly
        # maintenance) unasked: only the catalog the admin keeps may do that.
        raise fail(PACKAGE_PLANNED)
    implementations = _implementations(spec, fail, verdicts)
    report = parse_report_rules(spec.report, fail) if "report" in data else ()
    for dialect, implementation in implementations.items():
        if isinstance(implementation, SqlImplementation):
            where = f"implementations.{dialect}"
            check_against_result(report, implementation.result, where, fail)
    return ToolDefinition(
        name=spec.name,
        description=spec.description,
        category=spec.category,
        risk_level=spec.risk_level,
        required_capabilities=spec.required_capabilities,
        params=spec.params,
        returns=spec.returns,
        requires_approval=spec.requires_approval,
        destructive=spec.destructive,
        max_execution_time=spec.max_execution_time,
        max_retries=spec.max_retries,
        idempotent=spec.idempotent,
        examples=tuple(data["examples"]),
        implementations=implementations,
        notes=spec.notes,
        risks=toolrisks.per_dialect(data, "risks", implementations, fail),
        mitigations=toolrisks.per_dialect(data, "mitigations", implementations, fail),
        locks=toollocks.per_dialect(data, implementations, fail),
        source=path,
        fingerprint=fingerprint,
        report=report,
        run_report=spec.run_report,
        rows_purged=spec.rows_purged,
        skips_held_tables=spec.skips_held_tables,
        planned=spec.planned,
    )


def _implementations(
    spec: ToolFile, fail: Callable[[str], Exception], verdicts: CatalogVerdicts
) -> dict[str, Implementation]:
    """Each dialect's implementation, none riskier than the tool is tagged."""
    identifiers = frozenset(schema.identifier_params(spec.params))
    implementations: dict[str, Implementation] = {}
    for dialect, form in spec.implementations.items():
        where = f"implementations.{dialect}"
        if isinstance(form, HandlerSpec):
            impl = _resolve_handler(form.handler, where, fail)
        else:
            impl = _sql_implementation(form, identifiers, dialect, fail, verdicts)
        floor, why = implied_risk(impl, dialect, getattr(form, "handler", None), verdicts)
        if floor.rank > spec.risk_level.rank:
            # What a tool may run sets its least risk; a declaration cannot lower it.
            raise fail(
                f"risk_level: tagged {spec.risk_level.value} but its {dialect} implementation "
                f"needs at least {floor.value}: {why}"
            )
        short = capability_problem(spec.required_capabilities, impl, PLACEHOLDER, dialect, verdicts)
        if short is not None:
            declared = ", ".join(sorted(c.value for c in spec.required_capabilities))
            raise fail(
                f"required_capabilities: [{declared}] but its {dialect} implementation {short}"
            )
        implementations[dialect] = impl
    return implementations


def implied_risk(
    impl: Implementation,
    dialect: str,
    handler: str | None = None,
    verdicts: CatalogVerdicts | None = None,
) -> tuple[RiskLevel, str]:
    """The least risk an implementation implies, and why: the riskiest of its statements
    as the parser classifies them, and for a handler what the handler itself does."""
    floor, why = RiskLevel.SAFE, "it only reads"
    handler_risk = getattr(impl, "risk", None)
    if isinstance(handler_risk, RiskLevel) and handler_risk.rank > floor.rank:
        floor = handler_risk
        why = f"the handler {handler} {getattr(impl, 'effect', '') or 'is of that risk'}"
    verdicts = verdicts or CatalogVerdicts()
    for sql in impl.sql_templates:
        risk, reason = verdicts.classify(PLACEHOLDER.sub('"x"', sql), dialect)
        if risk.rank > floor.rank:
            floor, why = risk, f"{reason}: {sql.strip()}"
    return floor, why


def _sql_implementation(
    form: SqlSpec,
    identifiers: frozenset[str],
    dialect: str,
    fail: Callable[[str], Exception],
    verdicts: CatalogVerdicts,
) -> SqlImplementation:
    """SQL that runs as the file gives it: one statement per call, identifiers only
    from params marked x-identifier, and a check query that only reads."""
    where = f"implementations.{dialect}"
    check_sql = form.check_sql
    if check_sql is not None and verdicts.write_reason(PLACEHOLDER.sub('"x"', check_sql), dialect):
        raise fail(f"{where}.check_sql {CHECK_SQL_MUST}")
    for sql in (*form.statements, *([check_sql] if check_sql else [])):
        problem = sql_text_problem(PLACEHOLDER.sub('"x"', sql), dialect, verdicts)
        if problem is not None:
            raise fail(f"{where}: {problem}: {sql.strip()}")
    for statement in form.statements:
        _, reason = verdicts.classify(PLACEHOLDER.sub('"x"', statement), dialect)
        if reason in ("transaction control inside a step", "more than one statement"):
            # Each statement is one call: the executor owns transactions and the guard
            # sees every statement on its own.
            raise fail(f"{where}.sql: {reason} is not allowed: {statement.strip()}")
        glued = GLUED_PLACEHOLDER.search(statement + " " + (check_sql or ""))
        if glued is not None:
            raise fail(
                f"{where}: {glued.group()!r}: a placeholder is filled with a whole quoted "
                "name, so it may not touch other name characters; give the whole name as "
                "a param marked x-identifier"
            )
        for placeholder in PLACEHOLDER.findall(statement):
            if placeholder not in identifiers:
                raise fail(
                    f"{where}.sql: {{{placeholder}}} is not a param marked x-identifier; "
                    "values must be bound as :name"
                )
    return SqlImplementation(
        sql_templates=form.statements,
        result=form.result,
        identifiers=identifiers,
        check_sql=check_sql,
    )


def _resolve_handler(name: str, where: str, fail: Callable[[str], Exception]) -> Implementation:
    """`module.name` inside aishell.handlers, or a plugin's `package.module:name`: an
    aishell Handler either way, its statements declared and checked as any."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        note_package_code(module_name)
    else:
        module_name, _, attr = name.rpartition(".")
        module_name = f"aishell.handlers.{module_name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not module_name.startswith(exc.name):
            raise fail(f"{where}: handler module {module_name} failed to import: {exc}") from None
        hint = "" if ":" in name else f"; a package's own handler is named {_COLON_FORM}"
        raise fail(f"{where}: handler module {module_name} not found{hint}") from None
    # A plugin's module is anyone's code: what it raises, a sys.exit() too, is its failure.
    except PLUGIN_FAILURES as exc:
        said = failure(TOOLS_GROUP, module_name, "", exc).error
        raise fail(f"{where}: handler module {module_name} failed to import: {said}") from None
    handler = getattr(module, attr, None)
    if callable(handler) and not isinstance(handler, Handler):
        raise fail(
            f"{where}: {module_name}.{attr} is a {type(handler).__name__}, not a Handler; "
            f"make the name a Handler(sql_templates=(its statements,), run_fn={attr}_function) "
            "(the agent API's Handler), so that its statements are declared and checked"
        )
    if not isinstance(handler, Handler):
        raise fail(f"{where}: {module_name} has no handler '{attr}'")
    return handler


# How a package names its own handler in a tool file.
_COLON_FORM = "'package.module:name' (a colon before the name)"
