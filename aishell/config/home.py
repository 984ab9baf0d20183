"""Where aishell keeps its config and state, found the same way from any folder.

The home is `--home DIR`, else AISHELL_HOME, else the user's own folders (through
platformdirs: on Linux ~/.config/aishell, ~/.local/share/aishell, ~/.local/state/aishell).
The current folder never counts: a project's config is used only when named (--config,
AISHELL_CONFIG).

Config files are read in layers: the system-wide /etc/aishell/aishell.yaml first, then the
user's (the home's, or the named one). The user's top-level keys replace the system's,
except `targets`, which are merged by name (a user's target replaces the system's target
of that name whole). Without either, the bundled default is used. An agent's file is
taken whole from the first folder that has it: the user's agents/, /etc/aishell/agents/,
then the bundled defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aishell.config.resources import bundled_config_dir
from aishell.errors import ConfigError, UsageError
from aishell.terminal import printable

APP = "aishell"
CONFIG_NAME = "aishell.yaml"
# The system-wide layer; AISHELL_SYSTEM_DIR names another (packagers, tests).
SYSTEM_DIR = Path("/etc/aishell")
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Home:
    """The folders of one home, and what chose them."""

    config_dir: Path  # aishell.yaml and agents/
    data_dir: Path  # relative paths in the config: the demo database, backups, the plan key
    state_dir: Path  # a relative state.url: state.db
    chosen_by: str  # "--home", "AISHELL_HOME" or "user folders"

    @property
    def config_file(self) -> Path:
        return self.config_dir / CONFIG_NAME


def find_home(home: str | os.PathLike[str] | None = None) -> Home:
    """The home: the given folder, AISHELL_HOME, or the user's platform folders."""
    given, chosen_by = home, "--home"
    if given is not None and not str(given).strip():
        raise UsageError("The home's folder given (--home) is empty; give a folder or leave it out")
    if given is None:
        given, chosen_by = os.environ.get("AISHELL_HOME"), "AISHELL_HOME"
    if given:
        root = Path(given).expanduser().resolve()
        return _made_of_folders(Home(root / "config", root, root, chosen_by))
    import platformdirs  # late: only a home without AISHELL_HOME needs it

    return _made_of_folders(
        Home(
            Path(platformdirs.user_config_dir(APP, appauthor=False)),
            Path(platformdirs.user_data_dir(APP, appauthor=False)),
            Path(platformdirs.user_state_dir(APP, appauthor=False)),
            "user folders",
        )
    )


def _made_of_folders(home: Home) -> Home:
    """The home, once each of its folders is a folder or can be made one: a file where
    one of them is, or on the way to it, is one line here rather than an error from
    whichever command first makes a file there."""
    for folder in dict.fromkeys((home.data_dir, home.state_dir, home.config_dir)):
        there = folder
        try:
            while not there.exists() and there != there.parent:
                there = there.parent
            a_file = not there.is_dir()
        except OSError:  # not ours to look into: making the folder says so (init)
            continue
        if a_file:
            raise UsageError(
                f"The home's folder {folder} cannot be made: {there} is a file, not a "
                "folder; choose another home with --home or AISHELL_HOME"
            )
    return home


def named_config(config_path: str | os.PathLike[str] | None) -> str | os.PathLike[str] | None:
    """The config file named instead of the home's own: --config, else AISHELL_CONFIG."""
    if config_path is None:
        return os.environ.get("AISHELL_CONFIG") or None  # set but empty: as unset
    if not str(config_path).strip():
        raise UsageError("The config file given (--config) is empty; give a file or leave it out")
    return config_path


def system_dir() -> Path:
    return Path(os.environ.get("AISHELL_SYSTEM_DIR") or SYSTEM_DIR)


@dataclass(frozen=True)
class ConfigFiles:
    """The config files in use, in the order they are read (later over earlier), and the
    folders an agent's file is looked for in, first match wins."""

    layers: tuple[Path, ...]
    agent_dirs: tuple[Path, ...]

    @property
    def main(self) -> Path:
        """The file messages name: the user's (or the named one), else the system's, else
        the bundled default."""
        return self.layers[-1]


def config_files(home: Home, named: str | os.PathLike[str] | None = None) -> ConfigFiles:
    """Which files configure this home: /etc/aishell's, then the named file or the
    home's own; the bundled default only when neither exists."""
    system = system_dir()
    own: Path | None
    if named:
        given = Path(named).expanduser()
        if not given.is_file():
            what = "is not a file" if given.exists() else "does not exist"
            raise ConfigError(
                f"Config file {given} {what}; give the path of one (--config or "
                "AISHELL_CONFIG), or leave it out to use the home's own"
            )
        own, own_agents = given, given.parent / "agents"
    else:
        own = home.config_file if home.config_file.is_file() else None
        own_agents = home.config_dir / "agents"
    layers = tuple(p for p in (system / CONFIG_NAME, own) if p is not None and p.is_file())
    bundled = bundled_config_dir()
    return ConfigFiles(
        layers=layers or (bundled / CONFIG_NAME,),
        agent_dirs=(own_agents, system / "agents", bundled / "agents"),
    )


Origin = Callable[[Sequence[str]], Path]


def read_layers(
    layers: Sequence[Path], sources: Mapping[Path, bytes] | None = None
) -> tuple[dict[str, Any], Origin]:
    """The layers merged (see the module's doc), and where a key came from: the file an
    error about it names. `sources`: the files' bytes, already read (and hashed: the
    listings' cache, config/cache.py), else each file is read here."""
    # Here, not at the top: finding the home and its files needs no YAML parser.
    from aishell.config.files import read_yaml

    merged: dict[str, Any] = {}
    keys: dict[str, Path] = {}
    targets: dict[str, Path] = {}
    for path in layers:
        # A user's file over the system's may set nothing yet (init writes it commented).
        raw = None if sources is None else sources.get(path)
        data = read_yaml(path, empty_ok=len(layers) > 1, raw=raw)
        for key, value in data.items():
            if key == "targets" and isinstance(value, dict):
                earlier = merged.get("targets")
                merged["targets"] = {**(earlier if isinstance(earlier, dict) else {}), **value}
                targets.update(dict.fromkeys(map(str, value), path))
            else:
                merged[key] = value
            keys[key] = path

    def origin(location: Sequence[str]) -> Path:
        if len(location) > 1 and location[0] == "targets" and location[1] in targets:
            return targets[location[1]]
        if location and location[0] in keys:
            return keys[location[0]]
        return layers[-1]

    return merged, origin


def find_agent_file(agent_dirs: Sequence[Path], agent: str) -> Path | None:
    """An agent's config file: the first of the folders that has it (None: none has)."""
    # The name (a plugin's entry point) becomes the file's name: none that leads out.
    if not AGENT_NAME.fullmatch(agent):
        raise ConfigError(
            f"Agent name {printable(repr(agent[:80]))} may hold letters, digits, '_', '.' "
            "and '-' only, and starts with a letter or digit"
        )
    for folder in agent_dirs:
        path = folder / f"{agent}.yaml"
        if path.is_file():
            return path
    return None


def agent_file(agent_dirs: Sequence[Path], agent: str) -> Path:
    """An agent's config file: the first of the folders that has it."""
    path = find_agent_file(agent_dirs, agent)
    if path is not None:
        return path
    looked = ", ".join(str(folder / f"{agent}.yaml") for folder in agent_dirs)
    found = sorted({p.stem for folder in agent_dirs for p in folder.glob("*.yaml")})
    have = f"agents with a config file are: {', '.join(found)}" if found else "none has one"
    raise ConfigError(
        f"No agent config for '{agent}' (looked for {looked}); {have}: give one of those, "
        f"or write {agent_dirs[0] / f'{agent}.yaml'} (`aishell agents show AGENT` shows an "
        "agent's keys)"
    )
