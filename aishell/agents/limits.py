"""What a model's drafted plan of a job is held to (an agent's `draft_limits`), and the
copy aishell keeps of what an agent of another package returned for it."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DraftLimits:
    """What a job holds a model's drafted plan to, beyond what every plan is checked
    for: the rules an agent's own plan keeps for that job (an agent says so with a
    `draft_limits(job, ctx)` method). Each limit carries the reason a rejected draft is
    given."""

    # The tables its steps may name (None: any of the target's).
    tables: frozenset[str] | None = None
    # The tools that change the database it may plan (None: any), and why no other.
    changes: frozenset[str] | None = None
    changes_why: str = ""
    # Tools it may not plan, each with why.
    refused: Mapping[str, str] = field(default_factory=dict)
    # By tool: each param its steps must give, the value (None: not given at all), and
    # why; a param left out is held as the tool's default. Numbers are held by value (90
    # and 90.0 alike), a bool as a bool.
    required: Mapping[str, tuple[tuple[str, object, str], ...]] = field(default_factory=dict)
    # Tools it must plan a step of, each with why (a backup job's --verify: a validation).
    needed: Mapping[str, str] = field(default_factory=dict)
    # By tool: a param that must be one whole ${...} reference to an output key of an
    # earlier step of one of the tools named (the backup a validation checks is the one
    # the plan takes), and why: (param, tools, key, why).
    fed: Mapping[str, tuple[str, frozenset[str], str, str]] = field(default_factory=dict)
    # By tool: params its steps give all or none of, each then one whole ${...}
    # reference to the same earlier step of one of the tools named, at the output key
    # paired with it ("": the whole output), and why: ({param: key}, tools, why). A
    # purge's cutoff comes with the count that read it, from that very count.
    together: Mapping[str, tuple[Mapping[str, str], frozenset[str], str]] = field(
        default_factory=dict
    )


LIMITS_SHAPE = (
    "a DraftLimits of its fields' types (tables and changes sets of names or None, each "
    "reason a text, each required value plain data)"
)


def limits_copy(found: DraftLimits) -> DraftLimits | None:
    """A copy of aishell's own of the limits an agent of another package returned, so
    that what the draft is checked against cannot change under it; None: a field is not
    of its type."""
    try:
        required = {
            tool: tuple((p, json.loads(json.dumps(v, allow_nan=False)), why) for p, v, why in held)
            for tool, held in found.required.items()
        }
        fed = {
            tool: (p, _names(tools), key, why) for tool, (p, tools, key, why) in found.fed.items()
        }
        together = {
            tool: (_keys(params), _names(tools), why)
            for tool, (params, tools, why) in found.together.items()
        }
        copy = DraftLimits(
            tables=None if found.tables is None else _names(found.tables),
            changes=None if found.changes is None else _names(found.changes),
            changes_why=found.changes_why,
            refused=dict(found.refused),
            required=required,
            needed=dict(found.needed),
            fed=fed,
            together=together,
        )
    except (TypeError, ValueError, AttributeError):
        return None
    texts = [
        *(copy.tables or ()),
        *(copy.changes or ()),
        copy.changes_why,
        *(w for pair in (copy.refused, copy.needed) for item in pair.items() for w in item),
        *(w for tool, held in copy.required.items() for p, _, why in held for w in (tool, p, why)),
        *(
            w
            for tool, (p, tools, key, why) in copy.fed.items()
            for w in (tool, p, *tools, key, why)
        ),
        *(
            w
            for tool, (params, tools, why) in copy.together.items()
            for w in (tool, *params, *params.values(), *tools, why)
        ),
    ]
    return copy if all(isinstance(t, str) for t in texts) else None


def _names(value: object) -> frozenset[str]:
    """A set of names as given (a bare text is not a set of its letters)."""
    if isinstance(value, str) or not isinstance(value, Collection):
        raise TypeError(f"{type(value).__name__} is not a set of names")
    return frozenset(value)


def _keys(value: object) -> dict[str, str]:
    """A mapping of params to output keys as given (a copy: it cannot change later)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{type(value).__name__} is not a mapping of params to keys")
    return dict(value)
