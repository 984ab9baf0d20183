"""A PostgreSQL password file (~/.pgpass, PGPASSFILE, a passfile) read as libpq reads
it ("The Password File" in libpq's manual, checked against libpq itself): the first
line whose host, port, database and user match, `*` matching anything, `\\:` and `\\\\`
escaped; the host as given, else its hostaddr, else "localhost" (as is libpq's own
socket folder), for each host of a list libpq tries in turn.
"""

from __future__ import annotations

import stat
from pathlib import Path

from aishell.errors import ConfigError
from aishell.targets.optionfiles import text_lines as _text_lines


def pgpass_keys(
    hosts: list[str], ports: list[str], addresses: list[str], target: str
) -> list[tuple[str | None, int | None]]:
    """The (host, port) a password file's line must match for each host libpq tries: the
    host as given, else its hostaddr (never the address in place of a name given), else
    none (libpq's "localhost")."""
    count = max(len(hosts), len(addresses), 1)
    if addresses and hosts and len(addresses) != len(hosts):
        raise ConfigError(
            f"Target '{target}': {len(hosts)} host(s) and {len(addresses)} hostaddr value(s), "
            "which libpq cannot pair; give one hostaddr per host"
        )
    keys = []
    for i in range(count):
        host = (hosts[i] if i < len(hosts) else "") or (addresses[i] if i < len(addresses) else "")
        port = ports[i] if len(ports) > 1 else (ports[0] if ports else "")
        keys.append((host or None, int(port) if port else None))
    return keys


def pgpass_password(
    path: Path, where: list[tuple[str | None, int | None]], database: str, user: str, target: str
) -> str | None:
    """The password libpq takes from the file for each host it tries; one password, as
    aishell sends one to whichever host answers, or refused when they differ (sending
    one host's password to another is what libpq never does)."""
    found = {(host, port): pgpass_lookup(path, host, port, database, user) for host, port in where}
    if len(set(found.values())) > 1:
        each = ", ".join(
            f"{host or 'localhost'}:{port or 5432} {'a password' if pw is not None else 'none'}"
            for (host, port), pw in found.items()
        )
        raise ConfigError(
            f"Target '{target}': the password file gives the hosts libpq tries different "
            f"passwords ({each}); aishell sends one password to whichever host answers: "
            "give every host the same line's password, or the target one host"
        )
    return next(iter(found.values()))


def pgpass_ignored(path: Path, named: str) -> str:
    """The note that follows "none" where the password file is there but libpq ignores it
    for its mode (else ""): without it, a login with no password would not say why."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    if not stat.S_ISREG(mode) or not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return ""
    return (
        f" ({named} is mode {stat.S_IMODE(mode):04o}, which others may use: ignored, as "
        f"libpq ignores it; chmod 600 {path})"
    )


def pgpass_lookup(
    path: Path, host: str | None, port: int | None, database: str, user: str
) -> str | None:
    """The password of the first matching line of a password file, as libpq matches
    them; None when the file is missing or others may read it (libpq ignores it then)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode) or mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        lines = [line.rstrip("\r") for line in _text_lines(path)]
    except OSError:
        return None
    wanted = [_pgpass_host(host), str(port or 5432), database, user]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) == 5 and all(f in ("*", w) for f, w in zip(fields, wanted, strict=False)):
            return fields[4]
    return None


def _pgpass_host(host: str | None) -> str:
    """The host a password file's line must name, as libpq matches it: "localhost" for
    none and for a Unix socket in libpq's own socket folder; any other folder as it is
    written (`/tmp:*:*:*:pw` is the password of sockets in /tmp alone)."""
    if not host:
        return "localhost"
    if host.startswith("/") and host == _default_socket_folder():
        return "localhost"
    return host


def _default_socket_folder() -> str:
    """The folder libpq looks for a server's socket in when given no host (built into
    it: /var/run/postgresql on Debian, /tmp upstream), as libpq itself names it; the
    attempt is to a port no server has, never a connection."""
    import psycopg  # PostgreSQL targets alone load the driver

    attempt = psycopg.pq.PGconn.connect_start(b"host='' hostaddr='' port=1 connect_timeout=1")
    try:
        return (attempt.host or b"").decode(errors="replace")
    finally:
        attempt.finish()


def _pgpass_fields(line: str) -> list[str]:
    """A password file line's fields, unescaped. As in libpq, the password too ends at
    its first unescaped colon: `*:*:*:*:a:b` logs in with `a` there, and so here."""
    fields: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            current.append(line[i + 1])
            i += 2
            continue
        if line[i] == ":":
            fields.append("".join(current))
            current = []
            if len(fields) == 5:
                return fields
        else:
            current.append(line[i])
        i += 1
    fields.append("".join(current))
    return fields
