"""A quick validation (`--quick`): each file of a backup's chain decoded whole, and what
the files hold compared with the newest manifest, without restoring them.

MySQL/MariaDB: each dump read as a backup reads it while it streams (mysql_dump.py): its
tables, each one's rows and checksum, and its last line ("-- Dump completed"), with
nothing after it. PostgreSQL: pg_restore decodes every block of each archive into SQL
(`pg_restore -f -`; never `--list`, which reads only the table of contents), read as it
streams: the tables it makes, and the rows of each table's COPY, summed per table as the
manifest counted them (with the tables inheriting from it); no checksum is compared
there, as the manifest's were read from the server's values. In a chain each table's
figures come from the newest file that holds it, as a restore leaves them, and a table
an increment records as dropped is gone.

What this proves is that the files are whole dumps holding what their manifests say,
not that the server restores them: the validation's proof is DECODED, which never marks
a backup verified (only a restore does).
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aishell.dialects import family
from aishell.errors import StepInterrupted, StepTimeout
from aishell.handlers.backup.apply import each_file
from aishell.handlers.backup.dumps import TREE_MEMBERS
from aishell.handlers.backup.manifest import CHUNK, Chain
from aishell.handlers.backup.measure import Measured
from aishell.handlers.backup.mysql_dump import ROW_SUM, LineStream, TableRows, read_chunks
from aishell.handlers.backup.processes import ToolFailed, server_env
from aishell.handlers.backup.reporting import ByteProgress
from aishell.handlers.backup.stream import stream_read
from aishell.tool.context import ToolContext

# --- MySQL / MariaDB --------------------------------------------------------------------


def _file_chunks(
    path: Path, ctx: ToolContext, progress: ByteProgress, before: int
) -> Iterator[bytes]:
    """The file's bytes, a chunk at a time, counted for the progress display; stopped
    when the run is asked to stop or the step's time runs out."""
    done = before
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            if ctx.should_stop():
                raise StepInterrupted("the quick validation was stopped: the run was asked to")
            if ctx.deadline is not None and time.monotonic() > ctx.deadline:
                raise StepTimeout("the quick validation ran past the step's time limit")
            done += len(chunk)
            progress.reached(done)
            yield chunk


def _decode_mysql(chain: Chain, problems: list[str], ctx: ToolContext) -> Measured:
    # Read as the newest manifest's checksums were made (older ones sum each row's).
    method = chain[-1][1].get("checksum_method", ROW_SUM)
    held: dict[str, TableRows] = {}
    for link, manifest, progress, before in each_file(chain, ctx):
        for table in manifest.get("dropped") or []:
            held.pop(table, None)
        if not link.stat().st_size:
            continue  # an empty increment: nothing changed since its parent
        dump = read_chunks(_file_chunks(link, ctx, progress, before), method)
        if not dump.complete:
            problems.append(f"{link.name} does not end as a whole dump does (no last line)")
        elif dump.past_end:
            problems.append(f"{link.name} goes on past the last line of its dump")
        held.update(dump.tables)
    return Measured(
        set(held),
        {table: rows.rows for table, rows in held.items()},
        {table: rows.checksum for table, rows in held.items()},
    )


# --- PostgreSQL ---------------------------------------------------------------------------

# The comment pg_restore writes before each object; the COPY of a table's data, or the
# CREATE of a table, is the next statement after it.
_HEADER = re.compile(rb"-- (?:Data for )?Name: .*; Type: (TABLE DATA|TABLE); Schema: ")
_IDENT = rb'"(?:[^"]|"")*"|[^\s."(]+'
_QUALIFIED = re.compile(rb"(?:(" + _IDENT + rb")\.)?(" + _IDENT + rb")")
_STATEMENTS = {
    b"TABLE DATA": (b"COPY ",),
    b"TABLE": (b"CREATE TABLE ", b"CREATE UNLOGGED TABLE "),
}
_END_OF_COPY = b"\\.\n"
_ENCODING = b"SET client_encoding = '"

Relation = tuple[str | None, str]  # schema (None: the dump named none), name


@dataclass
class DecodedSql:
    """What pg_restore's SQL of an archive holds: the tables it makes, and the rows of
    each table's data."""

    made: set[Relation] = field(default_factory=set)
    rows: dict[Relation, int] = field(default_factory=dict)


def _name(raw: bytes, codec: str) -> str:
    if raw.startswith(b'"'):
        raw = raw[1:-1].replace(b'""', b'"')
    return raw.decode(codec, "surrogateescape")


def _relation(line: bytes, start: int, codec: str) -> Relation | None:
    found = _QUALIFIED.match(line, start)
    if found is None:
        return None
    schema = _name(found.group(1), codec) if found.group(1) else None
    return schema, _name(found.group(2), codec)


def _copy_rows(stream: LineStream) -> int:
    """The rows of a COPY's data, up to its end line: each row is one line (line breaks
    in values are escaped), and no row's line is the end line itself."""
    if stream.peek(len(_END_OF_COPY)) == _END_OF_COPY:
        stream.line()
        return 0
    breaks = sum(block.count(b"\n") for block in stream.through(b"\n" + _END_OF_COPY))
    return breaks - 1  # the end line's two breaks, less the last row's own


def _codec(line: bytes) -> str:
    said = line[len(_ENCODING) :].split(b"'", 1)[0].decode("ascii", "replace")
    try:
        return codecs.lookup("utf-8" if said.upper() in ("UTF8", "SQL_ASCII") else said).name
    except LookupError:
        return "utf-8"


def read_sql(chunks: Iterable[bytes]) -> DecodedSql:
    """The tables and rows of pg_restore's SQL of an archive, read as it streams. Only a
    statement right after pg_restore's own comment for a table or its data counts, so
    that a function's body holding such lines is never taken for one."""
    found = DecodedSql()
    stream = LineStream(chunks)
    codec = "utf-8"
    expected: tuple[bytes, bytes] | None = None  # the object announced: kind, statement
    while line := stream.line():
        header = _HEADER.match(line)
        if header:
            expected = (header.group(1), line)
            continue
        if not line.strip() or line.startswith(b"--"):
            continue
        if line.startswith(_ENCODING):
            codec = _codec(line)
        elif expected is not None:
            kind = expected[0]
            start = next((len(p) for p in _STATEMENTS[kind] if line.startswith(p)), None)
            relation = None if start is None else _relation(line, start, codec)
            if relation is not None and kind == b"TABLE DATA":
                found.rows[relation] = found.rows.get(relation, 0) + _copy_rows(stream)
            elif relation is not None:
                found.made.add(relation)
        expected = None
    return found


def _in_schema(relations: Iterable[Relation], schema: str | None) -> Iterator[str]:
    """The names of the relations in `schema` (or named without one)."""
    return (name for where, name in relations if where in (schema, None))


def _pg_measured(manifest: Mapping[str, Any], decoded: DecodedSql) -> Measured:
    """The tables made in the manifest's schema, and, where the manifest names what each
    table's count covers (backups since it did), each table's rows as it counted them."""
    schema = manifest.get("schema")
    tables = set(_in_schema(decoded.made, schema))
    if schema is None:  # older manifests name no schema: only their own tables are known
        tables &= set(manifest["tables"])
    members = manifest.get(TREE_MEMBERS)
    if not isinstance(members, Mapping):
        return Measured(tables, {}, {})
    rows = {(where or schema, name): n for (where, name), n in decoded.rows.items()}
    counts = {
        table: sum(rows.get((str(s), str(n)), 0) for s, n in members.get(table, [[schema, table]]))
        for table in manifest["tables"]
        if table in tables
    }
    return Measured(tables, counts, {})


def _decode_postgresql(chain: Chain, problems: list[str], ctx: ToolContext) -> Measured:
    schema = chain[-1][1].get("schema")
    decoded = DecodedSql()
    env = server_env(ctx.connection.engine.url)
    for link, manifest, progress, before in each_file(chain, ctx):
        for table in manifest.get("dropped") or []:
            decoded.made -= {(schema, table), (None, table)}
            decoded.rows.pop((schema, table), None)
            decoded.rows.pop((None, table), None)
        if not link.stat().st_size:
            continue  # an empty increment: nothing changed since its parent
        argv = ["pg_restore", "-f", "-", str(link)]
        try:
            found = stream_read(argv, env, ctx, read_sql, watch=progress.reading(link, before))
        except ToolFailed as exc:
            problems.append(f"{link.name} does not decode: {exc}")
            continue
        decoded.made |= found.made
        decoded.rows.update(found.rows)
    return _pg_measured(chain[-1][1], decoded)


_DECODERS: dict[str, Callable[[Chain, list[str], ToolContext], Measured]] = {
    "mysql": _decode_mysql,
    "postgresql": _decode_postgresql,
}


def decodes(dialect: str) -> bool:
    """Whether a quick validation decodes this engine's backups (SQLite's copy is
    restored and measured, quick or not: its file is the database itself)."""
    return family(dialect) in _DECODERS


def decode_chain(chain: Chain, problems: list[str], ctx: ToolContext) -> Measured:
    """Each file of the chain decoded whole (what cannot be is named in `problems`), and
    what the chain holds, measured as its newest manifest was."""
    return _DECODERS[family(chain[-1][1]["dialect"])](chain, problems, ctx)
