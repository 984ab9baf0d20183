"""The log cleanup agent: count, purge old rows in batches, count again, then statistics."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.archive import archive_parts
from aishell.agents.base import (
    AgentSpec,
    CatalogFact,
    PlanningContext,
    given_options,
)
from aishell.agents.limits import DraftLimits
from aishell.config.models import AgentConfig
from aishell.config.options import LOG_CLEANUP_OPTIONS, by_key
from aishell.errors import UsageError
from aishell.handlers.purge.precheck import check_purge
from aishell.plan.model import Step, step_id
from aishell.units import exact

# Job keys copied to delete_old_records' params as they are.
_PURGE_PARAMS = (
    "batch_size",
    "max_batch_size",
    "max_batch_ms",
    "sleep_ms",
    "run_time_seconds",
    "max_running_queries",
    "max_replica_lag_seconds",
    "max_throttle_wait_seconds",
    "reconnect_seconds",
    "statistics_after_rows",
    "walk",
)
_OPTIONS = by_key(LOG_CLEANUP_OPTIONS)


SPEC = AgentSpec(
    name="log_cleanup",
    description="Purge rows older than a retention from one table, in short throttled batches.",
    options=LOG_CLEANUP_OPTIONS,
    tools=("count_table_rows", "delete_old_records", "update_table_statistics", "optimize_table"),
    privileges={
        "postgresql": ("SELECT and DELETE on the tables it purges",),
        "mysql": ("SELECT, DELETE on the tables it purges",),
        "sqlite": ("write access to the database file and its folder",),
    },
)


def _first_batch(job: dict[str, Any], normalized: dict[str, Any], config: AgentConfig) -> int:
    """The first batch's rows, never over max_batch_size: a cap given on the command
    line lowers the config's first batch to it; a first batch given over a cap, or a
    config whose first batch is over its own cap, is refused, naming where each is."""
    first, most = int(normalized["batch_size"]), int(normalized["max_batch_size"])
    if first <= most:
        return first
    given_first, given_most = job.get("batch_size") is not None, job.get("max_batch_size")
    if given_most is not None and not given_first:
        return most
    where = {
        key: _OPTIONS[key].cli_flag
        if job.get(key) is not None
        else f"log_cleanup_agent.purge.{key} in {config.path}"
        for key in ("batch_size", "max_batch_size")
    }
    raise UsageError(
        f"The first batch, {first:,} rows ({where['batch_size']}), is over the largest batch "
        f"allowed, {most:,} rows ({where['max_batch_size']}): no batch may hold more; lower "
        "the one or raise the other"
    )


class LogCleanupAgent:
    name = SPEC.name
    spec = SPEC

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        # Each key the job gives is checked where it is given; only a key left out takes
        # the config's value (an empty date column or max_rows 0 is refused, not replaced).
        given = given_options(SPEC, job)
        settings = config.purge
        table = given.get("table")
        if table is None:
            raise UsageError("log cleanup needs the table to purge (--table)")
        normalized: dict[str, Any] = {
            "table": table,
            "tables": [table],
            "date_column": given.get("date_column", settings.date_column),
            "max_rows": given.get("max_rows", settings.max_rows_per_run),
            "replicas": list(settings.replicas),
        }
        for key in ("retention_days", *_PURGE_PARAMS):
            normalized[key] = given.get(key, getattr(settings, key))
        normalized["batch_size"] = _first_batch(job, normalized, config)
        if given.get("archive_to") is not None:
            # Checked and made absolute by given_options, with every agent's archive.
            kind, where = archive_parts(given["archive_to"])
            normalized["archive_file" if kind == "file" else "archive_table"] = where
        return normalized

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """Refuse, before anything runs, a purge that cannot work on this table."""
        check_purge(
            conn,
            job["table"],
            job["date_column"],
            archive_table=job.get("archive_table"),
            archive_file=job.get("archive_file"),
        )

    def catalog_needs(self, job: dict[str, Any]) -> frozenset[CatalogFact]:
        return frozenset()  # its one table's own facts, which its steps read

    def describe_job(self, job: dict[str, Any], ctx: PlanningContext) -> str:
        archive = job.get("archive_file") or job.get("archive_table")
        keep = f", archiving them to {archive}" if archive else ""
        limit = f", at most {job['max_rows']} rows this run" if job.get("max_rows") else ""
        return (
            f"Purge rows of table {job['table']} whose {job['date_column']} is older than "
            f"{exact(job['retention_days'])} days, in batches starting at {job['batch_size']} rows"
            f"{keep}{limit}; estimate the rows before (from statistics or a sample, not a "
            "count) and derive those after from the rows deleted, and refresh statistics "
            "after a large purge."
        )

    def draft_limits(self, job: dict[str, Any], ctx: PlanningContext) -> DraftLimits:
        """What a model's draft of the purge must keep to, as plan_steps does: the job's
        table (and archive table), and its purge given exactly the job's word on which
        rows go, where they are kept, and how many at most (each left out where the job
        gives none: no limit raised, no archive dropped or added), its cutoff, if it
        gives one, an earlier count's given with that count's output (`counted`); and a
        purge it has at all."""
        table = job["table"]
        held = tuple(
            (key, job.get(key) or None, _held_why(key, job.get(key) or None)) for key in _HELD
        )
        return DraftLimits(
            tables=frozenset(t for t in (table, job.get("archive_table")) if t),
            changes=frozenset(SPEC.tools) - {"count_table_rows"},
            changes_why=f"a log cleanup of {table} changes it only by its purge and statistics",
            required={"delete_old_records": held},
            # A plan of counts alone would complete, and read as a purge done.
            needed={"delete_old_records": f"a log cleanup deletes the old rows of {table}"},
            together={
                "delete_old_records": (_COUNTED, frozenset({"count_table_rows"}), _COUNTED_WHY)
            },
        )

    def plan_steps(self, job: dict[str, Any], ctx: PlanningContext) -> list[Step]:
        """count_table_rows (an estimate) -> delete_old_records -> count_table_rows
        (derived from the purge's count), then after a large purge
        update_table_statistics (on PostgreSQL a VACUUM (ANALYZE) instead)."""
        table = job["table"]
        steps = [
            Step(
                step_id(0),
                "count_table_rows",
                {
                    "table": table,
                    "date_column": job["date_column"],
                    "retention_days": job["retention_days"],
                    "estimate": True,
                },
                f"Estimate the rows of {table}, and those older than "
                f"{exact(job['retention_days'])} days, without reading the table",
            ),
            Step(
                step_id(1),
                "delete_old_records",
                _purge_params(job),
                f"Delete the rows of {table} older than the cutoff, in batches",
            ),
            _count_after(table, job["date_column"]),
        ]
        if job.get("statistics_after_rows") is not None:
            steps.append(_statistics_after(table, ctx.dialect))
        return steps


# The purge's params a model's draft must give as the job does: which rows go, where
# they are kept, how many at most.
_HELD = ("table", "date_column", "retention_days", "max_rows", "archive_file", "archive_table")


# A drafted purge's cutoff, if it gives one, is a count's, with that count's output: the
# time zone the cutoff was read in (a MariaDB TIMESTAMP's) goes with it.
_COUNTED = {"cutoff": "cutoff", "counted": ""}
_COUNTED_WHY = (
    "a drafted purge gives a cutoff only as an earlier count_table_rows step's, with that "
    "same step's whole output as `counted` (cutoff: ${step_N.output.cutoff}, counted: "
    "${step_N.output}), or leaves both out and reads its own"
)


def _held_why(key: str, value: object) -> str:
    if value is None:
        return f"the job gives no {key}: a drafted purge may not give one"
    return f"the job says {key} {exact(value)}: a drafted purge must give the same"


def _purge_params(job: dict[str, Any]) -> dict[str, Any]:
    """delete_old_records' params: the job's purge settings, the cutoff of the estimate."""
    purge: dict[str, Any] = {
        "table": job["table"],
        "date_column": job["date_column"],
        "retention_days": job["retention_days"],
        # One cutoff for the whole run, from the server's clock at the first estimate;
        # a resumed run deletes exactly what the first attempt would have.
        "cutoff": "${step_0.output.cutoff}",
        "expected_rows": "${step_0.output.older_rows}",
        # And the session's time zone it was read in (a MariaDB TIMESTAMP's): a purge
        # resumed in a session of another zone would read it as another moment.
        "counted": "${step_0.output}",
    }
    purge.update({k: job[k] for k in _PURGE_PARAMS if job.get(k) is not None})
    for key in ("max_rows", "archive_file", "archive_table"):
        if job.get(key):
            purge[key] = job[key]
    if job.get("replicas"):
        purge["replicas"] = job["replicas"]
    return purge


def _count_after(table: str, column: str) -> Step:
    return Step(
        step_id(2),
        "count_table_rows",
        {
            "table": table,
            "date_column": column,
            "cutoff": "${step_0.output.cutoff}",
            "estimate": True,
            "before": "${step_0.output}",
            "after_purge": "${step_1.output}",
        },
        "The rows left: the estimate less the rows the purge deleted; none older "
        "than the cutoff once it walked the whole key range",
        depends_on=(step_id(1),),
    )


def _statistics_after(table: str, dialect: str) -> Step:
    """Fresh statistics once a large purge is done (on PostgreSQL, space reused too)."""
    tool, why = (
        ("optimize_table", "VACUUM (ANALYZE): make the deleted rows' space reusable")
        if dialect == "postgresql"
        else ("update_table_statistics", "Refresh the planner's statistics")
    )
    return Step(
        step_id(3),
        tool,
        {"table": table},
        f"{why} after a large purge",
        condition="${step_1.output.large_purge}",
    )
