"""The checks a drafted plan must pass before anyone sees it as runnable.

A model's answer is untrusted text. It becomes steps only if it has the plan's shape,
calls registered tools the agent may use, gives params that match each tool's schema
and name objects the target's catalog has, refers only to earlier steps and to
outputs the tools return, has conditions that parse and compare what those outputs
can hold (plan/conditions.py), and carries no SQL and no approval of its own. The safety
policy then gates the steps exactly as it gates a plan written by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aishell.agents.limits import DraftLimits
from aishell.errors import ToolNotFound
from aishell.files import PrivatePlaces
from aishell.plan.model import Plan, Step, private_path_problems, step_id, validate_plan
from aishell.plan.references import find_references
from aishell.plan.shapes import Draft, DraftStep
from aishell.planners.scope import scope_problems
from aishell.registry import Registry, ToolDefinition
from aishell.risk import RiskLevel
from aishell.tool import params as schema

PLAN_KEYS = ("agent", *Draft.model_fields)
STEP_KEYS = tuple(DraftStep.model_fields)
# What a step's field of the wrong shape is told, by field.
_STEP_MUST = {
    "tool": "'tool' must name a tool",
    "params": "'params' must be a JSON object, not {kind}",
    "rationale": "'rationale' must be text",
    "condition": "'condition' must be text: a ${{step_N.output.key}} reference, or a "
    "comparison over such references",
    "depends_on": "'depends_on' must be a list of step ids",
    "parallel_group": "'parallel_group' must be text: the name of a group of consecutive "
    "steps that only read",
}
# Keys a model may add to claim what only the policy and a person decide.
_APPROVAL_KEYS = {
    "approved",
    "approval",
    "requires_approval",
    "pre_approved",
    "risk",
    "risk_level",
    "safety_level",
    "always_run",
    "force",
}
_SQL_KEYS = {"sql", "query", "statement", "statements", "raw_sql", "command"}

# Statement text: a terminator or comment, a statement keyword followed by more words,
# or the usual injection clauses. Names in the catalog never look like this.
_SQL_MARKERS = re.compile(r";|--|/\*|\*/|\x00")
_STATEMENT = re.compile(
    r"^\s*\(?\s*(select|insert|update|delete|drop|alter|create|truncate|grant|revoke|"
    r"replace|merge|call|exec|execute|copy|attach|detach|pragma|vacuum|analyze|optimize|"
    r"begin|commit|rollback|load|lock|rename|with|set|show|kill|shutdown|handler|do)"
    r"\s+\S",
    re.IGNORECASE,
)
_CLAUSE = re.compile(
    r"\bunion\s+(all\s+)?select\b|\bor\s+\S+\s*=\s*\S+|\bwhere\s+\S|\b(pg_)?sleep\s*\(|"
    r"\bbenchmark\s*\(|\binto\s+(out|dump)file\b",
    re.IGNORECASE,
)


@dataclass
class Vetted:
    """What was made of one answer: the steps, or the problems that reject it."""

    agent: str | None
    steps: list[Step] = field(default_factory=list)
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.problems and bool(self.steps)


@dataclass(frozen=True)
class CatalogView:
    """The target's tables, and each table's columns on demand."""

    tables: frozenset[str]
    columns_of: Callable[[str], list[str]]
    # The tables a job named: a plan for it touches no other.
    scope: frozenset[str] | None = None
    # Folders a drafted plan's files must lie in (the aishell home, the backup folder),
    # and the places in them it may not write (home_private_places).
    folders: tuple[Path, ...] = ()
    private: PrivatePlaces = field(default_factory=PrivatePlaces)
    # What the job holds the plan to: --no-update-stats, --no-rebuild-indexes, its type.
    limits: DraftLimits = field(default_factory=DraftLimits)


def printable(text: str, width: int = 500) -> str:
    """Model text fit for a terminal: no control characters (escape sequences could
    redraw what a person is approving), and not too long."""
    clean = "".join(c if c.isprintable() or c == " " else " " for c in text)
    clean = " ".join(clean.split())
    return clean if len(clean) <= width else clean[: width - 3] + "..."


def sql_in(value: str) -> str | None:
    """Why a parameter's text reads as SQL, or None."""
    if _SQL_MARKERS.search(value):
        return "a statement terminator or comment"
    if _STATEMENT.search(value):
        return f"a {value.split()[0].lstrip('(').upper()} statement"
    if _CLAUSE.search(value):
        return "a SQL clause"
    return None


def vet_answer(
    answer: Any,
    *,
    agents: Mapping[str, Iterable[str]],
    registry: Registry,
    dialect: str,
    target: str,
    catalog: CatalogView,
    max_steps: int,
) -> Vetted:
    """Check one parsed answer. `agents` maps each agent the answer may name to its
    capabilities; with one agent, naming it is optional."""
    if not isinstance(answer, dict):
        return Vetted(None, problems=[f"the answer is {_kind(answer)}, not a JSON object"])
    problems: list[str] = []
    for key in answer:
        if key not in PLAN_KEYS:
            problems.append(
                f"unknown field {_clip(str(key))} in the plan; a plan holds only: "
                f"{', '.join(PLAN_KEYS)}"
            )
    summary = answer.get("summary")
    summary = printable(summary) if isinstance(summary, str) else ""
    agent = answer.get("agent")
    if agent is None and len(agents) == 1:
        agent = next(iter(agents))
    capabilities: Iterable[str]
    if isinstance(agent, str) and agent in agents:
        capabilities = agents[agent]
    else:
        problems.append(
            f"agent {_clip(str(agent))} is not one of: {', '.join(sorted(agents))}"
            if agent is not None
            else f"the plan names no agent; choose one of: {', '.join(sorted(agents))}"
        )
        # The steps are still checked, so one answer back lists everything wrong.
        agent, capabilities = None, {c for caps in agents.values() for c in caps}
    raw_steps = answer.get("steps")
    if not isinstance(raw_steps, list):
        problems.append("'steps' must be a list of steps")
        return Vetted(agent, summary=summary, problems=problems)
    if not raw_steps:
        why = f": {summary}" if summary else ""
        problems.append(f"the plan has no steps{why}")
    if len(raw_steps) > max_steps:
        problems.append(f"the plan has {len(raw_steps)} steps; at most {max_steps} are allowed")
        return Vetted(agent, summary=summary, problems=problems)
    steps: list[Step] = []
    for index, raw in enumerate(raw_steps):
        step, step_problems = _step(index, raw)
        problems += step_problems
        if step is not None:
            steps.append(step)
    if any(p.startswith("step_") for p in problems):
        return Vetted(agent, summary=summary, problems=problems)
    plan = Plan(agent=agent or "-", target=target, dialect=dialect, job={}, steps=tuple(steps))
    problems += validate_plan(plan, registry, capabilities)
    problems += [p for step in steps for p in _step_content(step, steps, registry, catalog)]
    problems += _missing_from_job(steps, catalog.limits)
    return Vetted(agent, steps=steps, summary=summary, problems=_unique(problems))


def _step(index: int, raw: Any) -> tuple[Step | None, list[str]]:
    where = step_id(index)
    if not isinstance(raw, dict):
        return None, [f"{where}: a step must be a JSON object, not {_kind(raw)}"]
    problems: list[str] = []
    for key in raw:
        if key in _APPROVAL_KEYS:
            problems.append(
                f"{where}: sets '{key}'; risk and approval come from the catalog and "
                "the policy, never from a plan"
            )
        elif key in _SQL_KEYS:
            problems.append(
                f"{where}: carries raw SQL in '{key}'; only the catalog's tools run, "
                "and they build their own SQL"
            )
        elif key not in STEP_KEYS:
            problems.append(
                f"{where}: unknown field {_clip(str(key))}; a step holds only: "
                f"{', '.join(STEP_KEYS)}"
            )
    if "id" in raw and raw["id"] != where:
        given_id = _clip(str(raw["id"]))
        problems.append(f"{where}: id {given_id} must be {where!r} (steps count from 0)")
    # A draft may leave params, rationale and depends_on out (or depends_on empty).
    given = {k: v for k, v in raw.items() if k in STEP_KEYS}
    given.update(params=raw.get("params", {}), rationale=raw.get("rationale", ""))
    given["depends_on"] = raw.get("depends_on") or []
    try:
        step = DraftStep.model_validate(given)
    except ValidationError as exc:
        fields = dict.fromkeys(str(e["loc"][0]) for e in exc.errors() if e["loc"])
        kind = _kind(given["params"])
        problems += [
            f"{where}: {_STEP_MUST[f].format(kind=kind)}" for f in fields if f in _STEP_MUST
        ]
        return None, problems
    if problems:
        return None, problems
    return (
        Step(
            id=where,
            tool=step.tool,
            params=step.params,
            rationale=printable(step.rationale),
            depends_on=tuple(step.depends_on or ()),
            condition=step.condition or None,
            parallel_group=step.parallel_group or None,
        ),
        [],
    )


def _step_content(
    step: Step, steps: list[Step], registry: Registry, catalog: CatalogView
) -> list[str]:
    """SQL in params, names the catalog lacks, references to outputs no tool returns."""
    where = f"{step.id} ({step.tool})"
    try:
        tool = registry.get(step.tool)
    except ToolNotFound:
        return []  # already reported
    return [
        *_sql_in_params(step, where),
        *_outside_job(step, tool, catalog.limits, where),
        *_not_fed(step, steps, catalog.limits, where),
        *_not_together(step, steps, catalog.limits, where),
        *_names_not_in_catalog(step, tool, catalog, where),
        *scope_problems(step, steps, tool, registry, catalog.scope, where),
        *_paths_outside(step, tool, catalog, where),
        *private_path_problems(step, tool, catalog.private),
        *_unknown_outputs(step, steps, registry, where),
    ]


def _sql_in_params(step: Step, where: str) -> list[str]:
    problems = []
    for name, text in _strings(step.params):
        if [r.text for r in find_references(text)] == [text]:
            continue  # one whole reference: its value is checked when it is resolved
        why = sql_in(text)
        if why:
            problems.append(
                f"{where}: parameter '{name}' holds SQL ({why}): {_clip(text)}; "
                "tools take names and values, never statements"
            )
    return problems


def _outside_job(step: Step, tool: ToolDefinition, limits: DraftLimits, where: str) -> list[str]:
    """What the step does that its job says not to: a tool it refuses, a change its type
    does not make, a param it must give otherwise (a plan drafted for --no-update-stats
    that refreshes statistics)."""
    problems = []
    if step.tool in limits.refused:
        problems.append(f"{where}: {limits.refused[step.tool]}")
    elif (
        limits.changes is not None
        and tool.risk_level is not RiskLevel.SAFE
        and step.tool not in limits.changes
    ):
        problems.append(f"{where}: not part of the job: {limits.changes_why}")
    # A param left out runs with the tool's default, and is held as that.
    runs = schema.with_defaults(step.params, tool.params)
    for param, value, why in limits.required.get(step.tool, ()):
        given = step.params.get(param) if value is None else runs.get(param)
        if not _same(given, value):
            problems.append(f"{where}: {why}")
    return problems


def _not_fed(step: Step, steps: list[Step], limits: DraftLimits, where: str) -> list[str]:
    """A param the job says must come from an earlier step of certain tools that does
    not (a validation of some other file than the backup the plan takes)."""
    if step.tool not in limits.fed:
        return []
    param, tools, key, why = limits.fed[step.tool]
    if _source(step, steps, param, (key,), tools) is None:
        return [f"{where}: {why}"]
    return []


def _not_together(step: Step, steps: list[Step], limits: DraftLimits, where: str) -> list[str]:
    """Params the job says come together from one earlier step that do not: a purge's
    cutoff without the count that read it, or from another count than its own."""
    if step.tool not in limits.together:
        return []
    keys, tools, why = limits.together[step.tool]
    if not any(param in step.params for param in keys):
        return []
    sources = {
        _source(step, steps, param, (key,) if key else (), tools) for param, key in keys.items()
    }
    if None in sources or len(sources) != 1:
        return [f"{where}: {why}"]
    return []


def _source(
    step: Step, steps: list[Step], param: str, path: tuple[str, ...], tools: frozenset[str]
) -> str | None:
    """The earlier step, of one of `tools`, whose output at `path` (() the whole output)
    the param is given as one whole ${...} reference to; None: it is not so given."""
    given = step.params.get(param)
    found = find_references(given) if isinstance(given, str) else []
    if len(found) != 1 or found[0].text != given or found[0].path != path:
        return None
    earlier = {s.id: s.tool for s in steps[: steps.index(step)]}
    return found[0].step_id if earlier.get(found[0].step_id) in tools else None


def _missing_from_job(steps: list[Step], limits: DraftLimits) -> list[str]:
    """The steps the job needs that the plan leaves out (--verify with no validation);
    a step under a condition may never run, nor one that needs such a step (by a
    reference or depends_on: it is skipped with it), so neither is what the job needs."""
    sure: set[str] = set()
    for step in steps:
        needs = {r.step_id for r in find_references([step.params, step.condition])}
        if not step.condition and needs.union(step.depends_on) <= sure:
            sure.add(step.id)
    planned = {step.tool for step in steps if step.id in sure}
    return [
        f"the plan leaves out {tool}: {why}"
        for tool, why in limits.needed.items()
        if tool not in planned
    ]


def _same(given: object, value: object) -> bool:
    """A param as the job holds it: a bool as a bool (0 is not false here), a number by
    its value (the job's 90 is the draft's 90.0), anything else equal."""
    if isinstance(value, bool) or isinstance(given, bool):
        return type(given) is type(value) and given == value
    if isinstance(value, int | float) and isinstance(given, int | float):
        return float(given) == float(value)
    return type(given) is type(value) and given == value


def _names_not_in_catalog(
    step: Step, tool: ToolDefinition, catalog: CatalogView, where: str
) -> list[str]:
    """Each identifier param's table or column, as a catalog name or one whole reference."""
    problems = []
    table_param = step.params.get("table")
    for name, (kind, is_list) in schema.identifier_params(tool.params).items():
        if name not in step.params:
            continue
        values = step.params[name] if is_list else [step.params[name]]
        if not isinstance(values, list):
            continue
        for value in values:
            if not isinstance(value, str) or sql_in(value):
                continue
            refs = find_references(value)
            if refs and (len(refs) > 1 or refs[0].text != value):
                problems.append(
                    f"{where}: {kind} {_clip(value)} mixes a reference with text; a name "
                    "is a catalog name or one whole ${...} reference"
                )
            if refs:
                continue
            if kind == "table" and value not in catalog.tables:
                problems.append(
                    f"{where}: table {_clip(value)} does not exist in the target "
                    f"(tables: {_listing(sorted(catalog.tables))})"
                )
            elif kind == "table" and catalog.scope is not None and value not in catalog.scope:
                problems.append(
                    f"{where}: table {_clip(value)} is not one the job names "
                    f"({_listing(sorted(catalog.scope))})"
                )
            elif (
                kind == "column"
                and isinstance(table_param, str)
                and table_param in catalog.tables
                and value not in catalog.columns_of(table_param)
            ):
                problems.append(
                    f"{where}: table {_clip(table_param)} has no column {_clip(value)} "
                    f"(columns: {_listing(catalog.columns_of(table_param))})"
                )
    return problems


def _paths_outside(step: Step, tool: ToolDefinition, catalog: CatalogView, where: str) -> list[str]:
    problems = []
    for name, mode in schema.path_params(tool.params).items():
        value = step.params.get(name)
        if not isinstance(value, str) or not catalog.folders:
            continue
        refs = find_references(value)
        if refs and (mode == "write" or [r.text for r in refs] != [value]):
            # Its place would be known only as it runs, past the check of its folder: a
            # file read may come whole from an earlier step (the backup it took).
            problems.append(
                f"{where}: parameter '{name}' ({mode}s a file) is given by a reference, "
                f"{_clip(value)}; give an absolute path under "
                f"{' or '.join(str(f) for f in catalog.folders)}"
                + ("" if mode == "write" else ", or one whole ${...} reference")
            )
        elif not refs and not _inside(value, catalog.folders):
            problems.append(
                f"{where}: parameter '{name}' ({mode}s a file) must be an absolute path "
                f"under {' or '.join(str(f) for f in catalog.folders)}, not {_clip(value)}"
            )
    return problems


def _unknown_outputs(step: Step, steps: list[Step], registry: Registry, where: str) -> list[str]:
    """References to an output key the earlier step's tool does not return."""
    problems = []
    by_id = {s.id: s for s in steps}
    for ref in find_references([step.params, step.condition]):
        source = by_id.get(ref.step_id)
        if source is None or not ref.path or not isinstance(ref.path[0], str):
            continue
        try:
            returns = registry.get(source.tool).returns.get("properties") or {}
        except ToolNotFound:
            continue
        if returns and ref.path[0] not in returns:
            problems.append(
                f"{where}: {ref.text} reads '{ref.path[0]}', which {source.tool} does not "
                f"return (it returns: {', '.join(sorted(returns))})"
            )
    return problems


def _inside(value: str, folders: tuple[Path, ...]) -> bool:
    path = Path(value)
    if not path.is_absolute():
        return False
    resolved = path.resolve()
    return any(resolved.is_relative_to(folder.resolve()) for folder in folders)


def _strings(value: Any, name: str = "") -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{name}[{i}]")


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), "null" if value is None else type(value).__name__)


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 3] + "...")


def _listing(names: list[str], most: int = 20) -> str:
    return ", ".join(names[:most]) + (" ..." if len(names) > most else "") if names else "(none)"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
