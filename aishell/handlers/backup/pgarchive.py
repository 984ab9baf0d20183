"""Reading a pg_dump custom-format archive as it streams: the pg_dump that wrote it and
the tables whose data it holds (read_header), and the rows of each of them (read_archive).

A backup reads the header as its file is written (the manifest names the pg_dump);
its row counts are counted in the dump's snapshot meanwhile (dumps.py): inflating the
table data to count its lines took about a second of CPU per 300 MiB of rows, on the
cores pg_dump and the server need. Counting the rows of an archive stays here, for
archives read whole.

The pg_catalog.format (pg_dump's src/bin/pg_dump/pg_backup_archiver.c and pg_backup_custom.c): a
header, a table of contents, then one data block per table (and one for large objects).
A block is a type byte, the entry's dump id, and length-prefixed chunks of zlib output
(or plain bytes when uncompressed) ending in a zero length. A table's data is COPY text,
one line per row (line breaks inside values are escaped), so its rows are its newlines.
Archive versions 1.12 to 1.16 (pg_dump 9.6 to 17) with zlib or no compression are read;
any other archive raises ArchiveUnreadable and the caller counts another way.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_MAGIC = b"PGDMP"
_CUSTOM = 1  # archCustom
_BLK_DATA, _BLK_BLOBS = 1, 3
# Versions as pg_dump encodes them: (major * 256 + minor) * 256 + revision.
_FIRST, _LAST = (1 << 16) | (12 << 8), (1 << 16) | (16 << 8) | 255
_V1_14, _V1_15, _V1_16 = (1 << 16) | (14 << 8), (1 << 16) | (15 << 8), (1 << 16) | (16 << 8)
_ZLIB_ALGORITHM = 1  # PG_COMPRESSION_GZIP, from version 1.15 on
_END_OF_DATA = b"\\.\n\n\n"


class ArchiveUnreadable(Exception):
    """The stream is not an archive this module reads; its rows must be counted otherwise."""


@dataclass
class Archive:
    """The rows of each table the archive holds, by the table's oid; and the version of
    the pg_dump that wrote it (as `pg_dump --version` says it)."""

    rows: dict[int, int] = field(default_factory=dict)
    pg_dump: str = ""


@dataclass
class TocEntry:
    """One item of an archive's table of contents, as pg_restore -l lists it: its dump
    id, kind (`desc`: TABLE, INDEX, TABLE DATA ...), schema, name, the SQL that creates
    it, and the dump ids it depends on."""

    dump_id: int
    desc: str
    namespace: str
    tag: str
    defn: str
    deps: list[int] = field(default_factory=list)


class _Source:
    """Exact reads over a stream of chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._at = 0

    def _fill(self, wanted: int) -> bool:
        while len(self._buffer) - self._at < wanted:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._buffer = self._buffer[self._at :] + chunk
            self._at = 0
        return True

    def at_end(self) -> bool:
        return not self._fill(1)

    def read(self, size: int) -> bytes:
        if not self._fill(size):
            raise ArchiveUnreadable("the archive ends in the middle of an item")
        start = self._at
        self._at += size
        return self._buffer[start : self._at]


class _Reader:
    def __init__(self, source: _Source) -> None:
        self.source = source
        self.int_size = 4
        self.off_size = 8
        self.version = 0
        self.dump_version = ""
        self.entries: list[TocEntry] = []
        # Reading only the table of contents, which is never compressed.
        self.toc_only = False

    def read_byte(self) -> int:
        return self.source.read(1)[0]

    def read_int(self) -> int:
        raw = self.source.read(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def read_str(self) -> str | None:
        size = self.read_int()
        if size < 0:
            return None
        return self.source.read(size).decode("utf-8", errors="surrogateescape")

    def header(self) -> bool:
        """Read the header; True when the table data is zlib-compressed."""
        if self.source.read(5) != _MAGIC:
            raise ArchiveUnreadable("not a pg_dump archive")
        major, minor, revision = self.source.read(3)
        self.version = (major << 16) | (minor << 8) | revision
        if not _FIRST <= self.version <= _LAST:
            raise ArchiveUnreadable(f"archive version {major}.{minor} is not one this reads")
        self.int_size, self.off_size = self.read_byte(), self.read_byte()
        if self.read_byte() != _CUSTOM:
            raise ArchiveUnreadable("not a custom-format archive")
        if self.version >= _V1_15:
            algorithm = self.read_byte()
            if algorithm not in (0, _ZLIB_ALGORITHM) and not self.toc_only:
                raise ArchiveUnreadable("the archive is compressed with other than zlib")
            compressed = algorithm == _ZLIB_ALGORITHM
        else:
            compressed = self.read_int() != 0
        for _ in range(7):  # the time it was made
            self.read_int()
        self.read_str(), self.read_str()  # the database, the server's version
        self.dump_version = self.read_str() or ""
        return compressed

    def toc(self) -> dict[int, int]:
        """The table-data entries: the table's oid by the entry's dump id."""
        entries: dict[int, int] = {}
        for _ in range(self.read_int()):
            dump_id = self.read_int()
            self.read_int()  # had a data dumper
            self.read_str()  # the catalog the object is in (0 for table data)
            oid = self.read_str()  # the object's oid; for table data, the table's
            tag = self.read_str() or ""  # the object's name
            desc = self.read_str() or ""
            self.read_int()  # section
            defn = self.read_str() or ""
            self.read_str(), self.read_str()  # drop and copy statements
            namespace = self.read_str() or ""
            self.read_str()  # tablespace
            if self.version >= _V1_14:
                self.read_str()  # table access method
            if self.version >= _V1_16:
                self.read_int()  # relkind
            self.read_str(), self.read_str()  # owner, "with oids"
            deps = []
            while (dep := self.read_str()) is not None:
                deps.append(int(dep) if dep.isdigit() else -1)
            self.read_byte(), self.source.read(self.off_size)  # where its data is, if known
            self.entries.append(TocEntry(dump_id, desc, namespace, tag, defn, deps))
            if desc == "TABLE DATA" and oid and oid.isdigit():
                entries[dump_id] = int(oid)
        return entries

    def chunks(self) -> Iterator[bytes]:
        """The chunks of one data item, up to its zero length."""
        while size := self.read_int():
            if size < 0:
                raise ArchiveUnreadable("a data chunk of negative length")
            yield self.source.read(size)


def _rows(chunks: Iterator[bytes], compressed: bool, counted: Callable[[int], None]) -> int:
    """Rows in one table's data: COPY text, one line per row, then pg_dump's end of data
    (a line holding backslash-period, and two blank lines). `counted` is told the size
    of each piece of that text."""
    inflate = zlib.decompressobj() if compressed else None
    lines = 0
    tail = b""
    try:
        for chunk in chunks:
            data = inflate.decompress(chunk) if inflate else chunk
            counted(len(data))
            lines += data.count(b"\n")
            tail = (tail + data[-len(_END_OF_DATA) - 1 :])[-len(_END_OF_DATA) - 1 :]
        if inflate:
            data = inflate.flush()
            lines += data.count(b"\n")
            tail = (tail + data[-len(_END_OF_DATA) - 1 :])[-len(_END_OF_DATA) - 1 :]
            if not inflate.eof or inflate.unused_data:
                raise ArchiveUnreadable("a data block is not one whole zlib stream")
    except zlib.error as exc:
        raise ArchiveUnreadable(f"a data block does not decompress: {exc}") from None
    # The marker stands on a line of its own: at the start, or after a row's line break.
    if not tail.endswith(_END_OF_DATA) or tail[: -len(_END_OF_DATA)] not in (b"", b"\n"):
        raise ArchiveUnreadable("a table's data does not end as COPY data does")
    return lines - _END_OF_DATA.count(b"\n")


def read_header(chunks: Iterator[bytes]) -> Archive:
    """The pg_dump that wrote a custom-format archive, read from its header and table of
    contents as they come; the rest of the stream is left unread (its caller writes and
    hashes it). The rows are not counted: Archive.rows is empty.

    Raises ArchiveUnreadable for anything but a custom-format archive this module reads."""
    reader = _Reader(_Source(chunks))
    reader.header()
    reader.toc()
    return Archive(pg_dump=f"pg_dump (PostgreSQL) {reader.dump_version}")


def read_toc(chunks: Iterator[bytes]) -> list[TocEntry]:
    """The table of contents of a custom-format archive, in its order (the order
    pg_restore restores it in); the data after it is left unread.

    Raises ArchiveUnreadable for anything but a custom-format archive this module reads."""
    reader = _Reader(_Source(chunks))
    reader.toc_only = True
    reader.header()
    reader.toc()
    return reader.entries


def read_archive(
    chunks: Iterator[bytes], counted: Callable[[int], None] = lambda _n: None
) -> Archive:
    """The rows of each table a custom-format archive holds, read from its chunks as
    they come; `counted` is told the size of each piece of table data (uncompressed)
    as it is read, for the progress display.

    Raises ArchiveUnreadable for anything but a readable custom-format archive; the
    caller then reads what is left of the stream itself."""
    reader = _Reader(_Source(chunks))
    compressed = reader.header()
    entries = reader.toc()
    found = Archive(pg_dump=f"pg_dump (PostgreSQL) {reader.dump_version}")
    while not reader.source.at_end():
        kind, dump_id = reader.read_byte(), reader.read_int()
        if kind == _BLK_DATA:
            lines = _rows(reader.chunks(), compressed, counted)
            if dump_id in entries:
                found.rows[entries[dump_id]] = lines
        elif kind == _BLK_BLOBS:
            while reader.read_int():  # each large object: its oid, then its chunks
                for _chunk in reader.chunks():
                    pass
        else:
            raise ArchiveUnreadable(f"unknown data block type {kind}")
    return found
