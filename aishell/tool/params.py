"""A small JSON-schema subset for tool params, with messages a DBA can act on.

Supported: type (string, integer, number, boolean, array, object, or a list of them), properties,
required, additionalProperties: false, items, enum, minimum, maximum, minLength,
default, description, `x-one-of` (a list of property names, exactly one of which an
object must have), `x-identifier` (table | column | index) marking a string
that names a database object and must be checked against the catalog, and `x-path`
(read | write) marking a string that names a file.
"""

from __future__ import annotations

import json
import math
from typing import Any

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


def validate(value: Any, schema: dict[str, Any], where: str = "params") -> list[str]:
    """Problems with a value against a schema; an empty list means valid.

    No number anywhere in the value may be NaN or infinite, whatever the schema says:
    compared with a limit, NaN is never below nor above it, so it would pass every check.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: {value} is not a finite number"]
    if not schema and isinstance(value, str):  # nothing to check (thousands in a plan)
        return []
    kinds = [k for k in _kinds(schema) if k in _TYPES]
    # bool is an int in Python; a schema integer must not accept True.
    matching = [
        k
        for k in kinds
        if isinstance(value, _TYPES[k])
        and not (k in ("integer", "number") and isinstance(value, bool))
    ]
    if kinds and not matching:
        return [f"{where}: expected {' or '.join(kinds)}, got {_type_name(value)}"]
    kind = matching[0] if matching else None
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        problems.append(f"{where}: {value!r} is not one of {allowed}")
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} is below the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} is above the maximum {schema['maximum']}")
    if kind == "string" and len(value) < schema.get("minLength", 0):
        problems.append(f"{where}: must be at least {schema['minLength']} characters")
    if kind == "array":
        items = schema.get("items") or {}
        # A list of thousands of table names: a plain string needs no closer look.
        plain = _kinds(items) == ["string"] and not {"enum", "minLength"} & items.keys()
        for i, item in enumerate(value):
            if not (plain and isinstance(item, str)):
                problems += validate(item, items, f"{where}[{i}]")
    elif kind is None and isinstance(value, list | tuple | dict) and not _all_finite(value):
        # Only where a number is not finite is each part looked at, to say where.
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            part = f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]"
            problems += validate(item, {}, part)
    if kind == "object":
        props = schema.get("properties") or {}
        problems += _presence(value, schema, where)
        for name, item in value.items():
            if name in props:
                problems += validate(item, props[name], f"{where}.{name}")
            elif schema.get("additionalProperties", True) is False:
                known = ", ".join(sorted(props)) or "(none)"
                problems.append(f"{where}: unknown parameter '{name}'; expected one of: {known}")
            else:
                problems += validate(item, {}, f"{where}.{name}")
    return problems


def _all_finite(value: Any) -> bool:
    """No NaN or infinite number anywhere in value: one pass of the C JSON encoder, for
    a step's input of thousands of tables' figures."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return False
    return True


def _presence(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    """An object's required properties, and exactly one of its x-one-of."""
    problems = [
        f"{where}: missing required '{name}'"
        for name in schema.get("required") or []
        if name not in value
    ]
    one_of = schema.get("x-one-of") or []
    if one_of and sum(name in value for name in one_of) != 1:
        names = " or ".join(f"'{n}'" for n in one_of)
        problems.append(f"{where}: give exactly one of {names}")
    return problems


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
    for name, types in _TYPES.items():
        if isinstance(value, types) and not (
            name in ("integer", "number") and isinstance(value, bool)
        ):
            return name
    return "null" if value is None else type(value).__name__
