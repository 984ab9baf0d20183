"""The triggers, stored programs and views of a MariaDB dump whose SQL names the dumped
database (`CREATE TRIGGER src.tr ... ON src.t`, `DELETE FROM src.t` in an event): the
dump keeps what was written, so restored into a database of another name they would be
made in, or read from, the source database, or stop the restore part way.

Only the dump's DDL is read: the statements between `DELIMITER ;;` and `DELIMITER ;`
(triggers, events, routines) and the views' `/*!50001 CREATE` statements. Rows are never
looked into: each sits on a line that starts with "(" or "INSERT", and a string in the
dump cannot hold a line break, so no row's text starts one of those lines. The file is
read once, a line at a time.
"""

from __future__ import annotations

import functools
import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from aishell.dialects import family
from aishell.errors import StepFailed
from aishell.handlers.backup.manifest import Chain
from aishell.tool.context import ToolContext

_GZIP = b"\x1f\x8b"
_NAME = rb"(?:`(?:[^`]|``)+`|[0-9A-Za-z_$\x80-\xff]+)"
# The object a CREATE makes: its kind, and its name (perhaps qualified).
_MADE = re.compile(
    rb"\b(TRIGGER|EVENT|PROCEDURE|FUNCTION|VIEW)\s+(" + _NAME + rb"(?:\s*\.\s*" + _NAME + rb")?)",
    re.I,
)
# A string literal: the name inside one is text, not a qualifier.
_STRING = re.compile(rb"'(?:[^'\\]|\\.|'')*'", re.S)
_VIEW = b"/*!50001 CREATE"


def _opened(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        gzipped = handle.read(2) == _GZIP
    with gzip.open(path, "rb") if gzipped else path.open("rb") as lines:
        yield from lines


def _statements(path: Path) -> Iterator[bytes]:
    """Each DDL statement of the dump whole, without the lines around it."""
    held: list[bytes] = []
    in_program = False
    for raw in _opened(path):
        line = raw.rstrip(b"\r\n")
        if held:
            held.append(line)
            if line.endswith(b";;" if in_program else b";"):
                yield b"\n".join(held)
                held = []
        elif in_program:
            if line == b"DELIMITER ;":
                in_program = False
            elif line.endswith(b";;"):
                yield line
            else:
                held.append(line)
        elif line == b"DELIMITER ;;":
            in_program = True
        elif line.startswith(_VIEW):
            if line.endswith(b";"):
                yield line
            else:
                held.append(line)


@functools.lru_cache(maxsize=8)
def _qualifier(database: str) -> re.Pattern[bytes]:
    """The database's name before a dot, backquoted or (when it may be) bare."""
    encoded = database.encode("utf-8", errors="surrogateescape")
    forms = [re.escape(b"`" + encoded.replace(b"`", b"``") + b"`")]
    if re.fullmatch(rb"[0-9A-Za-z_$\x80-\xff]+", encoded):
        forms.append(re.escape(encoded))
    return re.compile(
        rb"(?<![0-9A-Za-z_$\x80-\xff.`])(?:"
        + b"|".join(forms)
        + rb")\s*\.\s*[`0-9A-Za-z_$\x80-\xff]"
    )


def _shown(name: bytes) -> str:
    last: bytes = re.findall(_NAME, name)[-1]
    if last.startswith(b"`"):
        last = last[1:-1].replace(b"``", b"`")
    return last.decode("utf-8", errors="replace")


def made_naming(statement: bytes, database: str) -> str | None:
    """The object a statement of the dump makes ("trigger tr") if its SQL names
    `database`; None if it does not."""
    made = _MADE.search(statement)
    if made is None or not _qualifier(database).search(_STRING.sub(b"''", statement)):
        return None
    return f"{made.group(1).decode().lower()} {_shown(made.group(2))}"


def code_objects(path: Path) -> list[str]:
    """The triggers, events, routines and views the dump makes ("view v"), in its order,
    each once: what a restore cannot move between databases with RENAME TABLE."""
    found: list[str] = []
    for statement in _statements(path):
        made = _MADE.search(statement)
        if made is not None:
            shown = f"{made.group(1).decode().lower()} {_shown(made.group(2))}"
            if shown not in found:
                found.append(shown)
    return found


def naming_database(path: Path, database: str) -> list[str]:
    """The objects of the dump whose SQL names `database` ("trigger tr"), in the dump's
    order, each once."""
    found: list[str] = []
    for statement in _statements(path):
        shown = made_naming(statement, database)
        if shown is not None and shown not in found:
            found.append(shown)
    return found


def refuse_named_database(links: Chain, ctx: ToolContext) -> None:
    """A MariaDB dump keeps a trigger's, routine's, event's or view's SQL as it was
    written: where that names the dumped database, a restore into a database of another
    name would make or read those objects there, or stop part way. The manifest names
    the dumped database; one taken before it did is not checked."""
    source = links[-1][1].get("database")
    url = ctx.connection.engine.url
    if family(ctx.connection.dialect.name) != "mysql" or not isinstance(source, str):
        return
    if source == url.database:
        return
    named = [each for link, _ in links for each in naming_database(link, source)]
    if not named:
        return
    shown = ", ".join(dict.fromkeys(named))
    raise StepFailed(
        f"Backup {links[-1][0].name} was taken of database '{source}' and its SQL for "
        f"{shown} names '{source}', so a restore into '{url.database}' would make or read "
        f"them in '{source}'; recreate them in '{source}' without the database name "
        f"before their own or their tables' names and take a new backup, or restore into "
        f"a database named '{source}'"
    )
