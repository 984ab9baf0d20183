"""The client programs a backup runs (pg_dump, pg_restore, mariadb-dump, the mariadb
client): their command lines, their environment, and running them as child processes.

Every child is recorded in the state store's scratch ledger before it starts and runs in
its own process group, killed with it when the run stops, its time runs out, or anything
fails (aishell/scratch/); then its session on the server is ended (sessions.py).
Each is given the login of aishell's own connection through a private file and reads
no login of its own (aishell/targets/clientlogin.py); no password is ever on its
command line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Generator, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import IO

from sqlalchemy.engine import URL

from aishell.errors import StepFailed
from aishell.handlers.backup.causes import cause_of
from aishell.handlers.backup.sessions import ClientSession
from aishell.scratch.children import run_child, stream_child
from aishell.targets.clientlogin import client_env, client_login
from aishell.tool.context import ToolContext


class ToolFailed(StepFailed):
    """A client program exited with an error: `cause` is what its stderr says went
    wrong, in one bounded line with no password (causes.py); `stderr`, all it said, is
    for matching only, never shown."""

    def __init__(self, program: str, stderr: str, code: int, secrets: Iterable[str] = ()) -> None:
        self.program, self.stderr = program, stderr
        self.cause = cause_of(stderr, program, code, secrets)
        super().__init__(f"{program} failed: {self.cause}")


def run_tool(
    argv: list[str],
    env: dict[str, str],
    ctx: ToolContext,
    *,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | int = subprocess.PIPE,
    watch: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """A client program, recorded before it starts, killed with its group when the run
    stops, its time runs out, or anything fails (aishell/scratch/), and then its
    server session ended (sessions.py); `watch` is called with its pid while it runs."""
    with _login(argv, env, ctx) as (argv, env):
        session, env = ClientSession.begin(ctx, argv[0], env)
        try:
            done = run_child(
                argv,
                env=env,
                ledger=ctx.scratch,
                stdin=stdin,
                stdout=stdout,
                should_stop=ctx.should_stop,
                deadline=ctx.deadline,
                watch=session.watching(watch),
            )
        except BaseException:
            session.end()
            raise
    return _succeeded(done, env)


def tool_output(
    argv: list[str],
    env: dict[str, str],
    ctx: ToolContext,
    quiet: tuple[float, Callable[[], None]] | None = None,
    watch: Callable[[int], None] | None = None,
) -> Generator[bytes, None, None]:
    """A client program's stdout, chunk by chunk as it writes it; run as run_tool runs
    one (scratch.stream_child, with its `quiet` call; `watch` as run_tool's). Close it
    to stop the program early (its server session is ended too)."""
    with _login(argv, env, ctx) as (argv, env):
        session, env = ClientSession.begin(ctx, argv[0], env)
        try:
            done = yield from stream_child(
                argv,
                env=env,
                ledger=ctx.scratch,
                should_stop=ctx.should_stop,
                deadline=ctx.deadline,
                quiet=quiet,
                watch=session.watching(watch),
            )
        except BaseException:
            session.end()
            raise
    _succeeded(done, env)


def _login(
    argv: list[str], env: dict[str, str], ctx: ToolContext
) -> AbstractContextManager[tuple[list[str], dict[str, str]]]:
    """The child given the login of the tool's connection, and the target's limits."""
    url = ctx.connection.engine.url if ctx.conn is not None else None
    if url is None or url.get_backend_name() == "sqlite":
        return nullcontext((argv, env))
    return client_login(
        argv,
        env,
        url,
        ctx.connect_timeout_seconds,
        ctx.write_timeout_seconds,
        record=ctx.scratch.file,
    )


def _succeeded(
    done: subprocess.CompletedProcess[bytes], env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace")
        given = [env.get(name, "") for name in PASSWORD_VARIABLES]
        raise ToolFailed(str(done.args[0]), said, done.returncode, given)
    return done


# The programs aishell takes one of, whichever is on PATH: a missing one names both.
_EITHER = {
    name: pair for pair in (("mariadb-dump", "mysqldump"), ("mariadb", "mysql")) for name in pair
}


def tool_version(command: str) -> str:
    try:
        out = subprocess.run(
            [command, "--version"], env=client_env(), capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        pair = _EITHER.get(command)
        missing = f"Neither {pair[0]} nor {pair[1]} is" if pair else f"{command} is"
        raise StepFailed(
            f"{missing} installed (on PATH); install the database's client tools"
        ) from None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else command


# Where a client program finds its password (server_env), never shown in its errors.
PASSWORD_VARIABLES = ("PGPASSWORD", "MYSQL_PWD")


def server_env(url: URL) -> dict[str, str]:
    """The environment a client program starts from; its login is added as it starts
    (run_tool, tool_output: aishell/targets/clientlogin.py), never in argv."""
    del url  # the login comes from the tool's connection, the one aishell used
    return client_env()


def refuse_no_database(url: URL, target: str, what: str) -> None:
    """A server target's URL must name its database: a dump or restore of one that
    names none would reach a database nobody named (libpq's default, or one called
    "None"), not the one aishell's connection reads. `what`: the step, as said."""
    if url.get_backend_name() != "sqlite" and not url.database:
        raise StepFailed(
            f"Target '{target}' names no database, and {what} must name the one it works "
            "on; give its URL a database (.../NAME) or its service a dbname"
        )


def pg_args(url: URL) -> list[str]:
    # No host: libpq's default (its Unix socket), as for aishell's own connection.
    args = ["-h", url.host] if url.host else []
    args += ["-p", str(url.port or 5432)]
    if url.username:
        args += ["-U", url.username]
    return args


def my_args(url: URL) -> list[str]:
    # Where aishell's session connects: PyMySQL goes through the URL's unix_socket when
    # it gives one (the login file names it), else by TCP even to "localhost", which the
    # programs would take for their socket. The server tells the two apart as accounts
    # ('app'@'localhost' and 'app'@'127.0.0.1'), so a program must not take the other.
    if isinstance(url.query.get("unix_socket"), str):
        args = ["--protocol=SOCKET"]
    else:
        args = ["-h", url.host or "127.0.0.1", "-P", str(url.port or 3306), "--protocol=TCP"]
    if url.username:
        args += ["-u", url.username]
    return args


def mysql_dump_program() -> str:
    return "mariadb-dump" if shutil.which("mariadb-dump") else "mysqldump"


def mysql_client() -> str:
    """The MariaDB command-line client, or MySQL's where only that is installed."""
    return "mariadb" if shutil.which("mariadb") else "mysql"


def mysql_dump_argv(url: URL, database: str, tables: list[str] | None = None) -> list[str]:
    """One way to dump, for backups and for measuring a restored copy alike: the rows of
    both must print the same."""
    return [
        mysql_dump_program(),
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        *my_args(url),
        "--",  # table names that start with a dash are names, not options
        database,
        *(tables or []),
    ]
