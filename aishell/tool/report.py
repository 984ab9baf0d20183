"""What one step of a tool adds to the maintenance report: the `report:` of its definition.

The report (aishell/handlers/report.py) knows its sections, never the tools: each tool
says which section its output goes to, and how. A step the server declined for its
table (the table is in its output's skipped_tables) did none of its work and adds
nothing but the skip.

    report: {add: indexes_rebuilt, from: indexes_rebuilt}  # the output's number
    report: {add: statistics_updated}                      # one per step
    report: {add: tables_optimized, when: vacuumed}        # one, if the output says so
    report: {set: repaired_tables, from: repaired_tables}  # the output's list
    report: {set: corruption_repaired, from: repaired_tables}
    report: {per_table: fragmentation, fields: [fragmentation_percent]}
    report: {per_table: dead_rows_kept, fields: [dead_rows_kept], when: kept_by}
    report: {merge: corruption_check}                      # merged per table with others

A tool whose step does two kinds of work gives a list, one rule per section:

    report: [{add: tables_optimized, when: vacuumed},
             {add: statistics_updated, when: statistics_updated}]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["add", "set", "per_table", "merge"]

# The report's sections each action may name, so that a tool's rule cannot change the
# report's shape: the counters, the lists a step's output replaces, the per-table maps,
# and the checks merged per table (the corruption checks, with the run's baseline).
SECTIONS: Mapping[Action, tuple[str, ...]] = {
    "add": ("indexes_rebuilt", "statistics_updated", "tables_optimized"),
    "set": ("repaired_tables", "corruption_repaired"),
    "per_table": ("fragmentation", "dead_rows_kept"),
    "merge": ("corruption_check",),
}
# Besides its action, what each action takes ("from" is the YAML's name for source).
_OPTIONS: Mapping[Action, frozenset[str]] = {
    "add": frozenset({"from", "when"}),
    "set": frozenset({"from"}),
    "per_table": frozenset({"fields", "when"}),
    "merge": frozenset(),
}
_REQUIRED: Mapping[Action, frozenset[str]] = {
    "add": frozenset(),
    "set": frozenset({"from"}),
    "per_table": frozenset({"fields"}),
    "merge": frozenset(),
}


@dataclass(frozen=True)
class ReportRule:
    """One tool's contribution to a section of the report."""

    action: Action
    section: str
    # add: the output's field whose number is added (None: 1 per step); set: the
    # output's field whose list replaces the section's.
    source: str | None = None
    # add, per_table: only when this output field is true.
    when: str | None = None
    # per_table: the output's fields kept under the step's table.
    fields: tuple[str, ...] = ()


def parse_report_rules(spec: Any, fail: Callable[[str], Exception]) -> tuple[ReportRule, ...]:
    """The `report:` of a tool definition: one rule, or a list of them for different
    sections; any problem is fail(message)."""
    if not isinstance(spec, list):
        return (parse_report_rule(spec, fail),)
    if not spec:
        raise fail("report: an empty list; leave report out instead")
    rules = tuple(parse_report_rule(item, fail) for item in spec)
    sections = [r.section for r in rules]
    twice = sorted({s for s in sections if sections.count(s) > 1})
    if twice:
        raise fail(f"report: more than one rule for {', '.join(twice)}")
    return rules


def parse_report_rule(spec: Any, fail: Callable[[str], Exception]) -> ReportRule:
    """The `report:` of a tool definition; any problem is fail(message)."""
    if not isinstance(spec, dict):
        raise fail("report must be a mapping such as {add: statistics_updated}, or a list of them")
    actions = [a for a in SECTIONS if a in spec]
    if len(actions) != 1:
        raise fail(f"report: give exactly one of {', '.join(SECTIONS)}")
    action = actions[0]
    section = spec[action]
    if section not in SECTIONS[action]:
        raise fail(f"report.{action}: '{section}' is not one of: {', '.join(SECTIONS[action])}")
    unknown = set(spec) - {action} - _OPTIONS[action]
    if unknown:
        raise fail(f"report: {action} takes no {', '.join(sorted(unknown))}")
    missing = _REQUIRED[action] - set(spec)
    if missing:
        raise fail(f"report: {action} needs {', '.join(sorted(missing))}")
    for key in ("from", "when"):
        if key in spec and not _is_name(spec[key]):
            raise fail(f"report.{key} must name a field of the tool's output")
    fields = spec.get("fields", [])
    if not isinstance(fields, list) or not all(_is_name(f) for f in fields):
        raise fail("report.fields must list fields of the tool's output")
    if action == "per_table" and not fields:
        raise fail("report.fields must list at least one field of the tool's output")
    return ReportRule(
        action=action,
        section=section,
        source=spec.get("from"),
        when=spec.get("when"),
        fields=tuple(fields),
    )


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def check_against_result(
    rules: tuple[ReportRule, ...], mode: str, where: str, fail: Callable[[str], Exception]
) -> None:
    """Refuse, at load, a rule that would add the list a tool of fixed SQL with result
    `all` outputs (its `rows`, empty or not) as if it were a number. A field the output
    lacks adds nothing, as the module's docstring says."""
    for rule in rules:
        if rule.action == "add" and mode == "all" and rule.source == "rows":
            raise fail(
                f"report: {where}.result is all, so rows is a list of rows, not a number "
                "to add; count them in the SQL (result: one) instead"
            )
