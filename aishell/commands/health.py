"""The health of a home: Prometheus metrics of its runs, backups and schedules, and the
doctor: the files, versions and targets of the home, and what killed runs left behind."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any

from aishell.commands.agents import list_agents, plugin_problems
from aishell.commands.home import AGENTS, home_report, versions
from aishell.commands.readiness import target_readiness
from aishell.commands.schedules import added_again, agent_missing, list_schedules, target_missing
from aishell.commands.tools import load_catalog
from aishell.config.agentfiles import MisnamedAgentFile
from aishell.config.dburl import url_secrets
from aishell.config.home import config_files, find_home
from aishell.config.models import Config
from aishell.config.resources import bundled_catalog_dir
from aishell.config.selection import select_targets
from aishell.config.view import view_of
from aishell.errors import AishellError, BrokerUnreachable, ConfigError, UsageError
from aishell.files import own_mode, too_open
from aishell.scheduling import metrics as prometheus
from aishell.scratch import leftovers as scratch
from aishell.state.identity import STORE_COPIES
from aishell.state.signing import key_path
from aishell.state.store import StateStore, checking_store
from aishell.targets.engines import Target, open_target
from aishell.view.status import fleet_targets


def metrics(config: Config, textfile: Path | None = None) -> str:
    """Prometheus text of the last run per target and agent, and per target its waiting
    approvals, newest restore-proven backup and schedules."""
    if textfile is not None and str(textfile) == "-":
        # Whoever types `-` means standard output, which the metrics go to without it.
        raise UsageError(
            "--textfile -: the metrics go to standard output without --textfile; give "
            "node_exporter's textfile a file's name (--textfile aishell.prom)"
        )
    upcoming = list_schedules(config)
    purging = {
        tool.name: tool.rows_purged
        for tool in load_catalog(config).tools.values()
        if tool.rows_purged is not None
    }
    for schedule in upcoming:  # the target a schedule that names none runs on
        schedule["target"] = schedule["target"] or config.main.default_target
    # With the home's key: a row not signed as it is vouches for no backup's age.
    with checking_store(config) as store:
        gauges = prometheus.collect(config, store, upcoming, purging, fleet_targets(config))
    if textfile is not None:
        prometheus.write_textfile(gauges, textfile)
    return prometheus.exposition(gauges)


def doctor(
    config: Config,
    clean: bool = False,
    targets: Sequence[str] = (),
    selector: str | None = None,
) -> dict[str, Any]:
    """The home's files, state store and versions; per target (all, those named, or
    those the `selector` picks: config/selection.py) its readiness; and what killed runs
    left behind. `problems` lists what is wrong, each with its fix. With clean, only
    remove what killed runs left (see clean_leftovers)."""
    if clean:
        return clean_leftovers(config)
    if targets and selector is not None:
        raise UsageError("--target and --targets exclude each other; give one")
    names = (
        select_targets(config, selector)
        if selector is not None
        else list(targets) or sorted(config.main.targets)
    )
    for name in names:
        config.target(name)  # an unknown name is an error, before anything is checked
    problems = _agent_file_problems(config)
    try:
        # With the home's key: a schedule serve refuses, or a backup restore, validation
        # and retention refuse, is one of the home's problems.
        with checking_store(config) as store:
            leftovers = scratch.leftovers(store)
            problems += _schedule_problems(store, config)
            problems += _backup_problems(store)
    except AishellError as exc:
        leftovers = []
        problems.append(
            _home_problem(
                str(exc),
                f"correct state.url in {config.path}, or the permissions of the store's file "
                "and folder",
            )
        )
    # Targets are checked side by side: one that does not answer costs its connect
    # timeout once, not once per target after it.
    with ThreadPoolExecutor(max_workers=min(8, len(names) or 1) + 1) as pool:
        broker = pool.submit(broker_problems, config)
        checked = list(pool.map(lambda name: target_readiness(config, name), names))
    for target in checked:
        problems += target["problems"]
    problems += broker.result()
    problems += _files_and_plugins(config)
    return {
        "clean": False,
        "home": home_report(config),
        "versions": versions(),
        # Every agent `aishell run` has, by the package it came from (plugins' too).
        "agents": {a["name"]: a["package"] for a in list_agents()["agents"]},
        "joining_plans": _joining_plans(config),
        "targets": checked,
        "leftovers": leftovers,
        "problems": problems,
    }


def _agent_file_problems(config: Config) -> list[dict[str, Any]]:
    """Each agent's file that does not load, each problem once: a file of the agents'
    folders that no agent could read is refused to every agent that loads."""
    problems: list[dict[str, Any]] = []
    for agent in AGENTS:
        try:
            config.agent(agent)
        except ConfigError as exc:
            fix = "correct the key it names in that file"
            if isinstance(exc, MisnamedAgentFile):
                fix = "rename the file as it says"
            problem = _home_problem(str(exc), fix)
            problems += [problem] if problem not in problems else []
    return problems


def _joining_plans(config: Config) -> list[str]:
    """The site's tools that join a built-in agent's plans, in words: a change to nightly
    maintenance is never silent (a catalog that does not load is the problem every
    other command names)."""
    try:
        return load_catalog(config).joining_plans(bundled_catalog_dir())
    except AishellError:
        return []


def broker_problems(config: Config) -> list[dict[str, Any]]:
    """Where the config has a `fleet:` block, that its broker answers (within the fleet's
    timeouts), as the problem `fleet run` would meet."""
    if "fleet" not in config.main.model_fields_set:
        return []
    # Late: Celery and kombu load only for a home with a fleet.
    from aishell.fleet.sending import broker

    try:
        with broker(config, unanswered="fleet jobs cannot be sent or run"):
            pass
    except (BrokerUnreachable, ConfigError) as exc:
        fix = f"start the broker, or correct fleet.broker_url and password_env in {config.path}"
        return [_home_problem(str(exc), fix)]
    return []


# At most this many files or folders are named one by one; the rest are counted.
OPEN_NAMED = 20


def _files_and_plugins(config: Config) -> list[dict[str, Any]]:
    """The home's files and backups more open than they may be; plugins that failed."""
    return [
        *open_backups(config),
        *open_home_files(config),
        *open_passwords(config),
        *plugin_problems(config),
    ]


def open_home_files(config: Config) -> list[dict[str, Any]]:
    """The home's own files more open than they may be: the home or its config folder
    writable by others (who could put a config or a plan-signing key of their own in
    place), the state store's file or the plan-signing key readable by them (the runs'
    records; a key that signs plans `apply` takes)."""
    state = view_of(config).state_file()
    problems = [*_open_folders(config, state)]
    files = [(key_path(config.home), "sign a plan `aishell apply` takes")]
    if state is not None:
        # Its journals, and its copies (`doctor --backup-state`, an upgrade's), hold what
        # it holds.
        side = [state.with_name(state.name + s) for s in ("-wal", "-shm", "-journal")]
        copies = [state.parent.glob(f"{glob.escape(state.name)}{s}*") for s in STORE_COPIES]
        for each in (state, *side, *sorted(chain.from_iterable(copies))):
            files.append((each, "read the runs' records"))
    for path, harm in files:
        mode = own_mode(path)
        if mode is not None and mode & 0o077:
            said = f"{path} is mode {mode:04o}: another user may {harm}"
            problems.append(_home_problem(said, f"chmod 600 {path}"))
    return problems


def _open_folders(config: Config, state: Path | None) -> list[dict[str, Any]]:
    """The home and its config folder writable by its group or others; and, where they
    are folders of their own (the user's folders, a --config file's), the config's, the
    agents' and the state store's writable by others, unless sticky (/tmp), where no one
    may replace a file of another's."""
    found = []
    home_holds = "the config, the plan-signing key"
    folders = {config.home: (home_holds, 0o022), config.home / "config": (home_holds, 0o022)}
    own_agents = config.agent_dirs[0]
    apart = [(own_agents.parent, "the config"), (own_agents, "the agents' files")]
    if state is not None:
        apart.append((state.parent, "the state store"))
    for folder, holds in apart:
        folders.setdefault(folder, (holds, 0o002))
    for folder, (holds, bits) in folders.items():
        mode = own_mode(folder)
        if mode is None or not mode & bits or (bits == 0o002 and mode & stat.S_ISVTX):
            continue
        said = f"{folder} is mode {mode:04o}: others may replace what it holds ({holds})"
        found.append(_home_problem(said, f"chmod go-w {folder}"))
    return found


def open_passwords(config: Config) -> list[dict[str, Any]]:
    """A config file others may read that holds a password in a database URL (a target's
    or the state store's, written by hand: `targets add` never writes one): whoever may
    read the file has the login. The file that holds it is the one its text is in."""
    secrets: dict[str, list[str]] = {}
    for key, url in [
        *((f"targets.{n}.url", t.url) for n, t in config.main.targets.items()),
        ("state.url", config.main.state.url),
    ]:
        found = url_secrets(url)
        if found:
            secrets[key] = found
    problems = []
    for path in dict.fromkeys(config.files) if secrets else ():
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        keys = [k for k, values in secrets.items() if any(v in text for v in values)]
        if mode & 0o044 and keys:
            said = f"{path} is mode {mode:04o} and holds the password of {', '.join(keys)}"
            fix = (
                f"chmod 600 {path}, and move the password to password_env, ~/.pgpass, the "
                "service file or ~/.my.cnf"
            )
            problems.append(_home_problem(f"{said}: another user may read it", fix))
    return problems


def open_backups(config: Config) -> list[dict[str, Any]]:
    """A backup file or folder more open than files.group_readable allows, each with
    the chmod that closes it."""
    if not config.backup_dir.is_dir():
        return []
    found = list(too_open(config.backup_dir))
    group = config.main.files.group_readable
    allowed = "its owner's, its group may read" if group else "its owner's alone"
    problems = [
        _home_problem(
            f"{each.path}{f' (a link to {each.through})' if each.through else ''} is mode "
            f"{each.mode:04o}: more open than backups may be "
            f"({allowed}, files.group_readable in {config.path})",
            each.fix,
        )
        for each in found[:OPEN_NAMED]
    ]
    if len(found) > OPEN_NAMED:
        problems.append(
            _home_problem(
                f"{len(found) - OPEN_NAMED} more files or folders under {config.backup_dir} "
                "are more open than backups may be",
                f"chmod -R {'g-w,o-rwx' if group else 'go-rwx'} {config.backup_dir}",
            )
        )
    return problems


def backup_state(config: Config) -> dict[str, Any]:
    """Write a consistent copy of the SQLite state store beside it (SQLite's backup API,
    mode 0600); where it is. A store that was lost or emptied is refused, not copied."""
    with StateStore(config.state_url) as store:
        copy = store.backup()
    return {"backup": str(copy), "store": str(copy.with_name(copy.name.split(".backup-")[0]))}


def doctor_without_config(
    home: str | os.PathLike[str] | None, config_path: str | None, error: ConfigError
) -> dict[str, Any]:
    """What doctor can tell when the config does not load: where it looked, and why."""
    where = find_home(home)
    named = config_path or os.environ.get("AISHELL_CONFIG")
    try:
        files = [str(p) for p in config_files(where, named).layers]
    except ConfigError:
        files = [str(named)]
    fix = (
        "correct the key it names in that file (`aishell init --force` writes a fresh one "
        "and keeps the old one as .bak)"
    )
    return {
        "clean": False,
        "home": {"chosen_by": where.chosen_by, "config_files": files},
        "versions": versions(),
        "targets": [],
        "leftovers": [],
        "problems": [_home_problem(str(error), fix)],
    }


def _schedule_problems(store: StateStore, config: Config) -> list[dict[str, Any]]:
    """Each schedule whose agent is not installed, or whose target is not configured,
    or whose row is not what the home's key signed (serve runs none of its triggers),
    as a problem of the home."""
    problems = []
    keyless = not os.path.lexists(key_path(config.home))
    for schedule in store.list_schedules():
        remove = f"remove the schedule (aishell schedule remove {schedule['name']})"
        refused = schedule["seal_error"]
        if refused is None and keyless:
            # serve makes a new key, which signed none of them.
            refused = (
                f"state.db: schedule {schedule['name']} was signed by a key this home no "
                f"longer has ({key_path(config.home)} is missing)"
            )
        if refused is not None:
            problems.append(
                _home_problem(f"{refused}: serve runs none of its triggers", added_again(schedule))
            )
        missing = agent_missing(schedule)
        if missing is not None:
            fix = f"install the package that provides '{schedule['agent']}' again, or {remove}"
            problems.append(_home_problem(missing, fix))
        gone = target_missing(schedule, config)
        if gone is not None:
            fix = f"add target '{schedule['target']}' to the config again, or {remove}"
            problems.append(_home_problem(gone, fix))
    return problems


def _backup_problems(store: StateStore) -> list[dict[str, Any]]:
    """Each catalogued backup whose row is not what the home's key signed, as a problem
    of the home: restore, validation and retention refuse it."""
    return [
        _home_problem(
            f"{backup['seal_error']}: restore, validation and retention refuse it",
            _backup_fix(backup),
        )
        for backup in store.list_backups()
        if backup["seal_error"]
    ]


def _backup_fix(backup: dict[str, Any]) -> str:
    """What to do about a refused backup row: adopt one recorded unsigned (its file read
    again and checked against it), or take a new backup."""
    fresh = f"take a new backup of {backup['target']} (`aishell run backup --type full`)"
    if backup.get("adoptable"):
        return (
            f"`aishell backups adopt {backup['id']}` reads its file again and, if it is what "
            f"the row records, signs the row once you confirm; or {fresh}"
        )
    return (
        f"{fresh}; backup {backup['id']}'s file is left alone: delete it by hand once no one "
        "needs it"
    )


def _home_problem(problem: str, fix: str) -> dict[str, Any]:
    return {"target": None, "problem": problem, "fix": fix}


def clean_leftovers(config: Config) -> dict[str, Any]:
    """Remove what runs killed before they could clean up left behind (scratch files,
    scratch databases, child processes). Only this host's dead processes count: a live
    run's scratch, or another host's, is never touched."""
    opened: dict[str, Target] = {}

    def engine_for(name: str) -> Any:
        if name not in opened:
            try:
                opened[name] = open_target(config, name)
            except AishellError:
                return None
        return opened[name].engine

    with StateStore(config.state_url) as store:
        try:
            return {"clean": True, **scratch.clean(store, engine_for)}
        finally:
            for handle in opened.values():
                handle.close()
