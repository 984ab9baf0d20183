"""Reading a mariadb-dump (or mysqldump) file: each table's rows and a checksum of them,
and where each table's part of the file starts and ends.

A MySQL/MariaDB backup's manifest takes its row counts and checksums from here, from the
dump itself, read as it streams from the tool (the same pass writes the file and its
sha256): the server cannot share the dump's snapshot with another session, so rows
counted over SQL, however close in time, are other rows than the dump holds while the
application writes.

Rows are read from the dump's INSERT statements outside stored-program bodies (those sit
between `DELIMITER ;;` and `DELIMITER ;`). The dump escapes line breaks inside strings,
so a statement's lines hold whole values; mariadb-dump puts each row of a statement on a
line of its own, which are read a block at a time, without a step per row.

A table's checksum is the sha256 of its rows in the order the dump prints them, each
followed by ",\n" (so however the dump splits them into statements). A restored copy
dumped by the same tool prints the same rows in the same order: the server scans a table
in its key order (InnoDB), or in the order the rows were loaded. Backups made before
this checksum carry none in their manifest (ROW_SUM): theirs is the sum of the sha256 of
each row, read a row at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_NAME = rb"`((?:[^`]|``)+)`"
_CREATE = re.compile(rb"CREATE TABLE " + _NAME + rb" \(")
# A column list (generated or invisible columns make the dump name the columns).
_INSERT = re.compile(rb"INSERT INTO " + _NAME + rb"(?: \((?:`(?:[^`]|``)*`|[ ,])*\))? VALUES ?")
# One row: values are numbers, NULL, 0x... and quoted strings; only strings hold parentheses.
_ROW = re.compile(rb"\((?:[^'()]++|'(?:[^'\\]++|\\.|'')*+')*+\)", re.S)
_SECTION = re.compile(
    rb"-- (Table structure for table|Temporary table structure for view|"
    rb"Dumping events for database|Dumping routines for database|"
    rb"Final view structure for view) "
)
_MODULUS = 1 << 256
TABLE_SECTION = b"Table structure for table"
# The checksum methods; a manifest names the one its checksums were made with.
IN_ORDER = "sha256 of the rows in the order mariadb-dump prints them"
ROW_SUM = "sum of sha256 of each row as mariadb-dump prints it"
_ROW_END = b",\n"
_STATEMENT_END = b";\n"
CHUNK = 1 << 20


@dataclass
class TableRows:
    method: str = IN_ORDER
    rows: int = 0
    digest: int = 0  # ROW_SUM
    _hash: Any = field(default_factory=hashlib.sha256)  # IN_ORDER

    @property
    def checksum(self) -> str:
        return self._hash.hexdigest() if self.method == IN_ORDER else f"{self.digest:064x}"

    def add(self, values: bytes) -> None:
        """The rows in part of a statement, one at a time."""
        for row in _ROW.finditer(values):
            self.rows += 1
            if self.method == IN_ORDER:
                self._hash.update(row.group() + _ROW_END)
            else:
                self.digest = (
                    self.digest + int.from_bytes(hashlib.sha256(row.group()).digest(), "big")
                ) % _MODULUS

    def add_lines(self, stream: LineStream) -> None:
        """A statement whose rows stand one on each line, read to its end a block at a
        time: each line ends in ",\n", the last in ";\n" (a string cannot hold a line
        break, so neither can occur inside one)."""
        for block in stream.through(_STATEMENT_END):
            self.rows += block.count(b"\n")
            if block.endswith(_STATEMENT_END):
                self._hash.update(memoryview(block)[: -len(_STATEMENT_END)])
                self._hash.update(_ROW_END)
            else:
                self._hash.update(block)


@dataclass
class Section:
    """A part of the dump that one comment header opens: a table's structure, data and
    triggers; a view's; events; routines. The last one runs to the end of the file."""

    kind: bytes
    table: str | None
    start: int
    end: int = -1


@dataclass
class DumpFile:
    method: str = IN_ORDER
    tables: dict[str, TableRows] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    size: int = 0
    # The dump tool's last line ("-- Dump completed") was read; and anything but blank
    # lines after it (what no whole dump holds: a wrapper's output, another file's).
    complete: bool = False
    past_end: bool = False

    def table(self, name: bytes) -> TableRows:
        return self.tables.setdefault(_unquote(name), TableRows(self.method))

    def counts(self) -> dict[str, int]:
        return {name: t.rows for name, t in sorted(self.tables.items())}

    def checksums(self) -> dict[str, str]:
        return {name: t.checksum for name, t in sorted(self.tables.items())}


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", errors="surrogateescape")


class LineStream:
    """Lines, and runs of bytes up to a marker, over a stream of chunks; with the offset
    in the stream of what is read next."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self._at = 0
        self._base = 0  # the offset of the buffer's first byte

    @property
    def offset(self) -> int:
        return self._base + self._at

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._base += self._at
        # Most chunks arrive with the last one read to its end: no copy then.
        left = self._buffer[self._at :] if self._at < len(self._buffer) else b""
        self._buffer = left + chunk if left else chunk
        self._at = 0
        return True

    def peek(self, count: int) -> bytes:
        """The next `count` bytes (fewer at the end), left to be read."""
        while len(self._buffer) - self._at < count and self._more():
            pass
        return self._buffer[self._at : self._at + count]

    def _take(self, end: int) -> bytes:
        piece = self._buffer[self._at : end]
        self._at = end
        return piece

    def line(self) -> bytes:
        """The next line with its line break (the last may have none); b"" at the end."""
        searched = 0
        while (end := self._buffer.find(b"\n", self._at + searched)) < 0:
            searched = len(self._buffer) - self._at
            if not self._more():
                return self._take(len(self._buffer))
        return self._take(end + 1)

    def through(self, marker: bytes) -> Iterator[bytes]:
        """The bytes up to and including marker (or the end), in pieces as they come."""
        while (end := find_marker(self._buffer, marker, self._at)) < 0:
            # What could be the start of the marker stays for the next search.
            keep = max(self._at, len(self._buffer) - len(marker) + 1)
            if keep > self._at:
                yield self._take(keep)
            if not self._more():
                if self._at < len(self._buffer):
                    yield self._take(len(self._buffer))
                return
        yield self._take(end + len(marker))


# Past this many false starts in one search, the generic search takes over.
_FALSE_STARTS = 16


def find_marker(buffer: bytes, marker: bytes, start: int) -> int:
    """buffer.find(marker, start), searched for by the marker's first byte: a one-byte
    search runs at memory speed, where a search for ";\\n" stops at every row's line
    break. A buffer full of the first byte falls back to the generic search."""
    first, rest = marker[:1], marker[1:]
    for _ in range(_FALSE_STARTS):
        at = buffer.find(first, start)
        if at < 0 or buffer.startswith(rest, at + 1):
            return at
        start = at + 1
    return buffer.find(marker, start)


def read_dump(path: Path, method: str = IN_ORDER) -> DumpFile:
    """Every table of a dump file with its rows and checksum, and the file's sections."""
    with path.open("rb") as handle:
        return read_chunks(iter(lambda: handle.read(CHUNK), b""), method)


# Lines that name a table, whose name may hold a line break: the dump then goes on
# with the name on the next line (after "-- " in a comment header).
_NAMING = (b"INSERT INTO `", b"CREATE TABLE `", b"-- Table structure for table `")


def _name_runs_on(body: bytes, start: int) -> bool:
    """Whether the backquoted name opening at body[start] is still open at the line's end."""
    at = start + 1
    while True:
        end = body.find(b"`", at)
        if end < 0:
            return True
        if body[end + 1 : end + 2] != b"`":
            return False
        at = end + 2


def _line(stream: LineStream) -> tuple[bytes, int] | None:
    """The next line without its line break, and its offset; a line whose table name
    breaks is joined with the lines that finish the name."""
    start = stream.offset
    held: bytes | None = None
    while line := stream.line():
        body = line.rstrip(b"\r\n")
        if held is not None:
            if held.startswith(b"-- ") and body.startswith(b"-- "):
                body = body[3:]
            body = held + b"\n" + body
        head = next((h for h in _NAMING if body.startswith(h)), None)
        if head is None or not _name_runs_on(body, len(head) - 1):
            return body, start
        held = body
    return (held, start) if held is not None else None


def read_chunks(chunks: Iterable[bytes], method: str = IN_ORDER) -> DumpFile:
    """read_dump over the dump's bytes as they come, in chunks of any size."""
    dump = DumpFile(method)
    stream = LineStream(chunks)
    previous, previous_offset = b"", 0
    in_program = False
    inserting: TableRows | None = None
    while (item := _line(stream)) is not None:
        body, start = item
        if dump.complete:
            dump.past_end = dump.past_end or bool(body.strip())
            continue
        if inserting is not None:
            inserting.add(body)
            if body.endswith(b";"):
                inserting = None
        elif in_program:
            in_program = body != b"DELIMITER ;"
        elif body == b"DELIMITER ;;":
            in_program = True
        elif body.startswith(b"INSERT INTO `"):
            match = _INSERT.match(body)
            if match:
                table = dump.table(match.group(1))
                if match.end() == len(body) and method == IN_ORDER:
                    table.add_lines(stream)  # a row on each line that follows
                else:
                    table.add(body[match.end() :])
                    if not body.endswith(b";"):
                        inserting = table
        elif body.startswith(b"CREATE TABLE `"):
            match = _CREATE.match(body)
            if match:
                dump.table(match.group(1))
        elif body.startswith(b"-- "):
            section = _SECTION.match(body)
            if section and previous == b"--":
                kind = section.group(1)
                name = re.match(_NAME, body[section.end() :]) if kind == TABLE_SECTION else None
                if dump.sections:
                    dump.sections[-1].end = previous_offset
                dump.sections.append(
                    Section(kind, _unquote(name.group(1)) if name else None, previous_offset)
                )
            elif body.startswith(b"-- Dump completed"):
                dump.complete = True
        previous, previous_offset = body, start
    dump.size = stream.offset
    if dump.sections:
        dump.sections[-1].end = dump.size
    return dump


def write_tables(source: Path, dump: DumpFile, keep: set[str], out: IO[bytes]) -> set[str]:
    """Copy the dump without the sections of the tables not in keep; everything else
    (header, views, events, routines, footer) stays. Returns the tables written: keep,
    and a table whose section is the last one (it holds the footer), whatever keep says."""
    written = set(keep)
    ranges: list[tuple[int, int]] = []
    first = dump.sections[0].start if dump.sections else dump.size
    ranges.append((0, first))
    for index, section in enumerate(dump.sections):
        is_table = section.kind == TABLE_SECTION
        last = index == len(dump.sections) - 1
        if is_table and (section.table is None or last):
            if section.table is not None:
                written.add(section.table)
        elif is_table and section.table not in keep:
            continue
        ranges.append((section.start, section.end))
    with source.open("rb") as handle:
        for start, end in ranges:
            handle.seek(start)
            left = end - start
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
    return written
