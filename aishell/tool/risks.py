"""A tool's risks and mitigations, as an approval shows them: what the statements do
differs by engine (a VACUUM that locks a SQLite file is online on PostgreSQL), so a
tool gives either one list that holds on every engine it implements, or a list per
engine, naming each of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

# By engine (dialect); every engine the tool implements has its list, maybe empty.
PerDialect = Mapping[str, tuple[str, ...]]


def per_dialect(
    data: Mapping[str, Any], key: str, dialects: Iterable[str], fail: Callable[[str], Exception]
) -> dict[str, tuple[str, ...]]:
    """`key` (risks or mitigations) of a tool definition, for each of its dialects.

    A list holds for every dialect. A mapping must name exactly the dialects the tool
    implements: a missing one would show its approvals nothing, an extra one text
    about an engine the tool never runs on."""
    wanted = sorted(dialects)
    value = data.get(key)
    if value is None:
        return {dialect: () for dialect in wanted}
    if isinstance(value, list):
        return dict.fromkeys(wanted, _sentences(value, key, fail))
    if not isinstance(value, dict):
        raise fail(f"{key} must be a list of sentences, or such a list per dialect")
    named = sorted(str(d) for d in value)
    if named != wanted:
        raise fail(
            f"{key}: a list per dialect must name exactly the dialects the tool implements "
            f"({', '.join(wanted)}), not {', '.join(named) or 'none'}"
        )
    return {d: _sentences(value[d] or [], f"{key}.{d}", fail) for d in wanted}


def _sentences(value: Any, where: str, fail: Callable[[str], Exception]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(f"{where} must be a list of sentences")
    return tuple(value)


def on(lists: PerDialect, dialect: str | None) -> tuple[str, ...]:
    """The sentences for one dialect; with none given, every dialect's, each once."""
    if dialect is not None:
        return lists.get(dialect, ())
    return tuple(dict.fromkeys(s for d in sorted(lists) for s in lists[d]))
