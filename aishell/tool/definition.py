"""The shape of a tool definition file (tools/*.yaml), as pydantic models.

What each key may hold is said once, in its field; a field's description is also what
an error about it says ("max_execution_time must be a positive number of seconds").
What a key means beyond its shape (whether SQL writes, whether a handler exists, which
locks and risks it declares) the registry and the tool modules check after this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StringConstraints,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from aishell.config.files import key_name
from aishell.config.kinds import Capability, Category
from aishell.config.options import PLANNED_BY
from aishell.risk import RiskLevel
from aishell.tool import params as schema

DIALECTS = ("sqlite", "postgresql", "mysql")
CHECK_SQL_MUST = "must be one read-only query"
_TRUE_OR_FALSE = "must be true or false"
# An implementation's form, as the union tries it; left out of the key an error names.
_FORMS = ("by sql", "by handler")


def _member_of(enum: type[Enum]) -> Callable[[Any], Any]:
    def member(value: Any) -> Any:
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(e.value for e in enum)
            raise ValueError(f"'{value}' is not one of: {allowed}") from None

    return member


def _capabilities(value: Any) -> frozenset[Capability]:
    member = _member_of(Capability)
    # Nothing (0, false, null) is none; a word alone is read letter by letter.
    if value and not isinstance(value, list | str | dict):
        raise ValueError("must be a list of capabilities")
    return frozenset(member(v) for v in value or [])


def _dialect(value: Any) -> Any:
    if value not in DIALECTS:
        raise ValueError(f"unknown dialect '{value}'")
    return value


def _form(spec: Any) -> str | None:
    """Which implementation a spec is; None (refused) unless exactly one of sql or handler."""
    if not isinstance(spec, dict) or len({"sql", "handler"} & set(spec)) != 1:
        return None
    return "by sql" if "sql" in spec else "by handler"


def _handler_alone(spec: Any) -> Any:
    if isinstance(spec, dict) and "handler" in spec and "sql" not in spec and len(spec) > 1:
        raise ValueError("a handler takes no other keys")
    return spec


_Statement = Annotated[str, StringConstraints(pattern=r"\S")]


class SqlSpec(BaseModel):
    """An implementation as SQL in the file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    sql: _Statement | Annotated[list[_Statement], Field(min_length=1)] = Field(
        description="must be a statement or a list of statements"
    )
    result: Literal["none", "one", "all"] = Field("none", description="must be none, one or all")
    check_sql: str | None = Field(None, description=CHECK_SQL_MUST)

    @property
    def statements(self) -> tuple[str, ...]:
        return (self.sql,) if isinstance(self.sql, str) else tuple(self.sql)


class HandlerSpec(BaseModel):
    """An implementation by a procedural handler of aishell.handlers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # A module of aishell.handlers (or of a package in it: postgresql.rebuild), then the
    # name; or a plugin's own, by its dotted path: package.module:name.
    handler: str = Field(
        pattern=r"^([a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+|\w+(\.\w+)*:\w+)$",
        description="must be 'module.name' inside aishell.handlers, or 'package.module:name'",
    )


Spec = Annotated[
    Union[Annotated[SqlSpec, Tag("by sql")], Annotated[HandlerSpec, Tag("by handler")]],  # noqa: UP007
    Discriminator(
        _form,
        custom_error_type="implementation_form",
        custom_error_message="give exactly one of sql or handler",
    ),
    BeforeValidator(_handler_alone),
]


class Planned(BaseModel):
    """Where an agent plans the tool, on the tool's own word: after each of the agent's
    steps of `after` on a table, in the job types listed, with its `table` param set
    to that table; `rationale` says why, `{table}` standing for the table."""

    model_config = ConfigDict(extra="forbid", strict=True)

    after: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="must name a tool")
    types: list[str] = Field(min_length=1, description="must list the job types it is planned in")
    rationale: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="must say why the step runs"
    )


class Example(BaseModel):
    """An example call; its params are checked against the tool's params schema."""

    model_config = ConfigDict(extra="allow")

    params: Any

    @model_validator(mode="before")
    @classmethod
    def _has_params(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "params" not in data:
            raise ValueError("must have params")
        return data


class ToolFile(BaseModel):
    """One tool definition file; the keys in the order they are checked."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="must be lower_snake_case")
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="must be a non-empty sentence"
    )
    category: Annotated[Category, BeforeValidator(_member_of(Category))]
    risk_level: Annotated[RiskLevel, BeforeValidator(_member_of(RiskLevel))]
    required_capabilities: Annotated[frozenset[Capability], BeforeValidator(_capabilities)]
    params: dict[str, Any] = Field(description="a schema must be a mapping")
    returns: dict[str, Any] = Field(description="a schema must be a mapping")
    max_execution_time: int = Field(gt=0, description="must be a positive number of seconds")
    max_retries: int | None = Field(None, ge=0, description="must be a whole number, 0 or more")
    idempotent: StrictBool = Field(description=_TRUE_OR_FALSE)
    requires_approval: StrictBool = Field(False, description=_TRUE_OR_FALSE)
    destructive: StrictBool = Field(False, description=_TRUE_OR_FALSE)
    run_report: StrictBool = Field(False, description=_TRUE_OR_FALSE)
    skips_held_tables: StrictBool = Field(False, description=_TRUE_OR_FALSE)
    rows_purged: str | None = Field(None, description="must name a field of returns")
    examples: list[Example] = Field(min_length=1, description="must list at least one example")
    implementations: dict[Annotated[str, BeforeValidator(_dialect)], Spec] = Field(
        min_length=1, description="must map at least one dialect to sql or a handler"
    )
    # Any text; a number written there reads as its digits.
    notes: Annotated[str, BeforeValidator(lambda v: str(v or "").strip())] = ""
    # Checked by tool.risks, tool.locks and tool.report, which word their own errors.
    risks: Any = None
    mitigations: Any = None
    locks: Any
    report: Any = None
    # By agent (config.options.PLANNED_BY): where it plans this tool, if anywhere.
    planned: dict[str, Planned] = Field(
        default_factory=dict, description="must map agents to where they plan it"
    )

    @field_validator("params")
    @classmethod
    def _params_schema(cls, params: dict[str, Any]) -> dict[str, Any]:
        _refuse(schema.check_schema(params, "params"))
        return params

    @field_validator("returns")
    @classmethod
    def _returns_schema(cls, returns: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        _refuse(schema.check_schema(returns, "returns"))
        if "params" in info.data and info.data["params"].get("type") != "object":
            raise _whole("params must be a schema of type object")
        return returns

    @field_validator("rows_purged")
    @classmethod
    def _a_field_of_returns(cls, name: str | None, info: ValidationInfo) -> str | None:
        fields = (info.data.get("returns") or {}).get("properties") or {}
        if name is not None and "returns" in info.data and name not in fields:
            raise ValueError("must name a field of returns")
        return name

    @field_validator("planned")
    @classmethod
    def _planned_by_agents(
        cls, planned: dict[str, Planned], info: ValidationInfo
    ) -> dict[str, Planned]:
        for agent, where in planned.items():
            if agent not in PLANNED_BY:
                known = ", ".join(sorted(PLANNED_BY))
                raise _whole(f"planned: no agent '{agent}' plans catalog tools; agents: {known}")
            unknown = [kind for kind in where.types if kind not in PLANNED_BY[agent]]
            if unknown:
                raise _whole(
                    f"planned.{agent}.types: no {agent} type {', '.join(map(repr, unknown))}; "
                    f"types are: {', '.join(PLANNED_BY[agent])}"
                )
        properties = (info.data.get("params") or {}).get("properties") or {}
        if planned and "params" in info.data and "table" not in properties:
            raise _whole("planned: a tool an agent plans takes its table as the param 'table'")
        return planned

    @field_validator("examples")
    @classmethod
    def _examples_fit(cls, examples: list[Example], info: ValidationInfo) -> list[Example]:
        if "params" in info.data:
            for i, example in enumerate(examples):
                _refuse(
                    schema.validate(example.params, info.data["params"], f"examples[{i}].params")
                )
        return examples


def _whole(message: str) -> PydanticCustomError:
    """An error whose message is the whole line (it names its keys itself)."""
    return PydanticCustomError("whole_line", "{line}", {"line": message})


def _refuse(problems: list[str]) -> None:
    if problems:
        raise _whole("; ".join(problems))


def read_tool_file(data: Any) -> ToolFile | str:
    """A tool file's data as a ToolFile, or the one line that says what is wrong first."""
    try:
        return ToolFile.model_validate(data)
    except ValidationError as exc:
        return _first_problem(exc.errors())


def _first_problem(errors: Sequence[ErrorDetails]) -> str:
    """Unknown keys first, then missing ones (each all together), then the first other."""
    for kind, what in (("extra_forbidden", "unknown"), ("missing", "missing required")):
        keys = sorted(str(e["loc"][0]) for e in errors if e["type"] == kind and len(e["loc"]) == 1)
        if keys:
            return f"{what} keys: {', '.join(keys)}"
    err = errors[0]
    loc = [p for p in err["loc"] if p not in _FORMS]
    if loc[-1:] == ["[key]"]:  # a dict's key, named by the dict: implementations
        loc = loc[:-2]
    if not loc and err["type"] == "model_type":
        return "a tool definition must be a mapping"
    if err["type"] == "whole_line":
        return err["msg"]
    if err["type"] == "implementation_form":
        return _said(key_name(loc, positions=True), err["msg"])
    if err["type"] == "value_error":
        return _said(key_name(loc, positions=True), str((err.get("ctx") or {}).get("error")))
    if err["type"] == "extra_forbidden":
        extra = sorted(str(e["loc"][-1]) for e in errors if e["loc"][:-1] == err["loc"][:-1])
        return _said(key_name(loc[:-1], positions=True), f"unknown keys: {', '.join(extra)}")
    for end in range(len(loc), 0, -1):
        said = _DESCRIPTIONS.get(str(loc[end - 1]))
        if said:
            return _said(key_name(loc[:end], positions=True), said)
    msg = err["msg"]
    return _said(key_name(loc, positions=True), msg[0].lower() + msg[1:])


def _said(key: str, text: str) -> str:
    """A key and what is wrong with it: `name must be ...`, `category: 'x' is not ...`."""
    if not key:
        return text
    return f"{key} {text}" if text.startswith("must ") else f"{key}: {text}"


# What an error about a field says, by the field's name (the names differ across models).
_DESCRIPTIONS = {
    name: field.description
    for model in (ToolFile, SqlSpec, HandlerSpec, Planned)
    for name, field in model.model_fields.items()
    if field.description
}
