"""A MariaDB dump streamed to the client without its events: a validation's scratch copy
must run none of the database's code, and the event scheduler would run them there.
Triggers come after each table's data and routines are only created, so the rest of a
dump runs no code. Without, too, each trigger, routine or view whose SQL names the dumped
database: restored into a scratch database of another name it would be made in, or act
on, the source database. (mariadb-dump writes a view's tables of its own database without
the name, but a function or sequence named with it keeps it: `src`.`f`(),
nextval(`src`.`s`).) A view's placeholder an older dump program made as a table goes
on as the view of NULLs mariadb-dump makes, so that one left in a view's place is a view
still. Fed through a pipe by a thread: a validation needs no disk."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from aishell.handlers.backup.qualified import made_naming

# --- MariaDB: a dump without its events ----------------------------------------------

_EVENTS_HEADER = b"\n--\n-- Dumping events for database "
_NEXT_SECTION = b"\n--\n-- "
_BLOCK_START = b"\nDELIMITER ;;\n"
# Where a view's final definition starts, and its DROP VIEW (the placeholder's).
_FINAL_VIEW = b"\n--\n-- Final view structure for view "
_DROP_VIEW = re.compile(rb"^/\*!50001 DROP VIEW IF EXISTS [^\n]*\n", re.M)
_EVENT_NAME = re.compile(rb"/\*!50106 EVENT `((?:[^`]|``)+)`")
# A view's placeholder made as a table, as older dump programs write it (`/*!50001 CREATE
# TABLE v (...) ENGINE=MyISAM */;`, dropped with `DROP TABLE` before the view is made).
_PLACEHOLDER_TABLE = b"\n/*!50001 CREATE TABLE "
_PLACEHOLDER = re.compile(rb"/\*!50001 CREATE TABLE (`(?:[^`]|``)+`) \((.*)\)[^()]*\*/;\n", re.S)
_PLACEHOLDER_COLUMN = re.compile(rb"(?:\A|,\n)\s*(`(?:[^`]|``)+`)")
_QUOTES = b"'\"`"


def _quoted_end(data: bytes, at: int) -> int:
    """The offset past the quoted string or name opening at data[at]; -1 if it does not
    end in data. Strings take backslash escapes and doubled quotes, names doubled ones."""
    quote = data[at : at + 1]
    i = at + 1
    while True:
        end = data.find(quote, i)
        back = data.find(b"\\", i) if quote != b"`" else -1
        if end < 0:
            return -1
        if 0 <= back < end:
            i = back + 2
        elif data[end + 1 : end + 2] == quote:
            i = end + 2
        else:
            return end + 1


def block_end(data: bytes, start: int) -> int:
    """Where the client's `DELIMITER ;` ends a block of `;;`-delimited statements that
    starts at data[start]: the offset past that line, -1 if data does not hold it yet.
    Read as the client reads it: the command counts only between statements, never
    inside a string, a quoted name or a comment, so no text inside an event's body can
    end the block early."""
    i, between = start, True
    while i < len(data):
        if between and (i == 0 or data[i - 1 : i] == b"\n"):
            line_end = data.find(b"\n", i)
            if line_end < 0:
                return -1
            if data[i:line_end].strip() == b"DELIMITER ;":
                return line_end + 1
        char = data[i : i + 1]
        if char in _QUOTES and char:
            i = _quoted_end(data, i)
            if i < 0:
                return -1
            between = False
        elif data.startswith(b"/*", i) and data[i + 2 : i + 3] not in (b"!", b"M"):
            end = data.find(b"*/", i + 2)
            if end < 0:
                return -1
            i = end + 2
        elif data.startswith(b";;", i):
            i, between = i + 2, True
        else:
            between = between and char.isspace()
            i += 1
    return -1


class WithoutEvents:
    """A mariadb-dump stream with the statements that create its events taken out; the
    events' names in `events`. Given the dumped database's name, each other block of
    `;;`-delimited statements (a trigger, a routine) whose SQL names it is taken out
    too, the object it makes in `naming`."""

    def __init__(self, database: str | None = None) -> None:
        self.database = database
        self.events: list[str] = []
        self.naming: list[str] = []
        self.unended = False
        self._held = b""
        self._state = "normal"

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """What of the stream so far goes on to the client."""
        self._held += chunk
        out: list[bytes] = []
        while True:
            piece = self._step(final)
            if piece is None:
                break
            out.append(piece)
        if final:
            # A block of events the stream never ends is not passed on: the copy
            # lacks what follows it, which the caller reports.
            self.unended = self._state in ("block", "code")
            out.append(b"" if self.unended else self._held)
            self._held = b""
        return b"".join(out)

    def _step(self, final: bool) -> bytes | None:
        """One move of the state machine: the bytes it lets through, None when it needs
        more of the stream."""
        held = self._held
        if self._state == "normal":
            return self._normal()
        if self._state == "view":
            return self._view(final)
        if self._state == "placeholder":
            return self._placeholder(final)
        if self._state == "header":
            block = held.find(_BLOCK_START)
            section = held.find(_NEXT_SECTION)
            if block < 0 and section < 0 and not final:
                return None
            if block < 0 or 0 <= section < block:
                self._state = "normal"  # the header holds no event
                return b""
            self._held, self._state = held[block + 1 :], "block"
            return held[: block + 1]
        end = block_end(held, len(b"DELIMITER ;;\n"))
        if end < 0:
            return None
        if self._state == "code":
            return self._code_block(held[:end])
        self.events += [_name(m.group(1)) for m in _EVENT_NAME.finditer(held[:end])]
        self._held, self._state = held[end:], "normal"
        return b""

    def _normal(self) -> bytes | None:
        """Up to the next place the filter looks into (the events' header; given the
        database, a block of `;;` statements or a view's final definition), from which
        the state that reads it goes on; None when the stream holds none of them yet."""
        held = self._held
        marks = {"header": held.find(_EVENTS_HEADER)}
        if self.database is not None:
            marks |= {"code": held.find(_BLOCK_START), "view": held.find(_FINAL_VIEW)}
            marks["placeholder"] = held.find(_PLACEHOLDER_TABLE)
        found = {state: at for state, at in marks.items() if at >= 0}
        if not found:
            keep = max(0, len(held) - len(_FINAL_VIEW))  # a mark may start in the tail
            self._held = held[keep:]
            return held[:keep] or None
        state = min(found, key=found.__getitem__)
        cut = found[state] + (len(_EVENTS_HEADER) if state == "header" else 1)
        self._held, self._state = held[cut:], state
        return held[:cut]

    def _view(self, final: bool) -> bytes | None:
        """A view's final definition as it goes on: whole, or, if its SQL names the
        dumped database, without its DROP VIEW and CREATE, so the placeholder the dump
        made earlier (its columns as NULLs, reading nothing) stands in its place and a
        view over it is still made. mariadb-dump writes the statement on lines of its
        own, a string's line break as \\n."""
        held = self._held
        create = held.find(b"\n/*!50001 CREATE")
        section = held.find(_NEXT_SECTION)
        if section >= 0 and not 0 <= create < section:
            # The section holds no definition (another dump tool's shape): passed on.
            self._held, self._state = held[section:], "normal"
            return held[:section]
        end = held.find(b";\n", create) if create >= 0 else -1
        if end < 0:
            if not final:
                return None
            self._held, self._state = b"", "normal"
            return held
        self._held, self._state = held[end + 2 :], "normal"
        shown = made_naming(held[create + 1 : end + 1], self.database or "")
        if shown is None:
            return held[: end + 2]
        self.naming.append(shown)
        return _DROP_VIEW.sub(b"", held[: create + 1])

    def _placeholder(self, final: bool) -> bytes | None:
        """A view's placeholder made as a table goes on as the view of NULLs mariadb-dump
        writes now: where the view is left out, it stands in its place as a view still
        (the DROP TABLE before the view's definition leaves a view be), never a table
        the backup does not hold."""
        held = self._held
        end = held.find(b"*/;\n")
        if end < 0 and not final:
            return None
        end = len(held) if end < 0 else end + len(b"*/;\n")
        statement, self._held, self._state = held[:end], held[end:], "normal"
        made = _PLACEHOLDER.fullmatch(statement)
        columns = _PLACEHOLDER_COLUMN.findall(made.group(2)) if made else []
        if made is None or not columns:
            return statement  # not the shape older dump programs write: passed on
        nulls = b",\n ".join(b"NULL AS " + column for column in columns)
        return b"/*!50001 CREATE VIEW " + made.group(1) + b" AS SELECT\n " + nulls + b" */;\n"

    def _code_block(self, block: bytes) -> bytes:
        """A trigger's or routine's block as it goes on: whole, or nothing if its SQL
        names the dumped database."""
        self._held, self._state = self._held[len(block) :], "normal"
        shown = made_naming(block, self.database or "")
        if shown is None:
            return block
        self.naming.append(shown)
        return b""


def _name(raw: bytes) -> str:
    return raw.replace(b"``", b"`").decode("utf-8", errors="replace")


class Feeder:
    """A thread that writes a dump file, without its events, into a pipe whose other
    end the client reads; `done` is how far it has read the file."""

    def __init__(self, path: Path, database: str | None = None, chunk: int = 1 << 20) -> None:
        self.path, self.chunk = path, chunk
        self.filter = WithoutEvents(database)
        self.done = 0
        self.error: BaseException | None = None
        read_end, self._write_end = os.pipe()
        self.reader: IO[bytes] = os.fdopen(read_end, "rb")
        self._thread = threading.Thread(target=self._run, name="dump-feeder", daemon=True)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        # The client has ended: a write into the closed pipe ends the thread.
        self.reader.close()
        self._thread.join()

    def _run(self) -> None:
        try:
            with self.path.open("rb") as dump, os.fdopen(self._write_end, "wb") as out:
                for piece in iter(lambda: dump.read(self.chunk), b""):
                    self.done += len(piece)
                    out.write(self.filter.feed(piece))
                out.write(self.filter.feed(b"", final=True))
        except BrokenPipeError:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc

    def watch(self, before: int, reached: Callable[[int], None]) -> Callable[[int], None]:
        return lambda _pid: reached(before + self.done)
