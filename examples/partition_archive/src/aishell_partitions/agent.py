"""The partition_archive agent: its job options and its plan of four steps."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from aishell.agents.api import (
    AgentConfig,
    AgentSpec,
    BaseAgent,
    Option,
    Privilege,
    Step,
    TaskContext,
    UsageError,
    step_id,
)
from aishell_partitions import catalog

FOUND = "${step_0.output.partitions}"


class PartitionArchiveAgent(BaseAgent):
    spec = AgentSpec(
        name="partition_archive",
        description=(
            "Archive the old range partitions of a partitioned PostgreSQL table: detach "
            "them, copy each into an archive schema, drop each once its copy is whole."
        ),
        options=(
            Option(
                "table", "text", "The partitioned table (range on a date or time).", required=True
            ),
            Option(
                "older_than_days",
                "integer",
                "Archive partitions whose range ended more than this many days ago.",
                minimum=0,
                maximum=36500,
            ),
            Option(
                "keep",
                "integer",
                "Of the partitions that ended, keep the newest this many.",
                minimum=1,
                maximum=100000,
            ),
            Option("archive_schema", "text", "Schema the copies go to.", default="archive"),
            Option(
                "concurrently",
                "flag",
                "Detach CONCURRENTLY where the server allows it.",
                default=True,
                flag="--concurrently/--no-concurrently",
            ),
        ),
        tools=(
            "find_old_partitions",
            "detach_partitions",
            "archive_partitions",
            "drop_archived_partitions",
        ),
        privileges={
            "postgresql": (
                Privilege(("OWNER",), "detaching, copying and dropping partitions"),
                Privilege(("CREATE",), "the archive schema (CREATE SCHEMA)", on="database"),
            )
        },
    )

    def normalize_job(self, job: dict[str, Any], config: AgentConfig) -> dict[str, Any]:
        checked = super().normalize_job(job, config)
        if checked["older_than_days"] is None and checked["keep"] is None:
            raise UsageError(
                "The partition_archive job needs a retention: --older-than-days or --keep"
            )
        return checked

    def check_job(self, job: dict[str, Any], conn: Connection) -> None:
        """The table is partitioned by range on a date or time, the archive schema is
        not the target's own: refused before anything runs."""
        if conn.dialect.name != "postgresql":
            raise UsageError("partition_archive runs on PostgreSQL targets only")
        catalog.parent(conn, job["table"])
        catalog.archive_schema(conn, job["archive_schema"])

    def plan_steps(self, job: dict[str, Any], ctx: TaskContext) -> list[Step]:
        table, schema = job["table"], job["archive_schema"]
        retention = {k: job[k] for k in ("older_than_days", "keep") if job[k] is not None}
        moved = {"parent": table, "partitions": FOUND, "archive_schema": schema}
        return [
            Step(
                step_id(0),
                "find_old_partitions",
                {"parent": table, **retention},
                f"Find the partitions of {table} that ended before the retention",
            ),
            Step(
                step_id(1),
                "detach_partitions",
                {"parent": table, "partitions": FOUND, "concurrently": job["concurrently"]},
                f"Detach them from {table}",
                condition=FOUND,
            ),
            Step(
                step_id(2),
                "archive_partitions",
                moved,
                f"Copy each into {schema}",
                depends_on=(step_id(1),),
                condition=FOUND,
            ),
            Step(
                step_id(3),
                "drop_archived_partitions",
                dict(moved),
                f"Drop each whose copy in {schema} holds as many rows",
                depends_on=(step_id(2),),
                condition=FOUND,
            ),
        ]
