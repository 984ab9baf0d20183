"""Database servers of a test's own, for faults the shared servers must never see: a
server stopped (as by a crash) and started again.

`private_postgresql()` runs a throwaway PostgreSQL 15 cluster in a temporary folder on
a free port; it is stopped and deleted afterwards. `private_mariadb()` does the same
with a MariaDB server. Self-contained: each needs only the server's binaries. A test
that needs one fails with a one-line reason when they are missing (or skips, when
skipping was asked for: see tests/services.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.services import unavailable

PG_BIN = Path(os.environ.get("AISHELL_PG_BIN", "/usr/lib/postgresql/15/bin"))
# Root may not run the server: it runs as this account then.
PG_ACCOUNT = "postgres"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_account(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", PG_ACCOUNT, "--", *command]


def _run(command: list[str]) -> None:
    done = subprocess.run(
        _as_server_account(command), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:2])} failed: {(done.stderr or done.stdout).strip()}"
        )


@contextmanager
def private_postgresql() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A PostgreSQL server of this test's own; yields (url, stop, start).

    `url` reaches its database `test` as postgres (trust auth, on 127.0.0.1). `stop()`
    is an immediate shutdown (what a crash or a killed server looks like to clients:
    the next start recovers from the WAL); `start()` starts it again on the same port
    and returns once it accepts connections.
    """
    if not (PG_BIN / "initdb").exists():
        unavailable(f"PostgreSQL server binaries not found in {PG_BIN} (set AISHELL_PG_BIN)")
    folder = Path(tempfile.mkdtemp(prefix="aishell-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, PG_ACCOUNT)
    port = _free_port()
    running = False

    pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w"]

    def start() -> None:
        nonlocal running
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 "
            # A test server: durability against power loss is not what is tested.
            "-c fsync=off -c shared_buffers=16MB -c max_connections=40"
        )
        _run([*pg_ctl, "-o", options, "-l", str(log), "start"])
        running = True

    def stop() -> None:
        nonlocal running
        _run([*pg_ctl, "-m", "immediate", "stop"])
        running = False

    try:
        try:
            _run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N"])
            start()
            address = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
            _run([str(PG_BIN / "createdb"), *address, "test"])
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            unavailable(f"a private PostgreSQL could not start: {exc}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", stop, start
    finally:
        if running:
            with suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                stop()
        shutil.rmtree(folder, ignore_errors=True)


MARIADB_INSTALL = os.environ.get("AISHELL_MARIADB_INSTALL_DB", "mariadb-install-db")
MARIADBD = os.environ.get("AISHELL_MARIADBD", "/usr/sbin/mariadbd")
# Root may not run the server: mariadbd drops to this account itself.
MY_ACCOUNT = "mysql"


def _mariadb_answers(port: int) -> bool:
    import pymysql

    try:
        pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
    except pymysql.Error:
        return False
    return True


@contextmanager
def private_mariadb(
    *options: str,
) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A MariaDB server of this test's own, started with `options` besides its own;
    yields (url, stop, start).

    `url` reaches its database `test` as root with an empty password on 127.0.0.1.
    `stop()` kills the server with SIGKILL (a crash: the next start recovers from
    InnoDB's redo log); `start()` starts it again on the same port and returns once it
    accepts connections.
    """
    install = shutil.which(MARIADB_INSTALL) or shutil.which("mysql_install_db")
    server = shutil.which(MARIADBD)
    if install is None or server is None:
        unavailable(
            f"MariaDB server binaries not found ({MARIADB_INSTALL}, {MARIADBD}); "
            "set AISHELL_MARIADB_INSTALL_DB and AISHELL_MARIADBD"
        )
    folder = Path(tempfile.mkdtemp(prefix="aishell-my-"))
    data, log = folder / "data", folder / "server.log"
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(folder, MY_ACCOUNT)
    account = [f"--user={MY_ACCOUNT}"] if as_root else []
    port = _free_port()
    process: subprocess.Popen[bytes] | None = None

    def start() -> None:
        nonlocal process
        process = subprocess.Popen(
            [
                str(server),
                "--no-defaults",
                *account,
                f"--datadir={data}",
                f"--port={port}",
                f"--socket={folder / 'server.sock'}",
                f"--pid-file={folder / 'server.pid'}",
                f"--log-error={log}",
                # Its own: servers of several workers starting at once share no temp names.
                f"--tmpdir={folder}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                # A test server: durability against power loss is not what is tested.
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=40",
                *options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the tests is not the server's
        )
        deadline = time.monotonic() + 120
        while not _mariadb_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (
                    log.read_text(errors="replace").strip().splitlines()[-3:]
                    if log.exists()
                    else []
                )
                stop()
                raise RuntimeError(f"mariadbd did not start on port {port}: {' | '.join(tail)}")
            time.sleep(0.1)

    def stop() -> None:
        nonlocal process
        if process is not None:
            with suppress(ProcessLookupError):
                process.kill()
            process.wait()
            process = None

    try:
        try:
            _run_as_self(
                [
                    install,
                    "--no-defaults",
                    *account,
                    f"--datadir={data}",
                    f"--tmpdir={folder}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]
            )
            start()
            import pymysql

            conn = pymysql.connect(host="127.0.0.1", port=port, user="root")
            with conn.cursor() as cursor:
                cursor.execute("CREATE DATABASE test CHARACTER SET utf8mb4")
            conn.close()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            unavailable(f"a private MariaDB could not start: {exc}")
        yield f"mysql+pymysql://root@127.0.0.1:{port}/test", stop, start
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


def _run_as_self(command: list[str]) -> None:
    """mariadb-install-db changes to the server's account itself (--user)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()}"
        )
