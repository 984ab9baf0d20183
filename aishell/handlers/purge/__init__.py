"""count_table_rows and delete_old_records: purge old rows in short, resumable batches
(`purge.<handler>` in tools/*.yaml).

A purge walks the table's key upwards. Each batch finds where its old rows start
(the first old row of an integer key's next stretch; otherwise the key below which the
next `n` old rows lie), deletes the old rows up to its end and commits; the batch size follows
the time batches take, so that each holds its locks for about max_batch_ms whatever
the rows cost (batches.py). On PostgreSQL 14+ it walks the heap's pages instead, each
batch a range of pages read once in the table's physical order, and looks at its end
for any old row left (pages.py). Before a batch commits, a durable checkpoint records where
it ends, how many rows it deleted, the session sending it and which archive bytes it
will write (then written); after a crash the purge makes sure that session is over
(indoubt.py), looks whether the batch's rows are still there to know whether it
committed, and cuts off the archive bytes of a batch that did not commit, and nothing
else (ownership.py), so no row is counted (or archived) twice and none is skipped
(resume.py, archive.py).
An archive table gets its copy in the batch's own transaction. Each batch reads again,
after its DELETE and before its COMMIT, what that DELETE sets off beyond its rows
(triggers, cascading keys: reach.py); changed since the step was judged, the batch is
rolled back and the step stops for its resume to judge it again. A lost connection (a
server restart, a terminated backend) is rolled back and reconnected with backoff, and
the purge goes on from its checkpoint the same way; a server that stays away, or stays
busy past the throttle's longest wait, stops the step resumably with the reason
(reconnect.py, waits.py). It holds max_share on what it deletes, counted by itself
against the table's rows counted when it started, and stops before the batch that would
pass it, waiting for a person's yes to that very step (share.py); its estimates
(estimate.py) only warn ahead, in the preview and the prompt.
"""

from __future__ import annotations

from aishell.handlers import Handler
from aishell.handlers.purge.archive import full_disk_named
from aishell.handlers.purge.batchsql import PAGE_RANGE, PAGES_SQL, XACT_SQL, XACT_STATUS_SQL
from aishell.handlers.purge.count import count_rows, foresee_count, render_count
from aishell.handlers.purge.estimate import COUNT, PG_STATISTICS_SQL, SAMPLE_SQL
from aishell.handlers.purge.indoubt import SETTLING_SQL
from aishell.handlers.purge.prepare import estimate_purge, render_purge
from aishell.handlers.purge.resume import purge
from aishell.risk import RiskLevel

__all__ = [
    "count_table_rows",
    "count_table_rows_postgresql",
    "delete_old_records",
    "delete_old_records_postgresql",
]

count_table_rows = Handler(
    sql_templates=(COUNT, SAMPLE_SQL),
    run_fn=count_rows,
    render_fn=render_count,
    foresee_fn=foresee_count,
)
# PostgreSQL's estimate reads its statistics first (pg_class, pg_stats).
count_table_rows_postgresql = Handler(
    sql_templates=(COUNT, *PG_STATISTICS_SQL, SAMPLE_SQL),
    run_fn=count_rows,
    render_fn=render_count,
    foresee_fn=foresee_count,
)

# Every shape a batch may send, {key} being the key the purge walks; what a step
# runs is rendered from the same BatchSql, and the guard lets through nothing else.
_RANGE = "{key} > :after AND {key} <= :upper AND {date_column} < :cutoff"
# PostgreSQL 14+ walks the heap's pages instead (pages.py).
_PAGES = PAGE_RANGE.format(date="{date_column}")
# Part of one page's old rows: the last batch before max_share; the old rows left after
# the pages, by key.
_KEYS = "{key} = ANY (:keys) AND {date_column} < :cutoff"
_PART = f"ctid = ANY (ARRAY(SELECT ctid FROM {{table}} WHERE {_PAGES} LIMIT :n))"
_KEY_SHAPES = (
    "SELECT aishell_k FROM (SELECT {key} AS aishell_k FROM {table} WHERE {key} > :after "
    "AND {date_column} < :cutoff ORDER BY {key} LIMIT :n) aishell_batch "
    "ORDER BY aishell_k DESC LIMIT 1",
    f"SELECT (SELECT {{key}} FROM {{table}} WHERE {_RANGE} ORDER BY {{key}} LIMIT 1), "
    "(SELECT {key} FROM {table} WHERE {key} > :upper ORDER BY {key} LIMIT 1)",
    f"DELETE FROM {{table}} WHERE {_RANGE}",
    f"DELETE FROM {{table}} WHERE {_RANGE} RETURNING *",
    # {columns}: the archive table's stored columns (for a file, on MySQL, every
    # column of the table), named in full in what a step renders.
    f"SELECT {{columns}} FROM {{table}} WHERE {_RANGE} FOR UPDATE",
    "INSERT INTO {archive_table} ({columns}) SELECT {columns} FROM {table} WHERE " + _RANGE,
    f"WITH aishell_gone AS (DELETE FROM {{table}} WHERE {_RANGE} RETURNING *) "
    "INSERT INTO {archive_table} ({columns}) SELECT {columns} FROM aishell_gone",
)
# PostgreSQL 14+ walks the heap's pages (pages.py): its batches, its transaction's id
# and, on resume, that transaction's fate, the table's length, the last look.
_PAGE_SHAPES = (
    PAGES_SQL,
    f"DELETE FROM {{table}} WHERE {_PAGES}",
    f"DELETE FROM {{table}} WHERE {_PAGES} RETURNING *",
    f"WITH aishell_gone AS (DELETE FROM {{table}} WHERE {_PAGES} RETURNING *) "
    "INSERT INTO {archive_table} ({columns}) SELECT {columns} FROM aishell_gone",
    f"DELETE FROM {{table}} WHERE {_PART}",
    f"DELETE FROM {{table}} WHERE {_PART} RETURNING *",
    f"WITH aishell_gone AS (DELETE FROM {{table}} WHERE {_PART} RETURNING *) "
    "INSERT INTO {archive_table} ({columns}) SELECT {columns} FROM aishell_gone",
    XACT_SQL,
    XACT_STATUS_SQL,
    f"SELECT 1 FROM {{table}} WHERE {_PAGES} LIMIT 1",
    "SELECT {key} FROM {table} WHERE {date_column} < :cutoff LIMIT :n",
    f"DELETE FROM {{table}} WHERE {_KEYS}",
    f"DELETE FROM {{table}} WHERE {_KEYS} RETURNING *",
    f"WITH aishell_gone AS (DELETE FROM {{table}} WHERE {_KEYS} RETURNING *) "
    "INSERT INTO {archive_table} ({columns}) SELECT {columns} FROM aishell_gone",
)
delete_old_records = Handler(
    sql_templates=_KEY_SHAPES,
    risk=RiskLevel.MEDIUM,
    effect="deletes rows older than a cutoff",
    run_fn=full_disk_named(purge),
    render_fn=render_purge,
    estimate_fn=estimate_purge,
    second_session=SETTLING_SQL,
    holds_window_end=True,
)
delete_old_records_postgresql = Handler(
    sql_templates=_KEY_SHAPES + _PAGE_SHAPES,
    risk=RiskLevel.MEDIUM,
    effect="deletes rows older than a cutoff",
    run_fn=full_disk_named(purge),
    render_fn=render_purge,
    estimate_fn=estimate_purge,
    second_session=SETTLING_SQL,
    holds_window_end=True,
)
