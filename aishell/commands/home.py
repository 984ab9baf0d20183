"""The home itself: making one (`aishell init`), and what doctor says of it: the files and
state store in use, and the versions of everything aishell runs with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
from pathlib import Path
from typing import Any

from aishell.config.home import CONFIG_NAME, Home, agent_file, find_home, system_dir
from aishell.config.models import Config
from aishell.config.resources import bundled_config_dir, bundled_packaging_dir
from aishell.errors import UsageError
from aishell.files import make_private_dirs, write_beside

AGENTS = ("backup", "log_cleanup", "maintenance")


def init_home(home: str | os.PathLike[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Make the home: its folders, a commented aishell.yaml and the agents' defaults, and
    its state store. An existing config is replaced only with force (the old one kept
    beside it as .bak)."""
    where = find_home(home)
    config = where.config_file
    if config.exists() and not force:
        raise UsageError(
            f"{config} exists; `aishell init --force` replaces it (keeping the old one as "
            f"{config.name}.bak)"
        )
    bundled, system = bundled_config_dir(), system_dir()
    template = (bundled / CONFIG_NAME).read_text(encoding="utf-8")
    if (system / CONFIG_NAME).is_file():
        # Every active key here would replace the system-wide one: the user's file starts
        # with none, the defaults as comments to uncomment.
        template = _over_system(template, system / CONFIG_NAME)
    written, kept = [], []
    for folder in (where.config_dir / "agents", where.data_dir, where.state_dir):
        _make_folder(folder, where.data_dir)
    files = [(template, config)] + [
        (
            (bundled / "agents" / f"{agent}.yaml").read_text(encoding="utf-8"),
            where.config_dir / "agents" / f"{agent}.yaml",
        )
        for agent in AGENTS
        # A system-wide agent file is the site's choice: a copy here would hide it.
        if not (system / "agents" / f"{agent}.yaml").is_file()
    ]
    for content, path in files:
        if path.exists() and not force:
            kept.append(str(path))  # an agent's file of its own, beside a config made anew
            continue
        if path.exists():
            os.replace(path, path.with_name(path.name + ".bak"))
        _write_new(path, content)
        written.append(str(path))
    from aishell.config.models import load_config
    from aishell.state.store import StateStore

    loaded = load_config(config, home)
    with StateStore(loaded.state_url):
        pass  # made and brought to the newest schema now, not at the first run
    named = os.environ.get("AISHELL_CONFIG")
    return {
        **_where(where),
        "written": written,
        "kept": kept,
        "state": loaded.state_location,
        # While AISHELL_CONFIG names a file, that file is used instead of this one.
        "overridden_by": named or None,
    }


def scheduler_units() -> dict[str, Any]:
    """The systemd units and cron file shipped with aishell: their folder and texts."""
    folder = bundled_packaging_dir()
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return {"folder": str(folder), "files": {p.name: p.read_text("utf-8") for p in files}}


def _over_system(template: str, system: Path) -> str:
    """The bundled config as comments only, under a note on the file it extends."""
    lines = [
        f"# This file extends the system-wide {system}, read first. Uncomment and change",
        "# what should differ for you: a key set here replaces the system's, and targets",
        "# added here join the system's (a target of the same name replaces that one).",
        "",
    ]
    for line in template.splitlines():
        lines.append(line if not line.strip() or line.startswith("#") else f"# {line}")
    return "\n".join(lines) + "\n"


def _make_folder(folder: Path, home: Path) -> None:
    """A folder of the home, its owner's alone; a home that cannot be made is one line
    that says how to make it (as the packaging steps do, before `aishell init`)."""
    try:
        make_private_dirs(folder, 0o700)
    except OSError as exc:
        user = _user()
        raise UsageError(
            f"The home {home} cannot be written by {user} ({folder}: {exc.strerror}); make "
            f"it first, owned by {user}, mode 0700 (as root: install -d -m 0700 -o {user} "
            f"{home}), or choose another home with --home or AISHELL_HOME"
        ) from None


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _write_new(path: Path, text: str) -> None:
    """Written whole or not at all: a half-written config would be worse than none."""
    write_beside(path, text.encode("utf-8"), "Config file", UsageError)


def _where(home: Home) -> dict[str, Any]:
    return {
        "chosen_by": home.chosen_by,
        "config_dir": str(home.config_dir),
        "data_dir": str(home.data_dir),
        "state_dir": str(home.state_dir),
    }


def home_report(config: Config) -> dict[str, Any]:
    """The files and folders this config was loaded from and leads to."""
    bundled = bundled_config_dir()
    return {
        "chosen_by": config.chosen_by,
        "config_files": [str(p) for p in config.files],
        "bundled_defaults": all(p.parent == bundled for p in config.files),
        "system_dir": str(system_dir()),
        "agent_files": {agent: str(agent_file(config.agent_dirs, agent)) for agent in AGENTS},
        "data_dir": str(config.home),
        "state": config.state_location,
        "backup_dir": str(config.backup_dir),
    }


def versions() -> dict[str, str | None]:
    """aishell's version and those of what it runs on (None: not installed)."""

    def of(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    found: dict[str, str | None] = {
        "aishell": of("aishell"),
        "python": platform.python_version(),
        "sqlalchemy": of("SQLAlchemy"),
        "psycopg": of("psycopg"),
        "libpq": None,
        "pymysql": of("PyMySQL"),
        "sqlite": sqlite3.sqlite_version,
        "apscheduler": of("APScheduler"),
    }
    try:
        import psycopg

        number = psycopg.pq.version()  # e.g. 150005 for 15.5
        found["libpq"] = f"{number // 10000}.{number % 100}"
    except ImportError:
        pass
    return found
