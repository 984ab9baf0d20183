"""What the server or the client library said about a failure, as one line: the message,
then the hint or detail that says what to do about it (libpq's "Is the server running on
that host...?", a server's HINT), never a driver's raw tuple such as (1045, '...')."""

from __future__ import annotations

from typing import Any


def server_message(exc: BaseException) -> str:
    """One line: the driver error's message with its hint and detail, if any."""
    inner: Any = getattr(exc, "orig", None) or exc
    args: tuple[Any, ...] = tuple(getattr(inner, "args", ()))
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        # PyMySQL keeps the server's error number and message apart.
        return f"{_one_line(args[1])} (error {args[0]})"
    lines = [" ".join(line.split()) for line in str(inner).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(inner).__name__
    said = [lines[0]]
    said += [line for line in lines[1:] if _says_what_to_do(line)]
    hint = getattr(getattr(inner, "diag", None), "message_hint", None)
    if hint and not any(hint in line for line in said):
        said.append(f"HINT: {_one_line(hint)}")
    return "; ".join(said)


def _says_what_to_do(line: str) -> bool:
    # libpq's own advice is a question on its own line; servers prefix theirs.
    return line.startswith(("HINT:", "DETAIL:")) or line.endswith("?")


def _one_line(text: str) -> str:
    return " ".join(text.split())
