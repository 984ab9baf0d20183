"""Reading a mariadb-dump (or mysqldump) file: each table's rows and a checksum of them,
and where each table's part of the file starts and ends.

A MySQL/MariaDB backup's manifest takes its row counts and checksums from here, from the
dump itself: the server cannot share the dump's snapshot with another session, so rows
counted over SQL, however close in time, are other rows than the dump holds while the
application writes.

Rows are read from the dump's INSERT statements outside stored-program bodies (those sit
between `DELIMITER ;;` and `DELIMITER ;`). The dump escapes newlines inside strings, so
a statement's lines hold whole values. A table's checksum is the sum of its rows'
sha256 (order-independent, in constant memory) over the rows as the dump prints them;
a restored copy dumped by the same tool prints the same rows the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
METHOD = "sum of sha256 of each row as mariadb-dump prints it"


@dataclass
class TableRows:
    rows: int = 0
    digest: int = 0

    @property
    def checksum(self) -> str:
        return f"{self.digest:064x}"

    def add(self, values: bytes) -> None:
        for row in _ROW.finditer(values):
            self.rows += 1
            self.digest = (
                self.digest + int.from_bytes(hashlib.sha256(row.group()).digest(), "big")
            ) % _MODULUS


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
    tables: dict[str, TableRows] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    size: int = 0
    complete: bool = False

    def counts(self) -> dict[str, int]:
        return {name: t.rows for name, t in sorted(self.tables.items())}

    def checksums(self) -> dict[str, str]:
        return {name: t.checksum for name, t in sorted(self.tables.items())}


def _unquote(name: bytes) -> str:
    return name.replace(b"``", b"`").decode("utf-8", errors="surrogateescape")


def read_dump(path: Path) -> DumpFile:
    """Every table of a dump file with its rows and checksum, and the file's sections."""
    with path.open("rb") as handle:
        return read_lines(handle)


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


def _lines(lines: Iterable[bytes]) -> Iterator[tuple[bytes, int, int]]:
    """(text, offset, length) of each line, a line whose table name breaks joined with
    the lines that finish the name."""
    offset = 0
    held: bytes | None = None
    held_at = 0
    for line in lines:
        body = line.rstrip(b"\r\n")
        if held is None:
            held_at = offset
        else:
            if held.startswith(b"-- ") and body.startswith(b"-- "):
                body = body[3:]
            body = held + b"\n" + body
        offset += len(line)
        head = next((h for h in _NAMING if body.startswith(h)), None)
        if head is not None and _name_runs_on(body, len(head) - 1):
            held = body
            continue
        held = None
        yield body, held_at, offset - held_at
    if held is not None:
        yield held, held_at, offset - held_at


def read_lines(lines: Iterable[bytes]) -> DumpFile:
    dump = DumpFile()
    offset = 0
    previous, previous_offset = b"", 0
    in_program = False
    inserting: TableRows | None = None
    for body, start, length in _lines(lines):
        offset = start
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
                table = dump.tables.setdefault(_unquote(match.group(1)), TableRows())
                table.add(body[match.end() :])
                if not body.endswith(b";"):
                    inserting = table
        elif body.startswith(b"CREATE TABLE `"):
            match = _CREATE.match(body)
            if match:
                dump.tables.setdefault(_unquote(match.group(1)), TableRows())
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
        offset = start + length
    dump.size = offset
    if dump.sections:
        dump.sections[-1].end = offset
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
