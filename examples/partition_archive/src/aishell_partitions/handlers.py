"""The handlers of the four tools, named by their files as `aishell_partitions.handlers:NAME`.

Each one works out from the catalog what is left to do for the partitions it is given,
so a step run again after a crash does only the rest: a detach left pending by a killed
concurrent detach is finalized, an archive copy already complete is kept, a partition
already dropped is counted as done. What a step will send is measured once per attempt
and shared by its render (what the preview and the approval show) and its run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aishell.agents.api import Handler, StepFailed, ToolContext
from aishell_partitions import catalog

Work = list[dict[str, Any]]


def _measured(ctx: ToolContext, measure: Callable[[], Work]) -> Work:
    """measure() once per attempt: the first attempt runs what the step rendered (what
    was approved); a retry looks again at what the failed attempt left."""
    key = f"partition_work@{ctx.attempt}"
    if key not in ctx.step_cache:
        ctx.step_cache[key] = measure()
    work: Work = ctx.step_cache[key]
    return work


def _statements(work: Work, nothing: str) -> list[str]:
    found = [sql for item in work for sql in item.get("sql", [])]
    return found or [f"-- {nothing}"]


def _run(ctx: ToolContext, work: Work) -> None:
    for item in work:
        for sql in item.get("sql", []):
            ctx.connection.exec_driver_sql(sql)


# --- find_old_partitions ---------------------------------------------------------------


def find(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    conn = ctx.connection
    parent = catalog.parent(conn, params["parent"])
    days = params.get("older_than_days")
    keep = params.get("keep")
    cutoff = catalog.cutoff(conn, days)
    old, skipped = [], []
    for part in catalog.partitions(conn, parent):
        if part.ends is None or part.ends > cutoff:
            continue  # current, future, DEFAULT or MAXVALUE: kept
        if not part.in_schema or part.kind != "r":
            why = "in another schema" if not part.in_schema else "itself partitioned"
            skipped.append({"partition": part.name, "reason": why})
            continue
        old.append(part)
    kept = old[len(old) - keep :] if keep else []
    chosen = old[: len(old) - keep] if keep else old
    return {
        "parent": parent.name,
        "cutoff": cutoff.isoformat(),
        "partitions": [p.name for p in chosen],
        "bounds": {p.name: p.bound for p in chosen},
        "kept_by_count": [p.name for p in kept],
        "skipped": skipped,
        "count": len(chosen),
    }


find_old_partitions = Handler(
    sql_templates=(catalog.PARTITIONS_SQL.strip(),),
    run_fn=find,
    changes_tables=False,
)


# --- detach_partitions -------------------------------------------------------------------


def _detach_work(params: Mapping[str, Any], ctx: ToolContext) -> Work:
    conn, q = ctx.connection, ctx.quote
    parent = catalog.parent(conn, params["parent"])
    attached = {p.name: p for p in catalog.partitions(conn, parent)}
    concurrently = bool(params.get("concurrently", True)) and not parent.has_default
    work: Work = []
    for name in params["partitions"]:
        part = attached.get(name)
        if part is None:
            state = "detached" if catalog.table(conn, name) is not None else "gone"
            work.append({"partition": name, "state": state})
            continue
        if not part.in_schema:
            raise StepFailed(f"Partition '{name}' is not in the target's schema")
        head = f"ALTER TABLE {q(parent.name)} DETACH PARTITION {q(name)}"
        if part.detach_pending:
            action, sql = "finalized", f"{head} FINALIZE"
        elif concurrently:
            action, sql = "detached concurrently", f"{head} CONCURRENTLY"
        else:
            action, sql = "detached", head
        work.append({"partition": name, "state": action, "sql": [sql]})
    return work


def _detach(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    work = _measured(ctx, lambda: _detach_work(params, ctx))
    _run(ctx, work)
    by_state: dict[str, list[str]] = {}
    for item in work:
        by_state.setdefault(item["state"], []).append(item["partition"])
    return {
        "partitions": [item["partition"] for item in work],
        "detached": [i["partition"] for i in work if "sql" in i],
        "already_detached": by_state.get("detached", []),
        "gone": by_state.get("gone", []),
        "finalized": by_state.get("finalized", []),
        "concurrently": by_state.get("detached concurrently", []),
    }


def _detach_done(params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
    return not any("sql" in item for item in _detach_work(params, ctx))


detach_partitions = Handler(
    sql_templates=(
        "ALTER TABLE {parent} DETACH PARTITION {partition} CONCURRENTLY",
        "ALTER TABLE {parent} DETACH PARTITION {partition}",
        "ALTER TABLE {parent} DETACH PARTITION {partition} FINALIZE",
    ),
    run_fn=_detach,
    render_fn=lambda params, ctx: _statements(
        _measured(ctx, lambda: _detach_work(params, ctx)), "no partition left to detach"
    ),
    check_fn=_detach_done,
)


# --- archive_partitions ------------------------------------------------------------------


def _archive_work(params: Mapping[str, Any], ctx: ToolContext) -> Work:
    """Per partition: copy it (CREATE TABLE ... LIKE, then one INSERT ... SELECT, which
    commits whole or not at all), keep a complete copy, or refuse a partial one."""
    conn, q = ctx.connection, ctx.quote
    schema = params["archive_schema"]
    parent = catalog.parent(conn, params["parent"])
    work: Work = []
    schema_found = catalog.archive_schema(conn, schema)
    if not schema_found:
        work.append({"partition": None, "sql": [f"CREATE SCHEMA IF NOT EXISTS {q(schema)}"]})
    for name in params["partitions"]:
        copy = f"{q(schema)}.{q(name)}"
        archived = catalog.table(conn, name, schema) if schema_found else None
        source = catalog.table(conn, name)
        if source is None:
            if archived is None:
                raise StepFailed(f"Partition '{name}' is gone and has no copy in {schema}")
            work.append({"partition": name, "state": "dropped already"})
            continue
        catalog.detached_from(conn, name, parent)
        rows = catalog.count_rows(conn, q(name))
        item: dict[str, Any] = {"partition": name, "rows": rows, "archive": f"{schema}.{name}"}
        insert = f"INSERT INTO {copy} SELECT * FROM {q(name)}"
        if archived is None:
            item.update(state="archived", sql=[f"CREATE TABLE {copy} (LIKE {q(name)})", insert])
        else:
            held = catalog.count_rows(conn, copy)
            if held == rows:
                item["state"] = "archived already"
            elif held == 0:
                item.update(state="archived", sql=[insert])
            else:
                raise StepFailed(
                    f"{schema}.{name} holds {held} rows and {name} {rows}: neither empty nor "
                    "a whole copy; compare them by hand before this step runs again"
                )
        work.append(item)
    return work


def _archive(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    work = _measured(ctx, lambda: _archive_work(params, ctx))
    _run(ctx, work)
    parts = [item for item in work if item["partition"]]
    for item in parts:
        if item.get("sql"):
            held = catalog.count_rows(ctx.connection, _archive_name(item, ctx))
            if held != item["rows"]:
                raise StepFailed(
                    f"{item['archive']} holds {held} rows after the copy, not {item['rows']}"
                )
    return {
        "partitions": [item["partition"] for item in parts],
        "archived": {i["partition"]: i["rows"] for i in parts if i.get("sql")},
        "already_archived": [i["partition"] for i in parts if i["state"] == "archived already"],
        "rows_archived": sum(i["rows"] for i in parts if i.get("sql")),
        "archive_schema": params["archive_schema"],
    }


def _archive_name(item: dict[str, Any], ctx: ToolContext) -> str:
    schema, _, name = item["archive"].partition(".")
    return f"{ctx.quote(schema)}.{ctx.quote(name)}"


def _archive_done(params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
    return not any(item.get("sql") for item in _archive_work(params, ctx))


archive_partitions = Handler(
    sql_templates=(
        "CREATE SCHEMA IF NOT EXISTS {archive_schema}",
        "CREATE TABLE {archive_schema}.{partition} (LIKE {partition})",
        "INSERT INTO {archive_schema}.{partition} SELECT * FROM {partition}",
    ),
    run_fn=_archive,
    render_fn=lambda params, ctx: _statements(
        _measured(ctx, lambda: _archive_work(params, ctx)), "every partition is archived"
    ),
    check_fn=_archive_done,
)


# --- drop_archived_partitions ------------------------------------------------------------


def _drop_work(params: Mapping[str, Any], ctx: ToolContext) -> Work:
    """Per partition: DROP TABLE once its archive copy holds as many rows; every one is
    verified before the first is dropped, and a mismatch drops none."""
    conn, q = ctx.connection, ctx.quote
    schema = params["archive_schema"]
    parent = catalog.parent(conn, params["parent"])
    schema_found = catalog.archive_schema(conn, schema)
    work: Work = []
    for name in params["partitions"]:
        archived = catalog.table(conn, name, schema) if schema_found else None
        if archived is None:
            raise StepFailed(
                f"Partition '{name}' has no copy in {schema}: archive it before it is dropped"
            )
        held = catalog.count_rows(conn, f"{q(schema)}.{q(name)}")
        if catalog.table(conn, name) is None:
            work.append({"partition": name, "state": "dropped already", "archived_rows": held})
            continue
        catalog.detached_from(conn, name, parent)
        rows = catalog.count_rows(conn, q(name))
        if rows != held:
            raise StepFailed(
                f"{schema}.{name} holds {held} rows and {name} {rows}: nothing was dropped"
            )
        work.append(
            {"partition": name, "state": "dropped", "rows": rows, "sql": [f"DROP TABLE {q(name)}"]}
        )
    return work


def _drop(params: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    work = _measured(ctx, lambda: _drop_work(params, ctx))
    _run(ctx, work)
    return {
        "partitions": [item["partition"] for item in work],
        "dropped": [i["partition"] for i in work if i["state"] == "dropped"],
        "already_dropped": [i["partition"] for i in work if i["state"] == "dropped already"],
        "rows_verified": sum(i.get("rows", 0) for i in work),
    }


def _drop_done(params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
    return not any(item.get("sql") for item in _drop_work(params, ctx))


drop_archived_partitions = Handler(
    sql_templates=("DROP TABLE {partition}",),
    run_fn=_drop,
    render_fn=lambda params, ctx: _statements(
        _measured(ctx, lambda: _drop_work(params, ctx)), "no partition left to drop"
    ),
    check_fn=_drop_done,
)
