"""A small JSON-schema subset for tool params, with messages a DBA can act on.

A tool file declares its params in this subset; a value is checked by a pydantic
model made from the schema (once per schema), and pydantic's errors are worded here
from the schema at the place they name.

Supported: type (string, integer, number, boolean, array, object, or a list of them), properties,
required, additionalProperties: false, items, enum, minimum, maximum, minLength,
default, description, `x-one-of` (a list of property names, exactly one of which an
object must have), `x-identifier` (table | column | index) marking a string
that names a database object and must be checked against the catalog, and `x-path`
(read | write) marking a string that names a file. An integer is held to 64 bits where
its schema gives no bounds of its own: it is bound to SQLite or a server.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Annotated, Any, ClassVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    ModelWrapValidatorHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from aishell.config.bounds import MAX_COUNT
from aishell.config.files import key_name

IDENTIFIER_KINDS = ("table", "column", "index")
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}
_SCHEMA_KEYS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "default",
    "description",
    "x-identifier",
    "x-path",
    "x-one-of",
}
PATH_MODES = ("read", "write")


def check_schema(schema: Any, where: str) -> list[str]:
    """Problems with a schema itself (used when the catalog loads)."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be a mapping"]
    unknown = set(schema) - _SCHEMA_KEYS
    if unknown:
        problems.append(f"{where}: unsupported schema keys: {', '.join(sorted(unknown))}")
    kinds = _kinds(schema)
    if not kinds or any(k not in _TYPES for k in kinds):
        problems.append(
            f"{where}: type must be one of {', '.join(_TYPES)} or a list of them, "
            f"not {schema.get('type')!r}"
        )
    ident = schema.get("x-identifier")
    if ident is not None and ident not in IDENTIFIER_KINDS:
        problems.append(f"{where}: x-identifier must be one of {', '.join(IDENTIFIER_KINDS)}")
    path = schema.get("x-path")
    if path is not None and path not in PATH_MODES:
        problems.append(f"{where}: x-path must be one of {', '.join(PATH_MODES)}")
    for name, sub in (schema.get("properties") or {}).items():
        problems += check_schema(sub, f"{where}.{name}")
    for name in schema.get("required") or []:
        if name not in (schema.get("properties") or {}):
            problems.append(f"{where}: required '{name}' is not among the properties")
    for name in schema.get("x-one-of") or []:
        if name not in (schema.get("properties") or {}):
            problems.append(f"{where}: x-one-of '{name}' is not among the properties")
    if "items" in schema:
        problems += check_schema(schema["items"], f"{where}[]")
    return problems


def validate(
    value: Any, schema: dict[str, Any], where: str = "params", schema_json: str | None = None
) -> list[str]:
    """Problems with a value against a schema; an empty list means valid.

    No number anywhere in the value may be NaN or infinite, whatever the schema says:
    compared with a limit, NaN is never below nor above it, so it would pass every check.
    Such a number is named where it stands, and nothing else is said about that place.
    `schema_json`: the schema as `canonical` gives it, when the caller checks many values
    against one schema.
    """
    if not schema and isinstance(value, str):  # nothing to check (thousands in a plan)
        return []
    errors: list[tuple[tuple[str | int, ...], ErrorDetails]] = []
    try:
        params_adapter(schema_json or canonical(schema)).validate_python(value)
    except ValidationError as exc:
        errors = [(_schema_loc(err["loc"], schema), err) for err in exc.errors()]
    # What is not examined: beneath a value of the wrong type, and an unknown param.
    unread = [loc for loc, err in errors if err["type"] not in _NOT_TYPE_ERRORS]
    unknown = [loc for loc, err in errors if err["type"] == "extra_forbidden"]
    not_finite = [
        (loc, v)
        for loc, v in _not_finite(value, ())
        if not any(_beneath(loc, u) and loc != u for u in unread)
        and not any(_beneath(loc, u) for u in unknown)
    ]
    said = [loc for loc, _ in not_finite]
    found = [
        (_order(loc, value), f"{key_name(loc, where, True)}: {v} is not a finite number")
        for loc, v in not_finite
    ]
    found += [
        (_order(loc, value, err["type"], schema), _problem(err, loc, schema, where))
        for loc, err in errors
        if not any(_beneath(loc, s) for s in said)
    ]
    return [problem for _, problem in sorted(found, key=lambda f: f[0])]


def _order(
    loc: tuple[str | int, ...], value: Any, kind: str = "", schema: dict[str, Any] | None = None
) -> tuple[int, ...]:
    """Where a problem comes in the list: by the order of the value's own keys, and an
    object's missing params (in the order required lists them), then its x-one-of,
    before what it holds."""
    if kind == "missing":
        required = (_node(schema, loc[:-1]) or {}).get("required") or []
        first = required.index(loc[-1]) if loc[-1] in required else len(required)
        return (*_order(loc[:-1], value), first - len(required) - 1)
    if kind == "one_of":
        return (*_order(loc, value), -1)
    order: list[int] = []
    for part in loc:
        if isinstance(value, dict) and part in value:
            order.append(list(value).index(part))
            value = value[part]
        elif isinstance(value, list | tuple) and isinstance(part, int):
            order.append(part)
            value = value[part]
        else:
            order.append(-1)
            value = None
    return tuple(order)


# The errors that are about a value of the expected type (every other is a wrong type).
_NOT_TYPE_ERRORS = frozenset(
    {
        "missing",
        "extra_forbidden",
        "greater_than_equal",
        "less_than_equal",
        "string_too_short",
        "not_in_enum",
        "one_of",
    }
)


def _beneath(loc: tuple[str | int, ...], above: tuple[str | int, ...]) -> bool:
    """Whether loc is the place above or lies within it."""
    return loc[: len(above)] == above


def _not_finite(value: Any, loc: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], Any]]:
    """Where value holds a NaN or an infinite number; one pass of the C JSON encoder
    first, for a step's input of thousands of tables' figures."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(loc, value)]
    if not isinstance(value, list | tuple | dict):
        return []
    try:
        json.dumps(value, allow_nan=False, default=str)
        return []
    except ValueError:
        pass
    items = value.items() if isinstance(value, dict) else enumerate(value)
    return [found for key, item in items for found in _not_finite(item, (*loc, key))]


def _schema_loc(loc: tuple[str | int, ...], schema: dict[str, Any]) -> tuple[str | int, ...]:
    """A pydantic location with the tags of type unions left out: the value's own path."""
    kept: list[str | int] = []
    node: dict[str, Any] | None = schema
    for part in loc:
        if node is not None and len(_kinds(node)) > 1 and part in _kinds(node):
            continue  # the union member pydantic tried, named by its kind
        kept.append(part)
        node = _sub_schema(node, part)
    return tuple(kept)


def _node(schema: dict[str, Any] | None, loc: tuple[str | int, ...]) -> dict[str, Any] | None:
    """The part of a schema that describes the value at loc."""
    for part in loc:
        schema = _sub_schema(schema, part)
    return schema


def _sub_schema(node: dict[str, Any] | None, part: str | int) -> dict[str, Any] | None:
    if node is None:
        return None
    if isinstance(part, int):
        return node.get("items") or {}
    return (node.get("properties") or {}).get(part)


def _problem(
    err: ErrorDetails, loc: tuple[str | int, ...], schema: dict[str, Any], where: str
) -> str:
    """One pydantic error as the line a DBA reads, worded from the schema at its place."""
    node, value, kind = _node(schema, loc) or {}, err["input"], err["type"]
    key = key_name(loc, where, True)
    if kind == "missing":
        return f"{key_name(loc[:-1], where, True)}: missing required '{loc[-1]}'"
    if kind == "extra_forbidden":
        known = ", ".join(sorted((_node(schema, loc[:-1]) or {}).get("properties") or {}))
        parent = key_name(loc[:-1], where, True)
        return f"{parent}: unknown parameter '{loc[-1]}'; expected one of: {known or '(none)'}"
    # The bound as checked: the schema's, or the 64 bits an integer without one holds.
    if kind == "greater_than_equal":
        return f"{key}: {value} is below the minimum {node.get('minimum', err['ctx']['ge'])}"
    if kind == "less_than_equal":
        return f"{key}: {value} is above the maximum {node.get('maximum', err['ctx']['le'])}"
    if kind == "string_too_short":
        return f"{key}: must be at least {node['minLength']} characters"
    if kind in ("not_in_enum", "one_of"):
        return f"{key}: {err['msg']}"
    return f"{key}: expected {' or '.join(_kinds(node))}, got {_type_name(value)}"


def canonical(schema: dict[str, Any]) -> str:
    """A schema's canonical JSON: what params_adapter is made from."""
    return json.dumps(schema, sort_keys=True, default=str)


@functools.lru_cache(maxsize=256)
def params_adapter(schema_json: str) -> TypeAdapter[Any]:
    """The pydantic validator of a params schema (given as its canonical JSON), made
    once per schema: plans check many steps of the same few tools."""
    return TypeAdapter(_annotation(json.loads(schema_json), "Params"))


# The strict pydantic type of each JSON type: an integer is not a boolean, 1.0 is not an
# integer, and text is never read as a number.
_STRICT: dict[str, Any] = {
    "string": StrictStr,
    "integer": StrictInt,
    "number": StrictFloat,
    "boolean": StrictBool,
}


def _annotation(schema: dict[str, Any], name: str) -> Any:
    """The pydantic type of a value the schema describes."""
    kinds = [k for k in _kinds(schema) if k in _TYPES]
    if not kinds:
        annotation: Any = Any
    elif len(kinds) == 1:
        annotation = _one_kind(kinds[0], schema, name)
    else:  # tried by the value's own JSON type, so an error names the kinds expected
        members = tuple(Annotated[_one_kind(k, schema, name), Tag(k)] for k in kinds)
        annotation = Annotated[Union[members], Discriminator(_kind_picker(kinds))]  # noqa: UP007
    if "enum" in schema:
        annotation = Annotated[annotation, AfterValidator(_enum_check(schema["enum"]))]
    return annotation


def _one_kind(kind: str, schema: dict[str, Any], name: str) -> Any:
    if kind == "integer":
        # Every integer param is bound to SQLite or a server, which hold 64 bits: past
        # them the driver fails, so a schema without bounds of its own takes those.
        least, most = schema.get("minimum", -MAX_COUNT), schema.get("maximum", MAX_COUNT)
        return Annotated[StrictInt, Field(ge=least, le=most)]
    if kind == "number":
        limits = Field(ge=schema.get("minimum"), le=schema.get("maximum"))
        return Annotated[StrictFloat, limits]
    if kind == "string":
        return Annotated[StrictStr, Field(min_length=schema.get("minLength"))]
    if kind in _STRICT:
        return _STRICT[kind]
    if kind == "array":
        return list[_annotation(schema.get("items") or {}, f"{name}_item")]  # type: ignore[misc]
    if not {"properties", "required", "additionalProperties", "x-one-of"} & schema.keys():
        return dict[str, Any]
    return _object_model(schema, name)


def _object_model(schema: dict[str, Any], name: str) -> type[BaseModel]:
    """An object with declared properties as a model. Fields are named by position and
    take the property's name as alias: a property may be named like a model's method."""
    required = set(schema.get("required") or [])
    fields: dict[str, Any] = {}
    for i, (prop, sub) in enumerate((schema.get("properties") or {}).items()):
        annotation = _annotation(sub, f"{name}_{i}")
        default = ... if prop in required else None
        fields[f"p{i}"] = (annotation, Field(default, alias=prop))
    for prop in required - set(schema.get("properties") or {}):
        fields[f"p{len(fields)}"] = (Any, Field(..., alias=prop))
    closed = schema.get("additionalProperties", True) is False
    base: type[_Params] = _ClosedParams if closed else _Params
    model = create_model(name, __base__=base, **fields)
    model.one_of = tuple(schema.get("x-one-of") or ())
    return model


class _Params(BaseModel):
    """An object of params: other keys taken as they are, and x-one-of."""

    model_config = ConfigDict(extra="allow")
    # Names of which an object must have exactly one.
    one_of: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _exactly_one(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not cls.one_of or not isinstance(data, dict):
            return handler(data)
        if sum(name in data for name in cls.one_of) == 1:
            return handler(data)
        names = " or ".join(f"'{n}'" for n in cls.one_of)
        errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(
                    "one_of", "give exactly one of {names}", {"names": names}
                ),
                "loc": (),
                "input": data,
            }
        ]
        try:
            handler(data)
        except ValidationError as exc:
            errors += [_again(e) for e in exc.errors()]
        raise ValidationError.from_exception_data(cls.__name__, errors)


class _ClosedParams(_Params):
    """An object of params whose schema says additionalProperties: false."""

    model_config = ConfigDict(extra="forbid")


def _again(err: ErrorDetails) -> InitErrorDetails:
    """An error of a nested validation, raised again beside one of our own."""
    again: InitErrorDetails = {"type": err["type"], "loc": err["loc"], "input": err["input"]}
    if "ctx" in err:
        again["ctx"] = err["ctx"]
    if err["type"] in ("not_in_enum", "one_of"):
        again["type"] = PydanticCustomError(err["type"], err["msg"])
    return again


def _kind_picker(kinds: list[str]) -> Any:
    def pick(value: Any) -> str | None:
        return next((k for k in kinds if _is_kind(value, k)), None)

    return pick


def _enum_check(allowed: list[Any]) -> Any:
    def check(value: Any) -> Any:
        if value not in allowed:
            listed = ", ".join(repr(v) for v in allowed)
            raise PydanticCustomError(
                "not_in_enum",
                "{value} is not one of {allowed}",
                {"value": repr(value), "allowed": listed},
            )
        return value

    return check


def _is_kind(value: Any, kind: str) -> bool:
    # bool is an int in Python; a schema integer must not accept True.
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def with_defaults(params: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of params with the schema's defaults filled in for absent keys."""
    filled = dict(params)
    for name, sub in (schema.get("properties") or {}).items():
        if name not in filled and "default" in sub:
            filled[name] = sub["default"]
    return filled


def identifier_params(schema: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Params naming database objects: name -> (kind, is_list)."""
    found: dict[str, tuple[str, bool]] = {}
    for name, sub in (schema.get("properties") or {}).items():
        if "x-identifier" in sub:
            found[name] = (sub["x-identifier"], False)
        elif sub.get("type") == "array" and "x-identifier" in (sub.get("items") or {}):
            found[name] = (sub["items"]["x-identifier"], True)
    return found


def path_params(schema: dict[str, Any]) -> dict[str, str]:
    """Params naming files: name -> read or write."""
    return {
        name: sub["x-path"]
        for name, sub in (schema.get("properties") or {}).items()
        if "x-path" in sub
    }


def _kinds(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    return [str(k) for k in kind] if isinstance(kind, list) else [kind] if kind else []


def _type_name(value: Any) -> str:
    for name in _TYPES:
        if _is_kind(value, name):
            return name
    return "null" if value is None else type(value).__name__
