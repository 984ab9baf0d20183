"""Parallel groups: consecutive steps of a plan that read only, named by one
`parallel_group`, which the executor may run at the same time.

What makes a group sound is checked here, on plans and plan files alike: its steps
come one after another, and none of them needs another of the same group (through
depends_on, its condition or a ${...} reference in its params), so the order in which
they run cannot change what they do. That each of them only reads is the registry's
word (validate_plan asks it for each tool's risk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aishell.plan.references import find_references

# What a group may be called: a short name, printable, as ids are.
MAX_GROUP_NAME = 64


class GroupedStep(Protocol):
    """What a group check reads of a step: a plan's Step and a plan file's FileStep."""

    @property
    def id(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def depends_on(self) -> Sequence[str]: ...

    @property
    def condition(self) -> str | None: ...

    @property
    def parallel_group(self) -> str | None: ...


def group_problems(steps: Sequence[GroupedStep]) -> list[str]:
    """Every problem with the plan's groups: a name that is empty or too long, a group
    whose steps are not consecutive, a step that needs another step of its group."""
    problems: list[str] = []
    closed: set[str] = set()  # groups that another step came after
    members: dict[str, set[str]] = {}
    previous: str | None = None
    for step in steps:
        group = step.parallel_group or None
        where = step.id
        if previous is not None and group != previous:
            closed.add(previous)
        if group is not None:
            named = isinstance(group, str) and group.strip() and group.isprintable()
            if not named or len(group) > MAX_GROUP_NAME:
                problems.append(
                    f"{where}: parallel_group {group!r} must be a printable name of 1 to "
                    f"{MAX_GROUP_NAME} characters"
                )
            if group in closed:
                problems.append(
                    f"{where}: parallel group {group!r} is not consecutive: its steps must "
                    "come one after another, with no other step between them"
                )
            own = members.setdefault(group, set())
            for needed in needs(step):
                if needed in own:
                    problems.append(
                        f"{where}: needs {needed} of its own parallel group {group!r}; steps "
                        "of one group run at the same time, so none may read another's "
                        "output or wait for it (move one out of the group)"
                    )
            own.add(step.id)
        previous = group
    return list(dict.fromkeys(problems))


def needs(step: GroupedStep) -> list[str]:
    """The steps a step needs, in the order it names them: its depends_on, and those its
    condition and params refer to."""
    named = [r.step_id for r in find_references([dict(step.params), step.condition])]
    return list(dict.fromkeys([*step.depends_on, *named]))
