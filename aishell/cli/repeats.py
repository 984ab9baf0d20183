"""An option given twice is refused, not settled by the last one: click keeps the last
value of an option that takes one (`--tables orders --tables users` runs on users
alone, `--retention-days 90 ... --retention-days 1` keeps one day), and a flag's two
sides given together (`--update-stats --no-update-stats`) likewise. A flag given twice
says one thing, and stays allowed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

_CHECKED = "_aishell_repeats_refused"


def refuse_repeats(command: click.Command) -> click.Command:
    """The command, refusing in one usage error an option given more than once."""
    if isinstance(command, click.Group) or getattr(command, _CHECKED, False):
        return command
    parse_args = command.parse_args

    def parse_once(ctx: click.Context, args: list[str]) -> list[str]:
        _check(command, list(args))
        return parse_args(ctx, args)

    command.parse_args = parse_once  # type: ignore[method-assign]
    setattr(command, _CHECKED, True)
    return command


def _check(command: click.Command, args: list[str]) -> None:
    takes_value, param_of = _options(command)
    seen: dict[str, str] = {}
    for given in _given(args, takes_value):
        name = param_of.get(given)
        if name is None:
            continue  # not an option of this command: click names it
        earlier = seen.get(name)
        if earlier is not None and (earlier != given or takes_value[given]):
            both = given if earlier == given else f"{earlier} and {given}"
            raise click.UsageError(
                f"{both} given more than once; give each option once"
                + (" (a list of tables is comma-separated)" if name == "tables" else "")
            )
        seen[name] = given


def _options(command: click.Command) -> tuple[dict[str, bool], dict[str, str]]:
    """Each option string the command takes: whether a value follows it, and its param's
    name. A multiple option (given again by design) and a count are left out."""
    takes_value: dict[str, bool] = {}
    param_of: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        value = not (param.is_flag or param.count)
        for opt in [*param.opts, *param.secondary_opts]:
            takes_value[opt] = value
            if not param.multiple and not param.count:
                param_of[opt] = param.name
    return takes_value, param_of


def _given(args: list[str], takes_value: dict[str, Any]) -> Iterator[str]:
    """The option strings in `args`, skipping each one's value; none after `--`."""
    words = iter(args)
    for word in words:
        if word == "--":
            return
        if not word.startswith("-") or word == "-":
            continue
        opt, equals, _value = word.partition("=")
        if opt not in takes_value:
            continue
        yield opt
        if takes_value[opt] and not equals:
            next(words, None)
