"""Planning maintenance of SQLite and MariaDB databases of many tables: round trips, time
and memory of `aishell plan maintenance --type TYPE`, against the smallest database's
plan and one bare read of the catalog, measured in the same run (bench/full_plan.py
does the same on PostgreSQL).

For each engine (default both), each size (default 200 and 10,000 tables of 100 rows,
each with a primary key) and each maintenance type (default full, standard, emergency,
quick), `aishell plan maintenance --type TYPE` runs in a child process through the
command's entry point: its statements (SQLite: each one run on its connections, traced,
not the ones a statement runs inside itself; MariaDB: each one PyMySQL sends, the
guard's lookups included), its time after start-up and the CPU it used meanwhile, and its peak RSS.
A MariaDB server keeps a few hundred tables' definitions open (table_definition_cache,
400 by default): each read of information_schema.TABLES reopens the others, as on a
server of 10,000 tables left at its defaults. Needs MariaDB on 127.0.0.1:3306 (root, no
password) for `mariadb`; databases are named aishell_planeng_<pid> and dropped at the end.
At each of --dry-run-sizes (default 200 and 1,000 tables) `run maintenance --type full
--dry-run` runs once, its statements counted the same way, less the steps' own (its
statement audit): those must be the same at every size.

    python bench/full_plan_engines.py [--engines sqlite,mariadb] [--sizes 200,10000]
        [--types full,standard,emergency,quick] [--dry-run-sizes 200,1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.full_plan import compared, dry_run, dry_runs_shown, timed_plan  # noqa: E402
from bench.scale import configure, peak_rss_kib  # noqa: E402

MARIADB = "mysql+pymysql://root@127.0.0.1:3306/{name}"
PAD = "x" * 60


def plan_child(home: str, kind: str) -> None:
    """In the child: `aishell plan maintenance --type KIND`, its statements counted."""
    sent = _counting(_target_file(home))
    took, cpu = timed_plan(home, kind)
    print(json.dumps({"seconds": took, "cpu": cpu, "rss_kib": peak_rss_kib(), "sent": sent[0]}))


def dry_run_child(home: str, kind: str) -> None:
    """In the child: `run maintenance --type KIND --dry-run`, its statements counted."""
    sent = _counting(_target_file(home))
    figures = dry_run(home, kind, lambda: sent[0])
    print(json.dumps({**figures, "switch_reads": sent[1]}))


def _target_file(home: str) -> str | None:
    """The target's SQLite file, None for a server's database."""
    url = str(
        yaml.safe_load((Path(home) / "config" / "aishell.yaml").read_text())["targets"]["db"]["url"]
    )
    return str(Path(url.removeprefix("sqlite:///")).resolve()) if url.startswith("sqlite") else None


def _counting(target_file: str | None) -> list[int]:
    """A counter of the statements sent to the target: PyMySQL's cursors, and the trace
    of each SQLite connection to `target_file` (every statement the library runs for
    it; the state store's, SQLite too, are not the target's)."""
    import pymysql.cursors
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    sent = [0, 0]
    execute = pymysql.cursors.Cursor.execute

    def counted(self: Any, query: Any, args: Any = None) -> Any:
        sent[0] += 1
        return execute(self, query, args)

    def traced(statement: str) -> None:
        # One a statement runs inside itself (a table-valued pragma's, a trigger's) comes
        # as a comment: not one more statement of aishell's. The guard's look at the
        # session's read-only switch before each statement is counted apart.
        if statement.startswith("PRAGMA query_only"):
            sent[1] += 1
        elif not statement.startswith("--"):
            sent[0] += 1

    def connected(dbapi: Any, _record: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            main = dbapi.execute("PRAGMA database_list").fetchone()[2]
            if main and str(Path(main).resolve()) == target_file:
                dbapi.set_trace_callback(traced)

    pymysql.cursors.Cursor.execute = counted
    event.listen(Pool, "connect", connected)
    return sent


def child(home: str, kind: str, mode: str = "--plan-child") -> dict[str, Any]:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    env.pop("AISHELL_HOME", None)
    done = subprocess.run(
        [sys.executable, __file__, mode, home, kind],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} {kind} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def sqlite_tables(path: Path, first: int, stop: int) -> float:
    """Tables t00000... of 100 rows, analyzed; one bare catalog read's time."""
    conn = sqlite3.connect(path)
    rows = [(g, g % 97, PAD) for g in range(1, 101)]
    for i in range(first, stop):
        conn.execute(f"CREATE TABLE t{i:05d} (id INTEGER PRIMARY KEY, k INT NOT NULL, pad TEXT)")
        conn.executemany(f"INSERT INTO t{i:05d} VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(path)  # a new connection reads the schema, as a command's does
    started = time.perf_counter()
    conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    took = time.perf_counter() - started
    conn.close()
    return took


def mariadb_tables(name: str, first: int, stop: int) -> float:
    """The same on MariaDB (InnoDB, a file per table), its statistics as the server keeps
    them; one bare read of the tables' catalog rows (information_schema.TABLES)."""
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)
    rows = ",".join(f"({g},{g % 97},'{PAD}')" for g in range(1, 101))
    with conn.cursor() as cur:
        for i in range(first, stop):
            cur.execute(
                f"CREATE TABLE t{i:05d} (id INT PRIMARY KEY, k INT NOT NULL, pad VARCHAR(100))"
            )
            cur.execute(f"INSERT INTO t{i:05d} VALUES {rows}")
        started = time.perf_counter()
        cur.execute(
            "SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE()"
        )
        cur.fetchall()
        took = time.perf_counter() - started
    conn.close()
    return took


def measure(
    engine: str, sizes: list[int], kinds: list[str], repeat: int, dry_sizes: list[int]
) -> None:
    import pymysql

    name = f"aishell_planeng_{os.getpid()}"
    admin = None
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "mariadb":
            admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
            admin.cursor().execute(f"CREATE DATABASE {name}")
            url = MARIADB.format(name=name)
        else:
            url = f"sqlite:///{Path(tmp) / 'db.sqlite'}"
        try:
            home = str(configure(Path(tmp) / "home", name, url))
            plans: dict[tuple[str, int], list[dict[str, Any]]] = {}
            dries: dict[int, dict[str, Any]] = {}
            bare: dict[int, float] = {}
            made = 0
            for size in sorted(set(sizes + dry_sizes)):
                if engine == "mariadb":
                    bare[size] = mariadb_tables(name, made, size)
                else:
                    bare[size] = sqlite_tables(Path(tmp) / "db.sqlite", made, size)
                made = size
                for kind in kinds if size in sizes else ():
                    plans[kind, size] = [child(home, kind) for _ in range(repeat)]
                if size in dry_sizes:
                    dries[size] = child(home, "full", "--dry-run-child")
            first = min(sizes)
            # SQLite's statements run in this process, not sent anywhere.
            said = "round trips" if engine == "mariadb" else "statements"
            for kind in kinds:
                for size in sizes:
                    runs, base = plans[kind, size], plans[kind, first]
                    print(
                        f"{engine}: plan maintenance --type {kind}, {size:,} tables: "
                        + compared(runs, base, first, bare[size], said)
                    )
            print(f"{engine}:", end=" ")
            dry_runs_shown(dries, said)
            if engine == "sqlite":
                reads = {size: d["switch_reads"] for size, d in dries.items()}
                print(
                    f"    and the guard's reads of the session's read-only switch (PRAGMA "
                    f"query_only, in the process), one per statement: {reads}"
                )
        finally:
            if admin is not None:
                admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
                admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,mariadb")
    parser.add_argument("--sizes", default="200,10000")
    parser.add_argument("--types", default="full,standard,emergency,quick")
    parser.add_argument("--dry-run-sizes", default="200,1000")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",") if n]
    kinds = [k for k in args.types.split(",") if k]
    dry_sizes = [int(n) for n in args.dry_run_sizes.split(",") if n]
    print(f"SQLite {sqlite3.sqlite_version}, MariaDB on 127.0.0.1; Python {sys.version.split()[0]}")
    for engine in [e for e in args.engines.split(",") if e]:
        measure(engine, sizes, kinds, args.repeat, dry_sizes)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plan-child":
        plan_child(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--dry-run-child":
        dry_run_child(sys.argv[2], sys.argv[3])
    else:
        main()
