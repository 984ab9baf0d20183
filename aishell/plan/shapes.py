"""The shapes of plans as files and drafts, as pydantic models.

A saved plan file holds exactly the keys of PlanFile, each of its JSON type: a file
cannot carry what the signature does not explain. A drafted plan (the model planner's
answer) has the shape of Draft, and the JSON schema the model is asked to follow is
made from the same model, so the schema and the check cannot disagree.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, create_model
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

from aishell.plan.groups import group_problems

_FILE = ConfigDict(extra="forbid", strict=True)


class FileStep(BaseModel):
    """A step as a plan file holds it."""

    model_config = _FILE

    id: str
    tool: str
    params: dict[str, Any]
    rationale: str
    depends_on: list[str] = []
    condition: str = ""
    always_run: StrictBool = False
    parallel_group: str = ""


class Signature(BaseModel):
    """The HMAC a home's key put on a plan file."""

    model_config = _FILE

    alg: str
    key_id: str
    value: str


class PlanFile(BaseModel):
    """A saved plan file (`aishell plan ... --out`), keys in the order messages list them."""

    model_config = _FILE

    format: int
    agent: str
    target: str
    dialect: str
    job: dict[str, Any]
    steps: list[FileStep]
    tool_fingerprints: dict[str, Any]
    assumptions: dict[str, Any]
    drafted_by: dict[str, Any] = {}
    target_identity: str
    reviewed: dict[str, Any] = {}
    plan_hash: str
    signature: Signature


def plan_file_problems(data: dict[str, Any]) -> list[str]:
    """What in a plan file's keys is unknown, missing or of the wrong JSON type: those of
    the file, then of each step, then of the signature; an empty list means none."""
    try:
        plan = PlanFile.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=_order)
        return list(dict.fromkeys(_problem(err) for err in errors))
    return group_problems(plan.steps)


def _order(err: ErrorDetails) -> tuple[Any, ...]:
    """Where an error comes: by the object it is in (the file, steps[i], the signature),
    its unknown keys first, sorted, then the others by field."""
    loc = err["loc"]
    if loc[0] == "steps" and len(loc) == 2:  # a step that is not an object
        return (1, loc[1], -1)
    if loc[0] == "steps" and len(loc) > 2:
        group: tuple[Any, ...] = (1, loc[1])
        inner: type[BaseModel] = FileStep
        rest = loc[2:]
    elif loc[0] == "signature" and len(loc) > 1:
        group, inner, rest = (2,), Signature, loc[1:]
    else:
        group, inner, rest = (0,), PlanFile, loc
    if err["type"] == "extra_forbidden":
        return (*group, 0, str(rest[0]))
    # An item of depends_on after every key of its step.
    return (*group, 1 + (len(rest) > 1), list(inner.model_fields).index(str(rest[0])))


def _problem(err: ErrorDetails) -> str:
    loc = err["loc"]
    model: type[BaseModel] = PlanFile
    where = ""
    if loc[0] == "steps" and len(loc) > 1:
        if len(loc) == 2:
            return f"steps[{loc[1]}] must be an object, not {json_type(err['input'])}"
        model, where, loc = FileStep, f"steps[{loc[1]}]: ", loc[2:]
    elif loc[0] == "signature" and len(loc) > 1:
        model, where, loc = Signature, "signature: ", loc[1:]
    name = str(loc[0])
    if err["type"] == "extra_forbidden":
        return f"{where}unknown key {name!r} (expected: {', '.join(model.model_fields)})"
    if err["type"] == "missing":
        return f"{where}missing key {name!r}"
    if len(loc) > 1:  # an item of depends_on
        return f"{where}{name!r} must be a list of step ids"
    expected = _JSON_NAMES[_json_kind(model.model_fields[name].annotation)]
    return f"{where}{name!r} must be {expected}, not {json_type(err['input'])}"


_JSON_NAMES = {
    int: "an integer",
    str: "a string",
    dict: "an object",
    list: "a list",
    bool: "true or false",
}


def _json_kind(annotation: Any) -> type:
    """The JSON type a field holds: int, str, dict, list, bool (a model is an object)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _json_kind(next(a for a in typing.get_args(annotation) if a is not type(None)))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return dict
    if origin is typing.Annotated:
        return _json_kind(typing.get_args(annotation)[0])
    return typing.cast(type, origin or annotation)


def json_type(value: Any) -> str:
    """What a JSON value is, in the words of messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    for kind, name in ((int, "an integer"), (float, "a number"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a list" if isinstance(value, list) else "an object"


class DraftStep(BaseModel):
    """A step as the model planner drafts it; its position gives its id."""

    model_config = ConfigDict(strict=True)

    # Taken when given, but never asked for: the position is the id.
    id: SkipJsonSchema[Any] = None
    tool: str = Field(min_length=1)
    params: dict[str, Any]
    rationale: str
    # A condition over earlier outputs (conditions.py): a ${step_N.output.key} reference,
    # which holds when non-empty, or a comparison such as `len(${step_0.output.t}) > 0`.
    condition: str | SkipJsonSchema[None] = None
    depends_on: SkipJsonSchema[list[str] | None] = None
    # Consecutive steps that only read, run at the same time (plan/groups.py): none of
    # a group may refer to another of it.
    parallel_group: str | SkipJsonSchema[None] = None


class Draft(BaseModel):
    """The model planner's answer: a plan's steps, and what it says of them."""

    model_config = ConfigDict(strict=True)

    summary: str
    steps: list[DraftStep]


def draft_model(tools: Sequence[str], agents: Sequence[str]) -> type[Draft]:
    """Draft with the tools the model may name, and the agent when there are several."""
    tool: Any = Literal[tuple(sorted(tools))]
    step = create_model("DraftStep", __base__=DraftStep, tool=(tool, ...))
    fields: dict[str, Any] = {"steps": (list[step], ...)}
    if len(agents) > 1:
        agent: Any = Literal[tuple(sorted(agents))]
        fields["agent"] = (agent, ...)
    return create_model("Draft", __base__=Draft, **fields)


def draft_schema(tools: Sequence[str], agents: Sequence[str]) -> dict[str, Any]:
    """The JSON schema of a draft, passed as Ollama's structured-output format: nested
    models written in place, as the format wants one self-contained schema."""
    generated = draft_model(tools, agents).model_json_schema()
    defs = generated.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return typing.cast(dict[str, Any], inline(generated))
