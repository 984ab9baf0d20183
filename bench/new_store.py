"""What making a new state store costs (a first run on a new home, a new server store):
made at the newest revision at once (history.create_current, what StateStore does on
SQLite and PostgreSQL) against the Alembic revisions run over the same empty database
(what it did before, and still does on MySQL).

In this process, alternating, N stores each way on SQLite files (and on PostgreSQL
databases with --pg-admin URL, made and dropped here); then, each a new process, a store
made on a new file against one opened that is already there, so that the import a
new store used to need (Alembic's) is in the figure.

    python bench/new_store.py [--stores N] [--processes N] [--pg-admin URL]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aishell.state import history
from aishell.state.store import StateStore


def at_once(url: str) -> None:
    StateStore(url).close()


def by_revisions(url: str) -> None:
    history.upgraded_by_revisions(url, "bench")


def timed(make: Callable[[str], None], url: str) -> float:
    started = time.perf_counter()
    make(url)
    return time.perf_counter() - started


def sqlite_urls(folder: Path) -> Callable[[], str]:
    return lambda: f"sqlite:///{folder / uuid.uuid4().hex}.db"


def pg_urls(admin: str, made: list[str]) -> Callable[[], str]:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")

    def new() -> str:
        name = f"aishell_bench_store_{uuid.uuid4().hex[:10]}"
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(admin).set(database=name).render_as_string(False)

    return new


def in_process(new_url: Callable[[], str], stores: int) -> tuple[float, float]:
    history.prepare()  # Alembic imported once, before either is timed
    at_once(new_url())
    ours, theirs = [], []
    for _ in range(stores):
        ours.append(timed(at_once, new_url()))
        theirs.append(timed(by_revisions, new_url()))
    return statistics.median(ours), statistics.median(theirs)


OPEN = "import sys\nfrom aishell.state.store import StateStore\nStateStore(sys.argv[1]).close()"


def in_new_processes(folder: Path, processes: int) -> tuple[float, float]:
    existing = f"sqlite:///{folder / 'existing.db'}"
    StateStore(existing).close()
    new, old = [], []

    def run(url: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", OPEN, url], check=True)
        return time.perf_counter() - started

    for _ in range(processes):
        new.append(run(f"sqlite:///{folder / uuid.uuid4().hex}.db"))
        old.append(run(existing))
    return min(new), min(old)


def drop(admin: str, names: list[str]) -> None:
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def report(engine: str, stores: int, ours: float, theirs: float) -> None:
    print(f"new {engine} store, median of {stores}, in this process:")
    print(f"  by the revisions (baseline): {theirs * 1000:7.2f} ms")
    print(f"  at once:                     {ours * 1000:7.2f} ms   ratio {ours / theirs:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=30)
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--pg-admin", help="a PostgreSQL URL whose login may CREATE DATABASE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report("SQLite", args.stores, *in_process(sqlite_urls(folder), args.stores))
        if args.pg_admin:
            made: list[str] = []
            try:
                times = in_process(pg_urls(args.pg_admin, made), args.stores)
            finally:
                drop(args.pg_admin, made)
            report("PostgreSQL", args.stores, *times)
        new, old = in_new_processes(folder, args.processes)
        print(f"a new process, minimum of {args.processes}:")
        print(f"  opening a store already there (baseline): {old * 1000:7.1f} ms")
        print(
            f"  making a new store:                       {new * 1000:7.1f} ms   "
            f"(+{(new - old) * 1000:.1f} ms, ratio {new / old:.3f}x)"
        )


if __name__ == "__main__":
    main()
