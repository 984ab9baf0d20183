"""What every command shares: the top-level options (State), and the group class that
turns errors into one line and an exit code."""

from __future__ import annotations

import importlib
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from aishell.cli.repeats import refuse_repeats
from aishell.errors import EXIT_DENIED, EXIT_FAILED, AishellError
from aishell.terminal import printable

if TYPE_CHECKING:
    from click.types import ParamTypeInfoDict

    from aishell.config.models import Config
    from aishell.config.view import ConfigView


UNDECODED = "the value holds bytes that are not text in the locale's encoding"


class NonEmpty(click.ParamType[Any]):
    """The values of another type less the empty one: `--target "$T"` with T unset is
    refused, never taken for the option left out (which means the default). The types it
    wraps (text, a path) take one value each, as it does."""

    def __init__(self, inner: click.ParamType[Any], empty_ok: bool = False) -> None:
        self.inner = inner
        self.name = inner.name
        self.empty_ok = empty_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        if isinstance(value, str) and not value.strip() and not self.empty_ok:
            self.fail("the value is empty" if not value else "the value is only spaces", param, ctx)
        if isinstance(value, str) and not isinstance(self.inner, click.Path) and _undecoded(value):
            # Bytes the locale could not decode (Python keeps them as surrogates): no
            # name, id or text aishell stores or sends can hold them (a path can).
            self.fail(UNDECODED, param, ctx)
        return self.inner.convert(value, param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str | None:
        return self.inner.get_metavar(param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
        return self.inner.shell_complete(ctx, param, incomplete)

    def to_info_dict(self) -> ParamTypeInfoDict:
        return self.inner.to_info_dict()


def refuse_empty(command: click.Command) -> click.Command:
    """The command with every text or path value it takes refused when empty, but where
    its own default is the empty string (a description: none); and every text value
    refused when it holds bytes its locale could not decode."""
    for param in command.params:
        if isinstance(param.type, click.types.StringParamType | click.Path):
            param.type = NonEmpty(param.type, empty_ok=param.default == "")
    return command


def _undecoded(value: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in value)


class AishellGroup(click.Group):
    """Turns domain errors into one line and an exit code; tracebacks only with --debug.
    With --json the error is one JSON object on stdout instead: {"error": {"code",
    "message", "exit_code"}}, the code a stable name of the kind of error."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(refuse_repeats(refuse_empty(cmd)), name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = super().get_command(ctx, cmd_name)
        return None if found is None else refuse_repeats(refuse_empty(found))

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        words = list(args)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise  # the group's help, as --help shows it
        except click.ClickException as exc:
            # An error in the group's own options (`aishell --bogus`), before any
            # command has read --json: one line, or the error object.
            _say(asks_json(words), "usage_error", printable(exc.format_message()), exc.exit_code)
            raise click.exceptions.Exit(exc.exit_code) from None

    def invoke(self, ctx: click.Context) -> Any:
        if asks_json(ctx.args):
            # Also for an error in parsing the options, before --json itself is read.
            ctx.meta["aishell.json"] = True

        taken: list[int] = []

        def interrupted(signum: int, _frame: Any) -> None:
            # Outside a run's step (which has its own stop): a statement waiting on a
            # server is dropped at once, not cancelled (psycopg's way, ten seconds on a
            # server that stopped answering). Only once the targets' module is loaded.
            taken.append(signum)
            limits = sys.modules.get("aishell.targets.limits")
            if limits is not None:
                limits.drop_waiting()
            raise KeyboardInterrupt

        # SIGTERM as SIGINT: a command stopped before its run began (while it plans,
        # say) ends in one line and exit 4, as a run stopped by either does, rather
        # than silently by the signal's default.
        main = threading.current_thread() is threading.main_thread()
        previous = (
            {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
            if main
            else {}
        )
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            by = signal.Signals(taken[-1]).name if taken else "SIGINT"
            _report(ctx, "interrupted", f"interrupted by {by}", EXIT_DENIED)
        except AishellError as exc:
            _debug(ctx)
            _report(ctx, error_code(exc), printable(exc), exc.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise  # a group given no command shows its help
        except click.ClickException as exc:
            # One line, not click's usage and hint lines: `--help` has them.
            _report(ctx, "usage_error", printable(exc.format_message()), exc.exit_code)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a defect: still one line, the traceback on request
            _debug(ctx)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"internal error ({type(exc).__name__}: {printable(first)})"
            debug = ctx.find_root().params.get("debug")
            hint = "; the traceback is above" if debug else "; run with --debug for the traceback"
            _report(ctx, "internal_error", message, EXIT_FAILED, hint)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class JobGroup(AishellGroup):
    """A group of job commands (`run`, `plan`) that also takes an agent with no command
    of its own, as the command `declared` makes from the agent's declaration; its help
    and the shell's completion list every agent by name, loading none. A command is
    named as its agent is (`log_cleanup`, as `aishell agents list` shows it); `-` for
    `_` names the same command (`log-cleanup`), and the name shown is the command's own."""

    declared: Callable[[str], click.Command] | None = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._agents_without_command(ctx)])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The group's own commands with their help, then every other agent by name:
        their help is their spec's, which loading them to show would cost every `--help`."""
        width = formatter.width - 6 - max(len(n) for n in self.list_commands(ctx))
        rows = [
            (name, command.get_short_help_str(width))
            for name, command in sorted(self.commands.items())
            if not command.hidden
        ]
        rows += [
            (name, f"The {name} agent's job (its options: {ctx.command_path} {name} --help).")
            for name in self._agents_without_command(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _agents_without_command(self, ctx: click.Context) -> list[str]:
        """The agents installed packages offer (and this process registered), by name,
        none loaded, less those with a command of their own here."""
        if self.declared is None:
            return []
        from aishell.config.plugins import AGENTS_GROUP, offered

        names = {ep.name for ep, _ in offered(AGENTS_GROUP)}
        if "aishell.agents.available" in sys.modules:  # loaded: it may hold registered ones
            from aishell.agents.available import agent_names

            names.update(agent_names())
        spelled = {name.replace("-", "_") for name in super().list_commands(ctx)}
        return sorted(names - spelled)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name.startswith("-"):
            return None
        for spelled in (cmd_name, cmd_name.replace("-", "_"), cmd_name.replace("_", "-")):
            found = super().get_command(ctx, spelled)
            if found is not None:
                return found
        if self.declared is None:
            return None
        return refuse_empty(self.declared(cmd_name.replace("-", "_")))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        # Usage lines and errors name the command as its help does, however it was typed.
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest


class Subcommands(MutableMapping[str, click.Command]):
    """A group's commands by name, each imported from the module `where` names
    ("package.module:attribute") when it is first looked up: running one imports its own
    module alone, listing the names imports none."""

    def __init__(self, where: Mapping[str, str]) -> None:
        self._where = dict(where)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")  # KeyError: no such
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._where[name]} is not a click command")
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command
        self._where.pop(name, None)

    def __delitem__(self, name: str) -> None:
        if name not in self._loaded and name not in self._where:
            raise KeyError(name)
        self._loaded.pop(name, None)
        self._where.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._where, *self._loaded}))

    def __len__(self) -> int:
        return len({*self._where, *self._loaded})


def error_code(exc: AishellError) -> str:
    """The kind of error, as scripts match it: TargetLocked is target_locked."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _debug(ctx: click.Context) -> None:
    if ctx.find_root().params.get("debug"):
        traceback.print_exc()


def asks_json(args: Sequence[str]) -> bool:
    """Whether --json is among a command's words; those after `--` are another's (a
    schedule's job)."""
    words = list(args)
    return "--json" in (words[: words.index("--")] if "--" in words else words)


def _report(ctx: click.Context, code: str, message: str, exit_code: int, hint: str = "") -> None:
    _say(bool(ctx.meta.get("aishell.json")), code, message, exit_code, hint)
    ctx.exit(exit_code)


def _say(as_json: bool, code: str, message: str, exit_code: int, hint: str = "") -> None:
    # Here, not at the top: errors are rare, and the module is light (no SQLAlchemy).
    from aishell.config.dburl import passwords_hidden

    message = passwords_hidden(message)
    if as_json:
        # Here, not at the top: the module is for errors, which most commands never have.
        from aishell.render.machine import dumps, error_object

        click.echo(dumps({"error": error_object(code, message, exit_code)}))
    else:
        click.echo(f"Error: {message}{hint}", err=True)


class State:
    """Options of the top-level command, shared by every subcommand."""

    def __init__(self, config_path: str | None, home: str | None, debug: bool) -> None:
        self.config_path, self.home, self.debug = config_path, home, debug
        self._config: Config | None = None
        self._view: ConfigView | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            # Here, not at the top: the config's models (pydantic) are for the commands
            # that read it, not for --help.
            from aishell.config.models import load_config

            self._config = load_config(self.config_path, self.home)
        return self._config

    def read_config_again(self) -> Config:
        """The config as its files hold it now, read as this command read it."""
        from aishell.config.models import load_config

        return load_config(self.config_path, self.home)

    @property
    def view(self) -> ConfigView:
        """What the listing commands read of the config: its view (config/view.py), from
        the listings' cache while its files are unchanged, without the config's models."""
        if self._view is None:
            from aishell.config.view import load_view, view_of

            loaded = self._config
            self._view = view_of(loaded) if loaded else load_view(self.config_path, self.home)
        return self._view


pass_state = click.make_pass_decorator(State)
