"""What `aishell init` and `aishell doctor` print: plain lines, never wrapped or styled,
so that a long fix stays one line to copy, and a script can grep it."""

from __future__ import annotations

from typing import Any

import click

from aishell.terminal import printable
from aishell.units import binary_size


def _line(text: str) -> None:
    click.echo(printable(text))


def size(number: int | None) -> str:
    return binary_size(number, unknown="unknown")


def scheduler_units(shipped: dict[str, Any]) -> None:
    """Each shipped file under a comment line naming where it is, as cp would take it."""
    for name, body in shipped["files"].items():
        _line(f"# {shipped['folder']}/{name}")
        for line in body.rstrip("\n").splitlines():
            _line(line)  # line by line: a line of its own is printable as it is
        _line("")


def init_result(result: dict[str, Any]) -> None:
    _line(f"The aishell home ({result['chosen_by']}):")
    for path in result["written"]:
        _line(f"  wrote {path}")
    for path in result["kept"]:
        _line(f"  kept  {path} (it was there)")
    _line(f"  state store {result['state']}")
    _line(f"  data folder {result['data_dir']} (the demo database, backups)")
    config = f"{result['config_dir']}/aishell.yaml"
    _line(
        f"Next: add your targets to {config}; `aishell doctor` checks them, "
        "`aishell demo` makes the demo database."
    )
    if result["overridden_by"]:
        _line(
            f"Note: AISHELL_CONFIG names {result['overridden_by']}: that file is used "
            "instead of this one while it is set."
        )


def doctor_report(result: dict[str, Any]) -> None:
    """The home, the versions, each target, the leftovers, then the problems and fixes."""
    versions = result["versions"]
    shown = [
        f"{name} {versions[key]}"
        for key, name in (
            ("python", "Python"),
            ("sqlalchemy", "SQLAlchemy"),
            ("psycopg", "psycopg"),
            ("libpq", "libpq"),
            ("pymysql", "PyMySQL"),
            ("sqlite", "SQLite"),
            ("apscheduler", "APScheduler"),
        )
        if versions.get(key)
    ]
    _line(f"aishell {versions.get('aishell') or '(not installed)'}: {', '.join(shown)}")
    home = result["home"]
    _line(f"home ({home['chosen_by']}):")
    files = home["config_files"]
    default = " (the bundled defaults: `aishell init` writes your own)"
    _line(f"  config   {', then '.join(files)}{default if home.get('bundled_defaults') else ''}")
    if "agent_files" in home:
        _line(f"  agents   {', '.join(sorted(set(map(_folder, home['agent_files'].values()))))}")
        _line(f"  state    {home['state']}")
        _line(f"  data     {home['data_dir']}")
        _line(f"  backups  {home['backup_dir']}")
    if result.get("agents"):
        by_package: dict[str, list[str]] = {}
        for name, package in sorted(result["agents"].items()):
            by_package.setdefault(package, []).append(name)
        listed = "; ".join(f"{', '.join(n)} ({p})" for p, n in sorted(by_package.items()))
        _line(f"agents: {listed}")
    for joining in result.get("joining_plans") or []:
        _line(f"  {joining}")
    for target in result["targets"]:
        _target(target)
    _leftovers(result["leftovers"])
    problems = result["problems"]
    if not problems:
        _line("No problems found.")
        return
    _line(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}:")
    for problem in problems:
        where = f"{problem['target']}: " if problem["target"] else ""
        _line(f"  {where}{problem['problem']}")
        _line(f"    fix: {problem['fix']}")


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0]


def _target(target: dict[str, Any]) -> None:
    dialect = f" ({target['dialect']})" if target.get("dialect") else ""
    if not target["reachable"]:
        _line(f"target {target['target']}{dialect}: not reachable")
        return
    _line(f"target {target['target']}{dialect}: {target['server_version']}")
    login = target.get("login")
    if login:
        _line(
            f"  login: {login['user']}@{login['host'] or 'localhost'}"
            # No port given: the client's default, which is said so rather than left blank.
            + (f":{login['port']}" if login["port"] else " (default port)")
            + ", "
            f"password from {login['password_from']}"
            + (f" (service {login['service']})" if login.get("service") else "")
        )
    logged_in = {c["program"]: c["logged_in"] for c in target.get("client_logins", [])}
    for program in target["programs"]:
        found = f"{program['version']} ({program['path']})" if program["path"] else "not on PATH"
        if program["name"] in logged_in:
            found += ", logs in" if logged_in[program["name"]] else ", CANNOT log in"
        _line(f"  {program['name']}: {found}")
    backups = target["backups"]
    _line(
        f"  backups to {backups['folder']}: {size(backups['free_bytes'])} free, "
        f"the database {size(backups['database_bytes'])}"
    )
    needs = target["needs"]
    missing = [n for n in needs if n["missing"] and not n.get("optional")]
    optional = [n["privilege"] for n in needs if n["missing"] and n.get("optional")]
    _line(
        f"  privileges: {len(missing)} of {len(needs)} the agents need missing"
        if missing
        else "  privileges: what the agents need is there"
        + (f" (not the optional {'; '.join(optional)})" if optional else "")
    )
    for warning in target["warnings"]:
        _line(f"  warning: {warning}")


def _leftovers(leftovers: list[dict[str, Any]]) -> None:
    for entry in leftovers:
        _line(f"left by run {entry['run_id']}: {entry['kind']} {entry['name']}")
    if leftovers:
        _line("Remove it with `aishell doctor --clean`.")
    else:
        _line("Nothing left behind by killed runs.")
