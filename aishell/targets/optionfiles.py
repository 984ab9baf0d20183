"""A MySQL/MariaDB option file (~/.my.cnf) read as the clients read it (mysys/my_default.c,
MariaDB 10.11 checked with `mariadb --print-defaults` and real logins): comments,
quotes and escapes, `!include FILE` and `!includedir DIR`, and the login's options
under every name the clients take for them.

The clients take an option under other names than its own: `loose-password`, and any
unambiguous prefix of a name (`passw=`, `pass=`), where what is unambiguous depends on
each program's own options (`pa` is `password` to mariadb-dump and ambiguous to mariadb,
which has `pager`); `skip-password` sends none, and a bare `password` line asks for one
at the terminal. aishell cannot log in as all of these would, so such a line for the
login is refused, naming the line and what to write instead.
"""

from __future__ import annotations

import stat
from pathlib import Path

from aishell.errors import ConfigError

# The login's options: what aishell takes from an option file.
LOGIN_OPTIONS = ("password", "user", "host", "port")
# What the clients take for white space around names and values (my_isspace, latin1;
# libpq's isspace() in the C locale): never a non-ASCII space a password may end with.
SPACE = " \t\n\v\f\r"
# How deep !include may go, as the clients' own limit (a file including itself ends).
_MAX_INCLUDE_DEPTH = 10
_SWITCHES = ("skip-", "disable-", "enable-", "maximum-")


def text_lines(path: Path) -> list[str]:
    """A login file's lines as the clients read them: its bytes, lines ended by "\n"
    alone, as fgets() ends them (splitlines() also breaks at \v, \f, U+0085, U+2028
    and others a password may hold). UTF-8, as the drivers send a password; bytes that
    are not stay apart (surrogates), so that the login refuses a password holding them
    rather than another password being sent in its place."""
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")


def read_option_groups(path: Path, groups: tuple[str, ...]) -> dict[str, str]:
    """The options of a MySQL option file's groups, read line by line as the clients
    read them, a later line winning, the files it includes read where they are named;
    `KEY@` names the group a key came from (`FILE [GROUP]` when another file's). A
    login option under another name than its own is refused (see the module)."""
    lines: list[tuple[Path, str, str, str]] = []
    _read(path, groups, lines, 0)
    found: dict[str, str] = {}
    for file, group, key, value in lines:
        if group in groups:
            found[key] = value
            found[f"{key}@"] = group if file == path else f"{file} [{group}]"
    return found


def _read(
    path: Path, groups: tuple[str, ...], lines: list[tuple[Path, str, str, str]], depth: int
) -> None:
    """Each option line of the groups in the file and those it includes, in the order
    read: the file, its group, the option's name and its value."""
    group = None
    for raw in text_lines(path):
        line = raw.lstrip(SPACE)
        if line.startswith("!"):
            for included in _included(line, depth):
                _read(included, groups, lines, depth + 1)
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            # The name's trailing spaces go, its leading ones stay: "[ client]" is not
            # [client] to the clients. Group names match whatever their case.
            group = line[1 : line.find("]")].rstrip(SPACE).lower() if "]" in line else None
            continue
        if group not in groups:
            continue
        key, equals, value = line[: _comment_start(line)].partition("=")
        key = _login_option(key.rstrip(SPACE).replace("_", "-").lower(), equals, path, group)
        lines.append((path, group, key, _option_value(value.strip(SPACE))))


def _login_option(key: str, equals: str, path: Path, group: str) -> str:
    """The option's name as the clients take it (`loose-` dropped); a login option
    under another name, or without its value, refused."""
    key = key.removeprefix("loose-")
    switched = next((s for s in _SWITCHES if key.startswith(s)), "")
    name = key.removeprefix(switched)
    where = f"{path} [{group}]: `{key}`"
    if switched and name in LOGIN_OPTIONS:
        raise ConfigError(
            f"{where} turns the login's {name} off, which aishell cannot do as each client "
            f"does; remove the line (or write {name}=VALUE)"
        )
    if key in LOGIN_OPTIONS:
        if not equals:
            said = (
                "makes the clients ask for the password at a terminal, and aishell asks no one"
                if key == "password"
                else "is refused by the clients"
            )
            raise ConfigError(f"{where} without a value {said}: write {key}=VALUE")
        return key
    meant = [option for option in LOGIN_OPTIONS if key and option.startswith(key)]
    if meant:
        raise ConfigError(
            f"{where} is a shortened {' or '.join(meant)}, which each client program takes "
            f"or refuses by its own options: write {meant[0]}= in full"
        )
    return key


def _included(line: str, depth: int) -> list[Path]:
    """The files an `!include FILE` or `!includedir DIR` line reads, as the clients
    follow it: the name is the rest of the line (a relative one from the working
    folder); a missing file is passed over, a directory's *.cnf files are read by name,
    a world-writable file is ignored."""
    directive, _, name = line[1:].partition(" ")
    name = name.strip(SPACE)
    if depth >= _MAX_INCLUDE_DEPTH or not name or directive not in ("include", "includedir"):
        return []
    place = Path(name)
    if directive == "include":
        return [place] if readable(place) else []
    try:
        return sorted(p for p in place.iterdir() if p.name.endswith(".cnf") and readable(p))
    except OSError:
        return []


def readable(path: Path) -> bool:
    """A regular file the clients read: others may not write to it (mysys: "Warning:
    World-writable config file '...' is ignored")."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and not mode & stat.S_IWOTH


def _comment_start(line: str) -> int:
    """Where a line's comment starts (its length if none): at the first `#` outside
    single or double quotes, wherever in the line it is, as remove_end_comment() finds
    it. A backslash keeps a quote from closing only inside quotes."""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if char in "'\"" and not escaped:
            if not quote:
                quote = char
            elif quote == char:
                quote = ""
        if not quote and char == "#":
            return i
        escaped = bool(quote) and char == "\\" and not escaped
    return len(line)


_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "r": "\r", "s": " ", "\\": "\\", '"': '"', "'": "'"}


def _option_value(value: str) -> str:
    """A value, its comment and surrounding spaces gone, as the clients take it: one
    pair of the same quotes around all of it removed, then its escapes replaced; an
    unknown escape and a last lone backslash are kept as they are."""
    if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
        value = value[1:-1]
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i : i + 2]
            out.append(_ESCAPES.get(value[i + 1], pair))
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)
