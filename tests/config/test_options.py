"""Each option is defined once, in aishell.config.options: the command line's flags, the
config's settings and the catalog's tool params of the same name take their bounds,
choices and defaults from it. A second definition that drifts from it fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import annotated_types
import click
import pytest
from pydantic.fields import FieldInfo

from aishell.cli import cli
from aishell.config.bounds import MAX_COUNT
from aishell.config.models import AgentDefaults, PlannerConfig, PurgeLimits, PurgeSettings
from aishell.config.options import (
    APPROVE_UP_TO,
    IGNORE_WINDOW,
    JOB_OPTIONS,
    LOG_CLEANUP_OPTIONS,
    MAX_RUN_TIME,
    PLANNER,
    PLANNERS,
    RETENTION_DAYS,
    RUN_OPTIONS,
    SAFETY_LEVEL,
    SAFETY_LEVELS,
    SCHEDULE_MAX_RUN_TIME,
    Option,
)
from aishell.config.resources import bundled_catalog_dir
from aishell.policy.rules import APPROVAL_FROM
from aishell.registry import load_registry
from aishell.risk import RiskLevel

EVERY_OPTION = (
    *(o for options in JOB_OPTIONS.values() for o in options),
    *RUN_OPTIONS,
    APPROVE_UP_TO,
    SCHEDULE_MAX_RUN_TIME,
    IGNORE_WINDOW,
)
# Tool params that declare both the option's bounds, not only agree with those they
# declare: the retentions (check_retention holds a purge's to them at the DELETE too)
# and the waits for a table lock. (Every numeric param declares a maximum:
# test_every_numeric_param_of_the_catalog_has_a_maximum.)
BOUNDED_IN_THE_CATALOG = {
    ("count_table_rows", "retention_days"),
    ("delete_old_records", "retention_days"),
    ("cleanup_old_backups", "retention_days"),
    ("backup_database_full", "lock_wait_seconds"),
    ("backup_database_incremental", "lock_wait_seconds"),
    ("restore_backup", "lock_wait_seconds"),
}


def _click_options() -> list[tuple[str, click.Option]]:
    """Every option of every command, with the command's path."""
    found: list[tuple[str, click.Option]] = []

    def walk(command: click.Command, path: str) -> None:
        found.extend((path, p) for p in command.params if isinstance(p, click.Option))
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "aishell")
    return found


def _as_click_sees_it(option: click.Option) -> dict[str, Any]:
    kind = option.type
    return {
        "min": getattr(kind, "min", None),
        "max": getattr(kind, "max", getattr(kind, "most", None)),
        "choices": tuple(getattr(kind, "choices", ())),
        "default": option.default if option.show_default else None,
        "help": option.help,
        "name": option.name,
    }


def _as_the_table_says(option: Option) -> dict[str, Any]:
    flag = option.kind == "flag"
    # A flag one way only is off unless given; the job's default is the agent's.
    shown = option.shown_default and not (flag and "/" not in option.cli_flag)
    return {
        # A duration's minimum is Duration's second (test_durations_start_at_a_second).
        "min": None if option.kind in ("duration", "flag") else option.minimum,
        "max": None if flag else option.maximum,
        "choices": option.choices,
        "default": option.default if shown else None,
        "help": option.help,
        "name": option.param,
    }


def test_every_flag_of_an_option_in_the_table_is_the_table_s() -> None:
    """A command that declares such a flag by hand (other bounds, choices, default or
    help) fails: the flag must be made from the table."""
    by_flag: dict[str, list[Option]] = {}
    for option in EVERY_OPTION:
        if option.flag is not None:
            by_flag.setdefault(option.cli_flag.split("/")[0], []).append(option)
    seen: set[Option] = set()
    checked = 0
    for path, param in _click_options():
        candidates = by_flag.get(param.opts[0], [])
        if not candidates or (param.opts[0] == "--type" and param.name != "kind"):
            continue
        sees = _as_click_sees_it(param)
        same = [o for o in candidates if _as_the_table_says(o) == sees]
        assert same, f"{path} {param.opts[0]}: {sees} is none of {candidates}"
        seen.update(same)
        checked += 1
    assert checked > 30
    assert {o for o in EVERY_OPTION if o.flag is not None} == seen


def _bounds(field: FieldInfo) -> tuple[Any, Any]:
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return low, high


@pytest.mark.parametrize("option", LOG_CLEANUP_OPTIONS, ids=lambda o: o.key)
def test_the_purge_settings_take_the_option_s_bounds_and_default(option: Option) -> None:
    fields = PurgeSettings.model_fields
    key = option.config_key or option.key
    if key not in fields:  # the table and archive_to are the job's alone
        assert key in ("table", "archive_to")
        return
    low, high = _bounds(fields[key])
    if key == "max_rows_per_run":  # the flag has no upper bound; a config count fits 64 bits
        high = None
    assert (low, high, fields[key].default) == (option.minimum, option.maximum, option.default)


def test_the_run_settings_take_the_option_s_choices_bounds_and_defaults() -> None:
    safety = AgentDefaults.model_fields["safety_level"]
    assert get_args(safety.annotation) == SAFETY_LEVEL.choices == SAFETY_LEVELS
    assert safety.default == SAFETY_LEVEL.default
    planner = PlannerConfig.model_fields["default"]
    assert get_args(planner.annotation) == PLANNER.choices == PLANNERS
    assert planner.default == PLANNER.default
    assert _bounds(AgentDefaults.model_fields["max_run_seconds"])[1] == MAX_RUN_TIME.maximum
    floor = PurgeLimits.model_fields["min_retention_days"]
    assert _bounds(floor) == (RETENTION_DAYS.minimum, RETENTION_DAYS.maximum)


def test_every_safety_level_has_its_approval_threshold() -> None:
    assert tuple(APPROVAL_FROM) == SAFETY_LEVELS


def test_a_flag_approves_every_risk_but_critical() -> None:
    assert APPROVE_UP_TO.choices == ("safe", "low", "medium", "high")
    assert RiskLevel.CRITICAL not in APPROVE_UP_TO.choices


def _shared_params() -> list[tuple[str, str, dict[str, Any], Option]]:
    options = {o.key: o for options in JOB_OPTIONS.values() for o in options}
    found = []
    for tool in load_registry([bundled_catalog_dir()]).tools.values():
        for name, schema in tool.params.get("properties", {}).items():
            if name in options and options[name].kind in ("number", "integer", "duration"):
                found.append((tool.name, name, schema, options[name]))
    return found


@pytest.mark.parametrize(
    ("tool", "name", "schema", "option"),
    _shared_params(),
    ids=[f"{tool}.{name}" for tool, name, _schema, _option in _shared_params()],
)
def test_a_tool_param_that_is_an_option_declares_its_bounds(
    tool: str, name: str, schema: dict[str, Any], option: Option
) -> None:
    """The catalog may leave a minimum out (the command line and the config hold a job
    to it), but a bound it declares is the option's, and so is a default. An option with
    no maximum of its own is a count, which the command line holds to 64 bits: the
    catalog's maximum is that."""
    for bound in ("minimum", "maximum"):
        if bound in schema or (tool, name) in BOUNDED_IN_THE_CATALOG:
            declared = getattr(option, bound)
            if bound == "maximum" and declared is None:
                declared = MAX_COUNT
            assert schema.get(bound) == declared, f"{tool}.{name}.{bound}"
    if "default" in schema:
        assert schema["default"] == option.default, f"{tool}.{name}.default"


def test_the_catalog_s_retention_params_are_checked() -> None:
    names = {(tool, name) for tool, name, _schema, _option in _shared_params()}
    assert names >= BOUNDED_IN_THE_CATALOG
    assert ("cleanup_old_backups", "retention_days") in names


def _numeric_params(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every param, at any depth, that may be a number, with where it is."""
    kinds = schema.get("type")
    if {"integer", "number"} & set(kinds if isinstance(kinds, list) else [kinds]):
        yield where, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _numeric_params(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _numeric_params(schema["items"], f"{where}[]")


def test_every_numeric_param_of_the_catalog_has_a_maximum() -> None:
    """Without one a plan (re-signed, or drafted by a model) may carry a number that
    overflows where it is used: a sleep past time_t, a count past SQLite's 64 bits."""
    tools = load_registry([bundled_catalog_dir()]).tools.values()
    found = [
        (where, schema)
        for tool in tools
        for where, schema in _numeric_params(tool.params, tool.name)
    ]
    assert len(found) > 20
    assert [where for where, schema in found if "maximum" not in schema] == []
    assert all(schema["maximum"] <= MAX_COUNT for _where, schema in found)


def test_durations_start_at_a_second() -> None:
    """What Duration refuses below, the table's durations say."""
    durations = [o for o in EVERY_OPTION if o.kind == "duration"]
    assert durations and {o.minimum for o in durations} == {1}
