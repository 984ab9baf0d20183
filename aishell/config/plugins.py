"""What installed packages offer aishell through entry points, and what failed.

Two groups: `aishell.agents` (an agent, or its class) and `aishell.tools` (a folder of
tool YAML files: the folder's path, a package whose folder it is, or a function
returning the path). Each entry point is loaded on its own: one that raises is kept as
a `PluginFailure` naming the entry point and its package, told once on stderr and
listed by `aishell doctor`, and every other entry point and command goes on.

Light: importlib.metadata only, loaded by the commands that need plugins, never by
`--help`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

AGENTS_GROUP = "aishell.agents"
TOOLS_GROUP = "aishell.tools"
# The distribution aishell itself is installed as: its own agents are listed under it.
OWN_PACKAGE = "aishell"
# aishell's own agents, as its package declares them (pyproject.toml); read from here
# too, so that a checkout run from source, whose installed metadata may be older, has
# them all the same.
OWN_AGENTS = (
    ("backup", "aishell.agents.backup:BackupAgent"),
    ("log_cleanup", "aishell.agents.log_cleanup:LogCleanupAgent"),
    ("maintenance", "aishell.agents.maintenance:MaintenanceAgent"),
)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point (or a file it brought) that could not be used, and why."""

    group: str
    name: str
    package: str
    error: str
    # One tool file of the plugin's folder, refused alone: its other tools loaded.
    refused_file: bool = False

    def line(self) -> str:
        plugin = f"plugin '{self.name}' ({self.group}) of package {self.package}"
        if self.refused_file:
            return f"a tool file of {plugin} was refused; its other tools loaded: {self.error}"
        return f"{plugin} was skipped: {self.error}"


# Whether installed packages' entry points are looked for: off, aishell has its own
# agents and tools only (docs/cli.md is rendered so, whatever is installed).
_DISCOVERING = [True]


def discovering() -> bool:
    return _DISCOVERING[-1]


@contextmanager
def built_ins_only() -> Iterator[None]:
    """Within it, no other package's entry point is found: `offered` finds aishell's
    own, and the agents are aishell's own."""
    _DISCOVERING.append(False)
    try:
        yield
    finally:
        _DISCOVERING.pop()


def offered(group: str) -> list[tuple[EntryPoint, str]]:
    """The group's entry points in every installed package, each with its package's
    name, in a stable order (by package, then name); aishell's own alone within
    `built_ins_only`."""
    # Here, not at the top: importlib.metadata costs a listing more than the listing.
    from importlib.metadata import EntryPoint, entry_points

    if not discovering():
        own = OWN_AGENTS if group == AGENTS_GROUP else ()
        return [(EntryPoint(name, value, group), OWN_PACKAGE) for name, value in own]

    found = [
        (ep, ep.dist.name if ep.dist is not None else "(unknown)")
        for ep in entry_points(group=group)
    ]
    return sorted(found, key=lambda pair: (pair[1], pair[0].name))


def entry_point_stamp(group: str) -> str:
    """A digest of what installed packages declare for `group`, read from their files
    without importlib.metadata: each `entry_points.txt` on sys.path that names the group,
    with its folder's identity (a reinstall makes a new one). Any change to the group's
    entry points changes it (what the listings' cache is keyed by)."""
    hashed = hashlib.sha256()
    section = f"[{group}]".encode()
    for entry in sys.path:
        folder = entry or os.getcwd()
        try:
            names = sorted(os.listdir(folder))
        except OSError:  # a zip file on the path, or a folder since gone
            hashed.update(f"{folder}\0{_identity(folder)}\0".encode())
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            info = os.path.join(folder, name)
            try:
                with open(os.path.join(info, "entry_points.txt"), "rb") as file:
                    declared = file.read()
            except OSError:
                continue
            if section in declared:
                hashed.update(f"{info}\0{_identity(info)}\0".encode() + declared)
    return hashed.hexdigest()


def _identity(path: str) -> str:
    try:
        found = os.stat(path)
    except OSError:
        return "-"
    return f"{found.st_ino}:{found.st_mtime_ns}:{found.st_size}"


# What a plugin's own code may raise as its failure: any error, and a sys.exit() (which
# would otherwise end the command, with the plugin's exit status and nothing said). A
# KeyboardInterrupt is the person's, and still ends the command.
PLUGIN_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit)


# The top-level modules of the code packages bring (their entry points, the handlers
# their tool files name): the code guard/strays.py holds to the sessions the guard
# watches and forbids to leave a thread running.
PACKAGE_CODE: set[str] = set()


def note_package_code(module: str) -> None:
    """`module` (dotted) is a package's code, not aishell's."""
    top = module.split(".")[0]
    if top and top != OWN_PACKAGE:
        PACKAGE_CODE.add(top)


def load_entry(ep: EntryPoint, package: str) -> object | PluginFailure:
    """What the entry point names, or the failure that importing it raised."""
    note_package_code(ep.module)
    try:
        loaded: object = ep.load()
        return loaded
    # A plugin is anyone's code: whatever it raises is its own failure, not aishell's.
    except PLUGIN_FAILURES as exc:
        return failure(ep.group, ep.name, package, exc)


def failure(group: str, name: str, package: str, exc: BaseException | str) -> PluginFailure:
    if isinstance(exc, BaseException):
        first = (str(exc).strip().splitlines() or [""])[0]
        exc = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return PluginFailure(group, name, package, exc)


# Failures already told in this process: a long-lived scheduler loads the catalog for
# every job, and one warning a process is enough.
_TOLD: set[PluginFailure] = set()


def warn(failures: list[PluginFailure]) -> None:
    """Each failure as one warning line on stderr, once per process."""
    for each in failures:
        if each not in _TOLD:
            _TOLD.add(each)
            print(f"aishell: warning: {each.line()}", file=sys.stderr)


# What tool_folders found, by entry_point_stamp: a run asks for the folders several
# times (the catalog, where its files may not go, the model's prompt), and the
# entry points' listing costs tens of milliseconds each time; the stamp, one.
_FOLDERS_FOUND: dict[str, list[tuple[str, str, Path]]] = {}


def tool_folders() -> tuple[list[tuple[str, str, Path]], list[PluginFailure]]:
    """The tool folders of every installed package's `aishell.tools` entry points, as
    (name, package, folder), and the entry points that gave none. Found again whenever
    what packages declare for the group changed; a failure is never kept (the package
    it depends on may be installed meanwhile)."""
    if not discovering():
        return _tool_folders()
    stamp = entry_point_stamp(TOOLS_GROUP)
    known = _FOLDERS_FOUND.get(stamp)
    if known is not None:
        return list(known), []
    folders, failures = _tool_folders()
    if not failures:
        _FOLDERS_FOUND.clear()
        _FOLDERS_FOUND[stamp] = list(folders)
    return folders, failures


def _tool_folders() -> tuple[list[tuple[str, str, Path]], list[PluginFailure]]:
    folders: list[tuple[str, str, Path]] = []
    failures: list[PluginFailure] = []
    for ep, package in offered(TOOLS_GROUP):
        loaded = load_entry(ep, package)
        if isinstance(loaded, PluginFailure):
            failures.append(loaded)
            continue
        folder = _folder(ep, loaded)
        if isinstance(folder, str):
            failures.append(failure(TOOLS_GROUP, ep.name, package, folder))
        else:
            folders.append((ep.name, package, folder))
    return folders, failures


def _folder(ep: EntryPoint, loaded: object) -> Path | str:
    """The folder an entry point names, or why it names none."""
    try:
        if isinstance(loaded, ModuleType):
            value: object = Path(loaded.__file__ or "").parent
        elif callable(loaded):
            value = loaded()
        else:
            value = loaded
    except PLUGIN_FAILURES as exc:  # the plugin's function failed
        return failure(TOOLS_GROUP, ep.name, "", exc).error
    if not isinstance(value, str | os.PathLike):
        return f"names {type(value).__name__}, not a folder of tool files"
    folder = Path(value)
    if not folder.is_absolute():  # relative to the module that names it
        module = importlib.import_module(ep.module)
        folder = Path(module.__file__ or "").parent / folder
    if not folder.is_dir():
        return f"{folder} is not a folder"
    return folder
