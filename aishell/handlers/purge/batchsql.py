"""The SQL of one purge batch, for a table, the key it walks (or its pages), a date column
and an archive: what previews and approvals show is rendered from the same class the
batches run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aishell.handlers.purge.archivefile import read_as
from aishell.handlers.purge.exactread import SETTINGS, SETTINGS_COLUMN
from aishell.tool.context import ToolContext

# The dialects whose DELETE ... RETURNING * hands a batch's deleted rows (every column)
# to an archive file; MySQL has none: it locks the rows it archives and reads them first.
RETURNING = ("postgresql", "sqlite")


# A batch's pages: [:low, :high) as tids '(page,0)'; a TID range scan reads just them.
PAGE_RANGE = "ctid >= CAST(:low AS tid) AND ctid < CAST(:high AS tid) AND {date} < :cutoff"
# The table's length in pages now (pages appended after the walk started are walked too).
PAGES_SQL = (
    "SELECT pg_catalog.pg_relation_size(CAST(:relation AS regclass)) / "
    "pg_catalog.current_setting('block_size')::int"
)
# The server's life: its start, and when its statistics were last begun anew, which a
# crash's recovery does too (the postmaster lives on through a backend's crash).
_SERVER_LIFE = (
    "CAST(extract(epoch FROM pg_catalog.pg_postmaster_start_time()) AS text) "
    "OPERATOR(pg_catalog.||) '/' OPERATOR(pg_catalog.||) "
    "CAST(extract(epoch FROM pg_catalog.pg_stat_get_bgwriter_stat_reset_time()) AS text)"
)
# The id of a batch's transaction, read before it commits, with the server's life: after
# a crash the server says whether that transaction committed (pg_xact_status), whatever
# the pages hold since, as long as it has not given the id out again (see indoubt.py).
XACT_SQL = f"SELECT CAST(pg_catalog.pg_current_xact_id() AS text), {_SERVER_LIFE}"
# An id at or past the next one to be given out is in the future (pg_xact_status would
# raise): it was never made durable, and neither was its COMMIT.
XACT_FUTURE = "in the future"
XACT_STATUS_SQL = (
    "SELECT CASE WHEN CAST(:xid AS pg_catalog.xid8) OPERATOR(pg_catalog.<) "
    "pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()) "
    "THEN pg_catalog.pg_xact_status(CAST(:xid AS pg_catalog.xid8)) "
    f"ELSE '{XACT_FUTURE}' END, {_SERVER_LIFE}"
)


# What a batch deletes: a range (of keys, or pages); part of a page range; given keys.
RANGE, PART, KEYS = "range", "part", "keys"


def plain_key(value: Any) -> Any:
    """A key as the checkpoint keeps it (JSON) and a statement takes it back: a uuid as
    its text, which the server reads as the key's type again."""
    return str(value) if isinstance(value, uuid.UUID) else value


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The least key of every integer type a walk takes (SQLite's INTEGER, PostgreSQL's bigint,
# MySQL's BIGINT); a walk starting there begins just below it, where no such type
# reaches: SQLite's driver binds no such integer (OverflowError), and PostgreSQL would
# compare the key with it as a numeric, which no index of the key serves.
LEAST_KEY = -(2**63)


def open_below(after: Any) -> bool:
    """Whether the range of keys after `after` has no lower end, its statements none:
    before a first batch (None), or just below LEAST_KEY, where every key lies above."""
    return after is None or (is_integer(after) and after < LEAST_KEY)


def past_gap(upper: Any, beyond: Any, end: Any) -> Any:
    """Where an integer key's walk goes on after a stretch without old rows that ends at
    `upper`: just below `beyond`, the next key there was (none: the walk's `end`). No key
    lay between; a row written into that gap since waits for the next run, as one written
    behind the walk does."""
    if beyond is None:
        return end
    return max(upper, min(beyond - 1, end)) if is_integer(beyond) else upper


class BatchSql:
    """The SQL of one batch for a table, key, date column and archive."""

    def __init__(
        self,
        ctx: ToolContext,
        params: Mapping[str, Any],
        key: str,
        *,
        copied: Sequence[str] = (),
        read: Sequence[str] = (),
    ) -> None:
        """`copied`: the archive table's stored columns, which its copy names; `read`:
        the columns an archive file is written from, where they are read by name."""
        q = ctx.quote
        self.dialect = ctx.dialect
        self.table, self.key = q(params["table"]), q(key) if key != "rowid" else "rowid"
        # The key as an archived row names it (a resume reads a batch's keys there).
        self.key_name = key
        self.date = q(params["date_column"])
        self.archive_table = q(params["archive_table"]) if params.get("archive_table") else None
        self.archive_file = bool(params.get("archive_file"))
        self.copied = ", ".join(q(c) for c in copied)
        # An archive file's MySQL TIMESTAMP columns are read as the instants they hold,
        # its FLOAT ones as all of their value (a key is never one: the walk takes
        # integer or text keys, so a resume finds a batch's keys in the table as its
        # file holds them).
        forms = read_as(ctx.connection, params["table"]) if read else {}
        self.read = ", ".join(
            f"{forms[c].format(c=q(c))} AS {q(c)}" if c in forms else q(c) for c in read
        )
        self.read = self.read or "*"
        # Integer keys are walked in plain key ranges (unless a cap on rows needs each
        # batch's old rows counted first); see batches.py.
        self.by_range = False
        # PostgreSQL 14+: batches over ranges of the heap's pages (pages.py), not keys.
        self.by_pages = False

    def range(self, first: bool) -> str:
        if self.by_pages:
            return PAGE_RANGE.format(date=self.date)
        lower = "" if first else f"{self.key} > :after AND "
        return f"{lower}{self.key} <= :upper AND {self.date} < :cutoff"

    def upper(self, first: bool) -> str:
        lower = "" if first else f"{self.key} > :after AND "
        # The last of the next n old rows' keys: by order, not max(), which some key
        # types lack (PostgreSQL's uuid).
        return (
            f"SELECT aishell_k FROM (SELECT {self.key} AS aishell_k FROM {self.table} "
            f"WHERE {lower}{self.date} < :cutoff ORDER BY {self.key} LIMIT :n) aishell_batch "
            "ORDER BY aishell_k DESC LIMIT 1"
        )

    def first_old(self, first: bool) -> str:
        """The key of the first old row in a stretch of the key, and the least key past
        the stretch: a read, which locks nothing, so that a batch's delete starts there,
        and a stretch without old rows is passed without one, the walk going on at the
        next key there is (a sparse key's gaps, 10^15 wide, are not walked through)."""
        return (
            f"SELECT (SELECT {self.key} FROM {self.table} WHERE {self.range(first)} "
            f"ORDER BY {self.key} LIMIT 1), (SELECT {self.key} FROM {self.table} "
            f"WHERE {self.key} > :upper ORDER BY {self.key} LIMIT 1)"
        )

    def rows_present(self) -> str:
        """The table's rows of the given keys (:keys, expanding), whatever their dates,
        read as an archive file reads them: a batch in doubt's own rows looked for after
        a crash, and compared with their archived copies, each with the settings its
        text is written under, as a batch reads them (reads_settings)."""
        return f"SELECT {self.read}{self._settings()} FROM {self.table} WHERE {self.key} IN :keys"

    def archived_in_range(self, first: bool) -> str:
        """The archive table's rows in a batch's key range: its copy commits with its
        delete, so they are at least the rows it deleted if, and only if, it committed
        (fewer: only rows an earlier purge archived there)."""
        lower = "" if first else f"{self.key} > :after AND "
        return f"SELECT count(*) FROM {self.archive_table} WHERE {lower}{self.key} <= :upper"

    def shares_archive_range(self, first: bool, state: Mapping[str, Any]) -> bool:
        """Whether earlier purges' rows may share a batch's key range in the archive
        table: they lie at or past the walk's first key (the walk's `archive_overlaps`),
        or it is a first batch (a key not an integer), whose range has no lower end and
        so takes in every row archived below the table's least key, those of each
        earlier purge of the table."""
        if not self.archive_table or self.key == "rowid":
            return False
        return first or bool(state.get("archive_overlaps"))

    def archived_from(self) -> str:
        """Whether the archive table holds a row at or past the walk's first key (:low):
        rows an earlier purge archived where this one's batches will archive theirs."""
        return f"SELECT 1 FROM {self.archive_table} WHERE {self.key} >= :low LIMIT 1"

    def bounds(self) -> str:
        """The least and greatest key, each the first row of the key's order: an index's
        ends, and a key type without min() and max() (PostgreSQL's uuid) has them too."""
        return (
            f"SELECT (SELECT {self.key} FROM {self.table} ORDER BY {self.key} LIMIT 1), "
            f"(SELECT {self.key} FROM {self.table} ORDER BY {self.key} DESC LIMIT 1)"
        )

    def delete(self, first: bool, form: str = RANGE) -> str:
        """The page walk's other forms: PART, at most :n of the old rows of one page
        range (its last batch under max_share); KEYS, the old rows left after its pages,
        by their keys (:keys)."""
        if form == PART:
            return (
                f"DELETE FROM {self.table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM "
                f"{self.table} WHERE {self.range(first)} LIMIT :n))"
            )
        if form == KEYS:
            return (
                f"DELETE FROM {self.table} WHERE {self.key} = ANY (:keys) AND {self.date} < :cutoff"
            )
        return f"DELETE FROM {self.table} WHERE {self.range(first)}"

    def old_keys(self) -> str:
        """The keys of up to :n rows older than the cutoff (the page walk's last look)."""
        return f"SELECT {self.key} FROM {self.table} WHERE {self.date} < :cutoff LIMIT :n"

    def returning(self) -> bool:
        return self.dialect in RETURNING

    def statements(self, first: bool) -> list[str]:
        """What one batch sends, in order (shown in previews and approvals). Walking
        plain key ranges, the batch looks for its first old row and computes its end
        from there; otherwise it looks up the key below which its next old rows lie.
        Walking pages, it deletes over its pages and reads its transaction's id (what a
        resume asks the server about), and the walk reads the table's length in pages
        and, at its end, whether any old row is left."""
        if self.by_pages:
            # Under max_share, the last batch before the limit may take part of a page.
            return [
                PAGES_SQL,
                *self.work(first),
                *self.work(first, PART),
                XACT_SQL,
                self.old_keys(),
                *self.work(first, KEYS),
            ]
        looks = self.first_old(first) if self.by_range else self.upper(first)
        # PostgreSQL: the id of each batch's transaction, kept in its checkpoint.
        own_id = [XACT_SQL] if self.dialect == "postgresql" else []
        return [looks, *self.work(first), *own_id]

    def reads_settings(self) -> bool:
        """Whether a batch's archive rows come with the settings each was sent under."""
        return self.archive_file and self.dialect == "postgresql" and not self.archive_table

    def _settings(self) -> str:
        # Last, after every column of the table's (exactread.SETTINGS).
        return f", {SETTINGS} AS {SETTINGS_COLUMN}" if self.reads_settings() else ""

    def work(self, first: bool, form: str = RANGE) -> list[str]:
        """The statements that delete (and archive) one batch's rows."""
        delete = self.delete(first, form)
        # An archive table's copy names its columns: MariaDB's SELECT * leaves invisible
        # ones out, and a generated column takes no value.
        if self.archive_table and self.dialect == "postgresql":
            return [
                f"WITH aishell_gone AS ({delete} RETURNING *) "
                f"INSERT INTO {self.archive_table} ({self.copied}) "
                f"SELECT {self.copied} FROM aishell_gone"
            ]
        if self.archive_table:
            return [
                f"INSERT INTO {self.archive_table} ({self.copied}) SELECT {self.copied} "
                f"FROM {self.table} WHERE {self.range(first)}",
                delete,
            ]
        if self.archive_file and self.returning():
            return [f"{delete} RETURNING *{self._settings()}"]
        if self.archive_file:
            return [
                f"SELECT {self.read} FROM {self.table} WHERE {self.range(first)} FOR UPDATE",
                delete,
            ]
        return [delete]
