"""Plans as files: planning a job to preview or save it, the signed plan file, and the
checks a saved plan passes against its target before `apply_plan` runs it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from aishell.commands.assumptions import planned_tables
from aishell.commands.planner import build_plan
from aishell.commands.previews import PlanPreview, preview_plan
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.config.numbers import FloatRangeLost, json_float
from aishell.config.places import home_private_places
from aishell.errors import PlanError, UsageError
from aishell.executor import FINISHED
from aishell.executor.resume import estimate_shown, locks_shown, statements_shown
from aishell.files import PLAN_LIMIT, read_regular, write_beside
from aishell.plan.model import (
    Plan,
    SavedPlan,
    clip,
    listed,
    private_path_problems,
    tables_with_columns,
)
from aishell.plan.references import find_references
from aishell.registry import Registry
from aishell.state import signing
from aishell.state.store import StateStore
from aishell.targets.engines import Target, open_target
from aishell.targets.fingerprints import table_identities
from aishell.targets.identity import plan_identity
from aishell.targets.tables import TableCatalog
from aishell.tool.params import identifier_params

if TYPE_CHECKING:
    from aishell.planners.llm import Notice


def plan_job(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    *,
    safety_level: str | None = None,
    out: Path | None = None,
    planner: str | None = None,
    notice: Notice | None = None,
) -> PlanPreview:
    """Plan a job and preview it: each step's risk, whether it needs approval, its SQL.

    Planning opens the target read-only: a preview never changes anything. With
    `out`, the plan is saved signed with the home's key, for `apply_plan`. `planner`
    is rules or llm (default: the config's planner.default).
    """
    if out is not None:
        _check_out(config, out)  # before planning, which may take a model minutes
    registry = load_catalog(config)
    handle = open_target(config, target, read_only=True)
    try:
        conn = handle.connect()
        try:
            # Read once: planning and the preview see the same tables.
            catalog = TableCatalog.read(conn)
        finally:
            conn.close()
        plan = build_plan(config, registry, handle, agent_name, job, planner, notice, catalog)
        writing_nothing_private(config, registry, plan)
        if out is not None:
            plan = _pinned(handle, plan)
        level = safety_level or config.agent(agent_name).defaults.safety_level
        preview = preview_plan(config, registry, handle, plan, level, catalog)
    finally:
        handle.close()
    if out is not None:
        save_plan(config, replace(plan, reviewed=_reviewed(preview, level)), out)
    return preview


def _reviewed(preview: PlanPreview, level: str) -> dict[str, Any]:
    """What the person saw of each step when the plan was saved, which `apply` holds its
    steps to: the statements, and the risk, reasons and lock waits each was judged at."""
    return {
        "safety_level": level,
        "statements": {s.step_id: statements_shown(s.sql) for s in preview.steps},
        "judged": {
            s.step_id: {
                "risk": s.risk_level,
                "reasons": list(s.reasons),
                # The lock waits it showed: a longer one at `apply` is not what was seen.
                "locks": locks_shown(s.locks),
            }
            for s in preview.steps
        },
        # What each step said it would do (the backups a cleanup deletes), which it holds to.
        "estimates": {s.step_id: estimate_shown(s.estimate) for s in preview.steps if s.estimate},
    }


def make_plan(
    config: Config,
    agent_name: str,
    job: dict[str, Any],
    target: str | None = None,
    planner: str | None = None,
) -> Plan:
    """Plan a job, validated, without previewing it: a constant number of catalog queries."""
    registry = load_catalog(config)
    handle = open_target(config, target, read_only=True)
    try:
        return build_plan(config, registry, handle, agent_name, job, planner)
    finally:
        handle.close()


def save_plan(config: Config, plan: Plan, out: Path) -> Path:
    """Write a plan file for `apply_plan`: the plan, its hash, the database it was made
    on, and a signature with this home's key (made on first use)."""
    _check_out(config, out)
    if plan.target_identity is None:
        handle = open_target(config, plan.target, read_only=True)
        try:
            plan = _pinned(handle, plan)
        finally:
            handle.close()
    key = signing.load_key(config.home)
    assert key is not None  # made on first use
    # Signed as it will be read back: JSON turns tuples into lists.
    body = json.loads(json.dumps({**plan.to_dict(), "plan_hash": plan.hash}))
    signed = {**body, "signature": signing.sign(key, body)}
    text = json.dumps(signed, indent=2, sort_keys=True) + "\n"
    # Written beside its target and renamed only over a regular file: `--out /dev/null`
    # as root must not replace the device.
    return write_beside(out, text.encode(), "Plan file", UsageError)


def writing_nothing_private(config: Config, registry: Registry, plan: Plan) -> Plan:
    """The plan, when no step writes a file (at a path it gives as it is) into a folder
    aishell reads tools and config from: an archive there, read as a tool, stops every
    command. Else one line. Its state, key and backups each step refuses itself, before
    its first write, as it always has."""
    private = replace(home_private_places(config), trees=(), folders=())
    problems = [
        problem
        for step in plan.steps
        for problem in private_path_problems(step, registry.get(step.tool), private)
    ]
    if problems:
        raise UsageError(f"The plan writes into aishell's own folders: {listed(problems)}")
    return plan


def _check_out(config: Config, out: Path) -> None:
    """Refuse `-`: whoever types it means standard output, but a plan goes to a file, as
    every path option of aishell takes files only (`apply` reads a regular file). And a
    folder aishell keeps or reads tools and config from: a plan there is read as one."""
    if str(out) == "-":
        raise UsageError(
            "--out -: a plan is saved to a file for `aishell apply FILE`, not to standard "
            "output; give a file's name (--out plan.json)"
        )
    # Beside the state (the home itself) a plan may go; not into a folder aishell keeps.
    why = replace(home_private_places(config), folders=()).refusal(out)
    if why is not None:
        raise UsageError(f"--out {out}: {why}; save the plan in a folder of its own")


class _KeyTwice(Exception):
    """An object of a plan file that holds a key twice (json.loads would keep the last)."""


def _keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _KeyTwice(key)
        found[key] = value
    return found


def load_plan_file(path: Path) -> SavedPlan:
    """A saved plan, read and checked against the plan file's keys; `apply_plan` checks
    its signature against the home's key."""
    try:
        # Only a regular file, read with a bound: a FIFO or /dev/zero must not hang apply.
        text = read_regular(path, PLAN_LIMIT, "Plan file", PlanError)
        data = json.loads(text, parse_float=json_float, object_pairs_hook=_keys_once)
    except FileNotFoundError:
        raise UsageError(
            f"Plan file {path} does not exist; `aishell plan AGENT ... --out FILE` saves one"
        ) from None
    except _KeyTwice as exc:
        # Its signature covers the plan as read, whichever value was kept: refused whole.
        raise PlanError(
            f"Plan file {path} holds the key {clip(str(exc.args[0]))!r} twice in one "
            "object; aishell writes each key once: save the plan again (aishell plan ... --out)"
        ) from None
    except FloatRangeLost as exc:
        raise PlanError(f"Plan file {path} holds a number no float holds: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"Plan file {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    # Any other ValueError: bytes that are not UTF-8, or an integer longer than int()
    # reads (4300 digits); a RecursionError: arrays nested past the stack.
    except (ValueError, RecursionError):
        raise PlanError(f"Plan file {path} is not a plan's JSON text") from None
    return SavedPlan.parse(data, str(path))


# What signs with the home's key the kept backup rows no key it has signed (commands/adopt.py).
ADOPT_ALL = "aishell backups adopt --all-unsigned"


def rotate_plan_key(config: Config, force: bool = False) -> dict[str, Any]:
    """A new signing key for this home; plans signed with the old one are refused, and
    so are the runs, schedules and backup rows the state store holds (signed with it
    too; `backups_to_adopt`: the kept backup rows, which ADOPT_ALL signs anew). Refused
    while a run is not over (without `force`): it could no longer be approved or
    resumed."""
    with StateStore(config.state_url) as store:
        runs = store.list_runs(limit=100_000)
        schedules = [s["name"] for s in store.list_schedules()]
        kept_backups = store.kept_backup_count()
    open_runs = [r["run_id"] for r in runs if r["status"] not in FINISHED]
    if open_runs and not force:
        shown = ", ".join(open_runs[:5]) + (", ..." if len(open_runs) > 5 else "")
        raise UsageError(
            f"{len(open_runs)} run(s) are not over ({shown}): signed with the current key, "
            "they could no longer be approved, resumed or shown once it is replaced; "
            "finish or deny them first, or pass --force"
        )
    key, previous = signing.rotate_key(config.home)
    return {
        "key_id": key.key_id,
        "previous_key_id": previous,
        "path": str(key.path),
        "runs_no_longer_readable": len(runs),
        # Signed with the old key, a schedule runs no trigger until it is added again.
        "schedules_to_add_again": schedules,
        # Nor does a backup's row count anywhere (restorable, fresh, kept) until a person
        # adopts it: its file read again and matched, it is signed with the new key.
        "backups_to_adopt": kept_backups,
        "adopt_command": ADOPT_ALL if kept_backups else None,
    }


def verified_plan(config: Config, saved: SavedPlan) -> Plan:
    """The plan of a saved file whose signature this home's key made."""
    signing.verify(
        signing.load_key(config.home, create=False),
        config.home,
        saved.body,
        saved.signature,
        f"Plan file {saved.source}",
    )
    return saved.plan


def _pinned(handle: Target, plan: Plan) -> Plan:
    """The plan with the database it was made on, and which table each of its table
    names reaches (a table renamed into a name since is not the one planned for)."""
    conn = handle.connect()
    try:
        identity = plan_identity(conn)
        tables = table_identities(conn, planned_tables(plan))
    finally:
        conn.close()
    assumptions = {**plan.assumptions, "table_ids": tables}
    return replace(plan, target_identity=identity, assumptions=assumptions)


def missing_names(
    conn: Connection, registry: Registry, plan: Plan, catalog: TableCatalog
) -> list[str]:
    """Every table and column a plan names literally that the target lacks."""
    tables = catalog.tables
    missing: dict[str, list[str]] = {}
    catalog.want_columns(t for t in tables_with_columns(plan, registry) if t in tables)
    for step in plan.steps:
        params = step.params
        for name, (kind, is_list) in identifier_params(registry.get(step.tool).params).items():
            values = params.get(name) if is_list else [params.get(name)]
            if not isinstance(values, list | tuple):
                continue  # a reference standing for the whole list: checked when it runs
            for value in values:
                # A ${...} reference is known only when its step runs; the executor checks it.
                if not isinstance(value, str) or find_references(value):
                    continue
                if kind == "table" and value not in tables:
                    missing.setdefault(f"table {clip(value)!r}", []).append(step.id)
                elif kind == "column":
                    table = params.get("table")
                    if not isinstance(table, str) or table not in tables:
                        continue  # the table itself is reported, or is a reference
                    if value not in catalog.columns(conn, table):
                        missing.setdefault(f"column {table}.{clip(value)}", []).append(step.id)
    return [f"{what} ({_steps_named(steps)})" for what, steps in missing.items()]


def _steps_named(steps: list[str], most: int = 5) -> str:
    """The steps that name something, the first few of many, and how many in all."""
    if len(steps) <= most:
        return ", ".join(steps)
    return f"{', '.join(steps[:most])}, ... {len(steps)} steps in all"
