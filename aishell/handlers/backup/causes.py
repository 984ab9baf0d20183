"""What a client program's stderr says went wrong, as one bounded line with no secret.

A failed pg_dump's last line is often only "pg_dump: detail: Query was: COPY ...",
while the cause came lines before ("server closed the connection unexpectedly", a
FATAL); mariadb-dump puts its cause in "Got error: ..." or "Error 2013: ...". So the
lines that carry a cause are kept, in their order (errors, FATAL, DETAIL and HINT, a
connection the server closed or lost, the statement it was at), and the rest (notices,
warnings, the program's progress) dropped; each line and the whole are cut to a
bounded length, and a password (in a URL, a key=value, or the one the program was
given) is never shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# The most a kept line, and all of them together, show.
LINE_CHARS = 200
TOTAL_CHARS = 600

# A line that carries a cause (matched anywhere, case-insensitively).
_CAUSE = re.compile(
    r"error|fatal|panic|detail:|hint:|query was|command was|server closed|"
    r"terminated abnormally|lost connection|gone away|connection refused|"
    r"could not|couldn't|cannot|failed|denied|no space|timeout|timed out|aborted|killed",
    re.IGNORECASE,
)
# Lines that only say how a run went, even where they hold a word above.
_NOISE = re.compile(
    r"^(?:\S+: )?(?:warning|notice|info)\b|\[warning\]|^--|^/\*|errors ignored on restore",
    re.IGNORECASE,
)
# Where a password shows itself: user:password@ in a URL, password=... in a
# connection string or option.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEY_PASSWORD = re.compile(r"((?:password|passwd|pwd)\s*=\s*)('[^']*'|\"[^\"]*\"|\S+)", re.I)
_HIDDEN = "***"


def cause_of(stderr: str, program: str, code: int, secrets: Iterable[str] = ()) -> str:
    """One line of what `program` said went wrong: the lines that carry a cause, else
    its last line, else its exit code; bounded, secrets hidden."""
    lines = [_without_prefix(line.strip(), program) for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    kept = [line for line in lines if _CAUSE.search(line) and not _NOISE.search(line)]
    if not kept:
        kept = lines[-1:] or [f"exit code {code}"]
    unique = list(dict.fromkeys(kept))
    shown: list[str] = []
    used = 0
    for line in unique:
        line = hide_secrets(line, secrets)
        if len(line) > LINE_CHARS:
            line = line[: LINE_CHARS - 3] + "..."
        if shown and used + len(line) > TOTAL_CHARS:
            shown.append(f"(and {len(unique) - len(shown)} more line(s))")
            break
        shown.append(line)
        used += len(line) + 2
    return "; ".join(shown)


def hide_secrets(line: str, secrets: Iterable[str] = ()) -> str:
    """The line with every password it shows replaced by ***."""
    for secret in secrets:
        if secret:
            line = line.replace(secret, _HIDDEN)
    line = _URL_PASSWORD.sub(rf"\g<1>{_HIDDEN}@", line)
    return _KEY_PASSWORD.sub(rf"\g<1>{_HIDDEN}", line)


def _without_prefix(line: str, program: str) -> str:
    """'pg_dump: error: x' reads 'error: x' after "pg_dump failed: "."""
    prefix = f"{program}: "
    return line[len(prefix) :] if line.startswith(prefix) else line
