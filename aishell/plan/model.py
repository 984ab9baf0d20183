"""Plans: ordered steps over the registry, validated, hashed and (de)serialised."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aishell.config.kinds import Capability
from aishell.errors import PlanError, ToolNotFound
from aishell.files import PrivatePlaces
from aishell.plan.conditions import ConditionError, parse_condition
from aishell.plan.groups import group_problems
from aishell.plan.references import Reference, find_references
from aishell.plan.shapes import plan_file_problems
from aishell.registry import Registry, ToolDefinition
from aishell.risk import RiskLevel
from aishell.terminal import printable
from aishell.tool import params as schema

PLAN_FORMAT = 1
# A name from a plan is shown whole up to this many characters, a path up to PATH_SHOWN:
# most are, and none hides a line.
CLIP_WIDTH = 60
PATH_SHOWN = 240


@dataclass(frozen=True)
class Step:
    id: str
    tool: str
    params: dict[str, Any]
    rationale: str = ""
    depends_on: tuple[str, ...] = ()
    # A reference; the step runs only when it resolves to a non-empty value.
    condition: str | None = None
    # Runs even when steps it refers to were denied or skipped; their outputs read as null.
    always_run: bool = False
    # Consecutive read-only steps of one group may run at the same time (plan/groups.py).
    parallel_group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "tool": self.tool,
            "params": self.params,
            "rationale": self.rationale,
        }
        if self.depends_on:
            data["depends_on"] = list(self.depends_on)
        if self.condition:
            data["condition"] = self.condition
        if self.always_run:
            data["always_run"] = True
        # Left out when unset, so plans made before groups existed keep their hashes.
        if self.parallel_group:
            data["parallel_group"] = self.parallel_group
        return data


def step_from_dict(data: Mapping[str, Any]) -> Step:
    """A step as Step.to_dict() wrote it (KeyError or TypeError when it is not one)."""
    return Step(
        id=data["id"],
        tool=data["tool"],
        params=dict(data["params"]),
        rationale=data.get("rationale", ""),
        depends_on=tuple(data.get("depends_on") or ()),
        condition=data.get("condition"),
        always_run=bool(data.get("always_run", False)),
        parallel_group=_name_or_none(data.get("parallel_group")),
    )


@dataclass(frozen=True)
class Plan:
    agent: str
    target: str
    dialect: str
    job: dict[str, Any]
    steps: tuple[Step, ...]
    tool_fingerprints: dict[str, str] = field(default_factory=dict)
    # What the plan was made from (tables, row estimates, indexes), to refuse a stale plan.
    assumptions: dict[str, Any] = field(default_factory=dict)
    # Who drafted the steps when it was not the agent's rules: the model, whether the
    # draft came from the cache, and the reasons earlier drafts were rejected.
    drafted_by: dict[str, Any] = field(default_factory=dict)
    # The database the plan was made on (targets.database_identity), recorded when the
    # plan is saved, so it is refused on a target that now points elsewhere.
    target_identity: str | None = None
    # What a saved plan's preview showed the person who saved it: the safety level it
    # was judged at, and each step's statements ({"safety_level", "statements": {step
    # id: [statement]}}); `apply` holds the run to both.
    reviewed: dict[str, Any] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What a person should know before running the plan."""
        found = []
        unreadable = self.assumptions.get("unreadable_tables")
        if unreadable:
            found.append(
                f"Left out, their names are not valid UTF-8: {', '.join(map(str, unreadable))}; "
                "rename them (ALTER TABLE ... RENAME TO) to have them maintained"
            )
        if self.drafted_by.get("fallback_from") == "llm":
            reasons = self.drafted_by.get("rejected") or [[]]
            last = listed(list(reasons[-1])) or "no reason given"
            found.append(
                f"The model {self.drafted_by.get('model')!r} drafted {len(reasons)} plan(s) "
                f"that failed validation (last: {last}); this is the {self.agent} agent's "
                "rule-based plan instead"
            )
        return found

    @property
    def hash(self) -> str:
        """sha256 over what the plan does: agent, target, job, steps and tool versions."""
        body = self.to_dict()
        body.pop("plan_hash", None)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": PLAN_FORMAT,
            "agent": self.agent,
            "target": self.target,
            "dialect": self.dialect,
            "job": self.job,
            "steps": [s.to_dict() for s in self.steps],
            "tool_fingerprints": self.tool_fingerprints,
            "assumptions": self.assumptions,
        }
        # Optional fields appear only when set, so plans stored before they existed
        # keep their hashes (a stored run is resumed only when its hash still matches).
        if self.drafted_by:
            data["drafted_by"] = self.drafted_by
        if self.target_identity is not None:
            data["target_identity"] = self.target_identity
        if self.reviewed:
            data["reviewed"] = self.reviewed
        return data

    def to_json(self) -> str:
        return json.dumps({**self.to_dict(), "plan_hash": self.hash}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "The plan") -> Plan:
        """The plan as to_dict() wrote it; `where` leads every error (a file's name)."""
        try:
            if data.get("format") != PLAN_FORMAT:
                raise PlanError(f"{where}: unsupported format {clip(str(data.get('format')))}")
            steps = tuple(step_from_dict(s) for s in data["steps"])
            plan = cls(
                agent=data["agent"],
                target=data["target"],
                dialect=data["dialect"],
                job=dict(data["job"]),
                steps=steps,
                tool_fingerprints=dict(data.get("tool_fingerprints") or {}),
                assumptions=dict(data.get("assumptions") or {}),
                drafted_by=dict(data.get("drafted_by") or {}),
                target_identity=data.get("target_identity"),
                reviewed=dict(data.get("reviewed") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise PlanError(f"{where}: missing or wrong field {clip(str(exc))}") from None
        expected = data.get("plan_hash")
        if "plan_hash" in data and expected is None:
            raise PlanError(f"{where}: its plan_hash is null; the plan was edited")
        if expected is not None and expected != plan.hash:
            raise PlanError(f"{where}: plan hash does not match its contents; the plan was edited")
        return plan


@dataclass(frozen=True)
class SavedPlan:
    """A plan file as read: the plan, what was signed, and the signature still to check."""

    source: str
    plan: Plan
    # Every field of the file but the signature: exactly what the signature covers.
    body: dict[str, Any]
    signature: dict[str, Any]

    @classmethod
    def parse(cls, data: Any, source: str) -> SavedPlan:
        """Check a plan file's keys against its model (PlanFile) and read its plan."""
        where = f"Plan file {source}"
        if not isinstance(data, dict):
            raise PlanError(f"{where} does not hold a plan (a JSON object)")
        if data.get("signature") is None:
            raise PlanError(
                f"{where} is not signed; apply only plans saved by `aishell plan ... --out` "
                "in this home"
            )
        problems = plan_file_problems(data)
        if problems:
            raise PlanError(f"{where}: {listed(problems)}")
        plan = Plan.from_dict(data, where)
        body = {k: v for k, v in data.items() if k != "signature"}
        return cls(source=source, plan=plan, body=body, signature=dict(data["signature"]))


def _name_or_none(value: Any) -> str | None:
    """A step's optional name (its parallel group): text, or left out."""
    if value is not None and not isinstance(value, str):
        raise TypeError("parallel_group")
    return value or None


def step_id(index: int) -> str:
    return f"step_{index}"


def clip(text: str, width: int = CLIP_WIDTH) -> str:
    """Text from a plan fit for one line of a message, however long or strange: control
    characters shown as escapes, spaces run together, at most `width` characters."""
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def listed(problems: list[str], most: int = 5) -> str:
    """The first few problems, and how many more there are: one line of a bounded length
    for a plan of any size."""
    shown = "; ".join(problems[:most])
    more = len(problems) - most
    return f"{shown}; and {more} more" if more > 0 else shown


def private_path_problems(step: Step, tool: ToolDefinition, private: PrivatePlaces) -> list[str]:
    """The files the step writes, where its params name them as they are (a reference
    is checked when it runs), that would lie in a folder aishell keeps for itself or
    reads tools and config from."""
    problems = []
    for name, mode in schema.path_params(tool.params).items():
        value = step.params.get(name)
        if mode != "write" or not isinstance(value, str) or find_references(value):
            continue
        why = private.refusal(Path(value))
        if why is not None:
            problems.append(
                f"{clip(step.id)} ({tool.name}): parameter '{name}' writes "
                f"{clip(value, PATH_SHOWN)!r}, but {why}; give a path in a folder of its own"
            )
    return problems


def tables_with_columns(plan: Plan, registry: Registry) -> set[str]:
    """The tables the plan's steps name literally beside a column (the catalog reads
    their columns in one query)."""
    tables: set[str] = set()
    for step in plan.steps:
        kinds = registry.get(step.tool).identifiers.values()
        table = step.params.get("table")
        columns = any(kind == "column" for kind, _ in kinds)
        if columns and isinstance(table, str) and not find_references(table):
            tables.add(table)
    return tables


def plan_tables(plan: Plan, registry: Registry) -> list[str]:
    """Every table the plan's steps name literally, in the order they first come (what a
    run or a preview reads together: aishell/tool/readings.py)."""
    tables: dict[str, None] = {}
    for step in plan.steps:
        for table in registry.get(step.tool).tables_in(step.params):
            # A name holds no reference but where "${" begins one: most are plain names.
            if "${" not in table or not find_references(table):
                tables[table] = None
    return list(tables)


def validate_plan(plan: Plan, registry: Registry, capabilities: Iterable[str]) -> list[str]:
    """Every problem with a plan; an empty list means it may run.

    Checks: unique ids, known tools with an implementation for the dialect, params
    that match each tool's schema (references stand in for any value), capabilities
    the agent has, references and dependencies that point only backwards, and parallel
    groups of consecutive steps whose tools only read and that need none of each other.
    """
    problems: list[str] = []
    allowed = {Capability(c) for c in capabilities}
    seen: set[str] = set()
    # The tools of the steps so far, for what their outputs hold (conditions' types).
    earlier: dict[str, ToolDefinition] = {}
    for step in plan.steps:
        where = f"{clip(step.id)} ({clip(step.tool)})"
        if step.id in seen:
            problems.append(f"{where}: duplicate step id")
        try:
            tool = registry.get(step.tool)
        except ToolNotFound as exc:
            # The catalog's message names the tool whole: a name of any length.
            too_long = len(step.tool) > CLIP_WIDTH
            named = f"No tool named '{clip(step.tool)}' in the catalog" if too_long else str(exc)
            problems.append(f"{where}: {named}")
            seen.add(step.id)
            continue
        if step.parallel_group and tool.risk_level is not RiskLevel.SAFE:
            problems.append(
                f"{where}: in parallel group {clip(step.parallel_group)!r}, but its tool's risk is "
                f"{tool.risk_level.value}: only tools that read (risk safe) run in a group"
            )
        if plan.dialect not in tool.implementations:
            problems.append(f"{where}: the tool has no {plan.dialect} implementation")
        missing = tool.required_capabilities - allowed
        if missing:
            names = ", ".join(sorted(c.value for c in missing))
            problems.append(f"{where}: the {plan.agent} agent lacks capabilities: {names}")
        placeheld = _placeholders(step.params, tool.params)
        problems += [
            f"{where}: {p}"
            for p in schema.validate(placeheld, tool.params, schema_json=tool.params_json)
        ]
        if step.condition is not None:
            problems += [f"{where}: {p}" for p in condition_problems(step.condition, earlier)]
        for ref in find_references([step.params, step.condition]):
            if ref.step_id not in seen:
                problems.append(
                    f"{where}: {ref.text} refers to {ref.step_id}, which does not come before it"
                )
        for dep in step.depends_on:
            if dep not in seen:
                problems.append(f"{where}: depends on {dep}, which does not come before it")
        seen.add(step.id)
        earlier.setdefault(step.id, tool)
    return problems + group_problems(plan.steps)


def condition_problems(text: str, earlier: Mapping[str, ToolDefinition]) -> list[str]:
    """What is wrong with a step's condition, given the tools of the steps before it: it
    does not parse, reads no step's output, reads a key its step's tool does not
    return, or compares values of types that tool's `returns` rule out."""
    try:
        condition = parse_condition(text)
    except ConditionError as exc:
        return [str(exc)]
    if not condition.references:
        return [
            f"condition {text!r} reads no earlier step's output; name one as ${{step_N.output.key}}"
        ]
    if any(ref.step_id not in earlier for ref in condition.references):
        return []  # a reference that does not point back is said once, above
    unknown = []
    for ref in dict.fromkeys(condition.references):
        returns = earlier[ref.step_id].returns.get("properties") or {}
        if returns and ref.path and isinstance(ref.path[0], str) and ref.path[0] not in returns:
            unknown.append(
                f"{ref.text} reads '{ref.path[0]}', which {earlier[ref.step_id].name} does "
                f"not return (it returns: {', '.join(sorted(returns))})"
            )
    return unknown or condition.type_problems(lambda ref: _returned_kinds(earlier, ref))


# JSON schema types as a condition's kinds (conditions.kind).
_KINDS = {
    "integer": "number",
    "number": "number",
    "string": "string",
    "boolean": "boolean",
    "array": "list",
    "object": "object",
    "null": "null",
}


def _returned_kinds(earlier: Mapping[str, ToolDefinition], ref: Reference) -> frozenset[str] | None:
    """What the referenced output may hold as its tool's `returns` declares it; None
    where it does not say (a nested key, an item of a list, an undeclared type)."""
    returns = earlier[ref.step_id].returns
    if not ref.path:
        declared: Any = returns.get("type", "object") if returns else None
    elif len(ref.path) == 1 and isinstance(ref.path[0], str):
        declared = ((returns.get("properties") or {}).get(ref.path[0]) or {}).get("type")
    else:
        return None
    names = declared if isinstance(declared, list) else [declared]
    kinds = {_KINDS.get(str(name)) for name in names}
    return None if None in kinds or not kinds else frozenset(k for k in kinds if k)


def _placeholders(params: Mapping[str, Any], tool_schema: Mapping[str, Any]) -> dict[str, Any]:
    """Params with whole-value references replaced by a sample of the declared type."""
    samples = {
        "string": "x",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
    }
    props = tool_schema.get("properties") or {}
    result: dict[str, Any] = {}
    for name, value in params.items():
        refs = find_references(value) if isinstance(value, str) else []
        if refs and len(refs) == 1 and refs[0].text == value:
            kind = (props.get(name) or {}).get("type", "string")
            if isinstance(kind, list):  # any of several types: the first stands in
                kind = kind[0] if kind else "string"
            sample = samples.get(kind, "x")
            if kind in ("integer", "number") and "minimum" in props.get(name, {}):
                sample = props[name]["minimum"]
            if kind == "string" and props.get(name, {}).get("minLength"):
                # The output it stands for is checked when the step runs.
                sample = "x" * int(props[name]["minLength"])
            result[name] = sample
        else:
            result[name] = value
    return result
