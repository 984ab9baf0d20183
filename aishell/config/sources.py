"""A config or tool file's bytes, read as the loader reads them: light (no YAML parser,
no pydantic), so that what only hashes the files (the listings' cache, config/cache.py)
reads exactly what a full load would."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aishell.errors import ConfigError

# A config or tool file is a few kilobytes; anything this large is something else.
MAX_YAML_BYTES = 4 * 1024**2


def read_source(path: Path, what: str = "config file") -> bytes:
    """A config or tool file's bytes: a regular file of at most MAX_YAML_BYTES; a FIFO,
    a device or a directory is refused before it is read (reading one would hang or
    never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"Cannot read {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file; a {what} must be one")
        if mode & stat.S_IWOTH:
            # Any user could choose what aishell runs, and as whom: a target, a notify
            # command, a safety level, a tool's SQL. Refused, as the MariaDB clients
            # refuse a world-writable option file.
            raise ConfigError(
                f"{path}: mode {stat.S_IMODE(mode):04o}, any user may write to this {what} "
                f"and so choose what aishell runs; close it with `chmod o-w {path}`"
            )
        raw = file.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 1024**2} MiB; not a {what}")
    return raw
