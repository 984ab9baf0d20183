"""The whole `aishell run backup`, as a user runs it, against the bare dump tool on the
same database, on PostgreSQL (`pg_dump -Fc`) and MariaDB (`mariadb-dump` with the flags
aishell uses), in one run; and where the time outside the dump goes.

Builds a database of about --megabytes MB on each server (aishell_backup_<pid>, dropped
at the end), dumps it once to warm the caches and runs one backup (the home's state
store made, as after a first run), then times alternating pairs, each side a new process:
  aishell     python -m aishell --home H run backup --target db --json --no-verify:
              start-up, config, catalog, state store, plan, the size check, the dump
              streamed into its file with the sha256 and row counts read on the way,
              fsync, rename, manifest, the run's records, the JSON, the exit
  baseline    the bare tool writing a file of the same database
(the first pair aishell first, the next the baseline first, ...), and prints each pair,
the median of the ratios and the median times. The aim (at most 1.1x) is for this,
the backup: verification (on by default) restores the backup besides, which the bare
dump does not. pg_dump syncs its file to disk before it exits (its default), as aishell
does; mariadb-dump only writes to its stdout. So on MariaDB the baseline's file is then
synced (fsync) and timed apart: the pairs are printed against the dump made durable
(like for like) and against the bare dump alone.

Then --verified pairs of the command as a user gets it by default (verification on:
`run backup --target db --json`) against the bare dump followed by a bare restore of
its file into a new database (pg_restore; the mariadb client).

Then --probes runs of bench/backup_probe.py: the same command with a clock around the
calls it makes; the phases of the quickest run are printed (start-up and imports, config,
catalog, state store, plan, the size estimates, the dump, the sync, the manifest, the
state writes, the exit), and what is outside the dump tool's own stream.

The environment's PYTHONDONTWRITEBYTECODE=1 is kept (every start compiles what it
imports) unless --bytecode-cache: then each process reads and writes a bytecode cache
of its own (PYTHONPYCACHEPREFIX in a temporary folder), as an installed wheel's
compiled modules are read.

With --before DIR (a checkout of an earlier commit, e.g. `git archive COMMIT | tar -x
-C DIR`), that code's `run backup --no-verify` is timed in the same pairs too (each
member first in turn), on a home of its own.

    python bench/backup.py [--megabytes 300] [--pairs 5] [--verified 2] [--probes 2]
                           [--engines postgresql,mariadb] [--bytecode-cache] [--before DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
NAME = f"aishell_backup_{os.getpid()}"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/test"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
MY = ["-h", "127.0.0.1", "-P", "3306", "--protocol=TCP", "-u", "root"]
MY_DUMP = ["mariadb-dump", "--single-transaction", "--routines", "--triggers", "--events"]
BYTES_PER_ROW = 160


@contextmanager
def database(admin_url: str, name: str) -> Iterator[str]:
    """A new database of this name, dropped afterwards; yields its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    pg = admin_url.startswith("postgresql")
    quoted = f'"{name}"' if pg else f"`{name}`"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}{' WITH (FORCE)' if pg else ''}"))
        admin.dispose()


def build(url: str, megabytes: float) -> int:
    """An events table of about `megabytes` and a small one; returns the data's size."""
    rows = int(megabytes * 1e6 / BYTES_PER_ROW)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if url.startswith("postgresql"):
            conn.execute(
                text("CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, body text)")
            )
            conn.execute(
                text(
                    "INSERT INTO events SELECT g, now() - g * interval '1 second', "
                    "md5(g::text) || md5((g * 7)::text) || repeat('x', 60) "
                    f"FROM generate_series(1, {rows}) g"
                )
            )
            conn.execute(text("CREATE TABLE small (id int PRIMARY KEY, name text)"))
            conn.execute(
                text("INSERT INTO small SELECT g, 'n' || g FROM generate_series(1, 1000) g")
            )
            conn.execute(text("VACUUM ANALYZE"))
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        else:
            conn.execute(
                text("CREATE TABLE events (id bigint PRIMARY KEY, at datetime, body text)")
            )
            for low in range(1, rows + 1, 200_000):
                high = min(rows, low + 199_999)
                conn.execute(
                    text(
                        "INSERT INTO events SELECT seq, now() - INTERVAL seq SECOND, "
                        "CONCAT(MD5(seq), MD5(seq * 7), REPEAT('x', 60)) "
                        f"FROM seq_{low}_to_{high}"
                    )
                )
            conn.execute(text("CREATE TABLE small (id int PRIMARY KEY, name text)"))
            conn.execute(text("INSERT INTO small SELECT seq, CONCAT('n', seq) FROM seq_1_to_1000"))
            conn.execute(text("ANALYZE TABLE events, small"))
            size = conn.execute(
                text(
                    "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE()"
                )
            ).scalar()
    engine.dispose()
    return int(size or 0)


def configure(home: Path, url: str) -> None:
    """A home with the shipped config and one target, `db`, at url."""
    shutil.copytree(REPO / "config", home / "config")
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"] = {"url": url}
    data["default_target"] = "db"
    path.write_text(yaml.safe_dump(data))


def child_env(cache: Path | None, code: Path = REPO) -> dict[str, str]:
    """The aishell of the checkout at `code` (this one by default), whatever is
    installed; with `cache`, a bytecode cache."""
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    found = {**os.environ, "PYTHONPATH": path}
    if cache is not None:
        found.pop("PYTHONDONTWRITEBYTECODE", None)
        found["PYTHONPYCACHEPREFIX"] = str(cache)
    return found


def children_cpu() -> float:
    """The CPU seconds (user and system) of every child process waited for so far, and
    of theirs: a run's pg_dump or mariadb-dump counts with it."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Aishell:
    """`aishell run backup` as a new process on one home; each backup it makes is
    deleted after it is timed."""

    def __init__(self, home: Path, cache: Path | None, code: Path = REPO) -> None:
        self.home, self.env = home, child_env(cache, code)
        self.cpu = 0.0  # the last run's, its dump tool's included

    def argv(self, verify: bool) -> list[str]:
        args = ["--home", str(self.home), "run", "backup", "--target", "db", "--json"]
        return args + ([] if verify else ["--no-verify"])

    def run(self, verify: bool, probe: Path | None = None) -> tuple[float, dict[str, float]]:
        """Its wall time, and each step's seconds as the run's JSON gives them."""
        if probe is None:
            command = [sys.executable, "-m", "aishell", *self.argv(verify)]
        else:
            script = str(REPO / "bench" / "backup_probe.py")
            command = [sys.executable, script, str(probe), "--", *self.argv(verify)]
        cpu, started = children_cpu(), time.perf_counter()
        # Run from the home: `python -m` looks in its working folder first, where
        # another checkout's aishell would be found before the one on its path.
        done = subprocess.run(
            command, env=self.env, cwd=self.home, capture_output=True, text=True, check=False
        )
        took = time.perf_counter() - started
        self.cpu = children_cpu() - cpu
        if done.returncode != 0:
            raise SystemExit(f"aishell run backup failed: {done.stderr[-3000:]}")
        steps = json.loads(done.stdout)["steps"]
        shutil.rmtree(self.home / "backups", ignore_errors=True)
        return took, {f"{s['step_id']} {s['tool']}": float(s["seconds"]) for s in steps}


def bare(argv: list[str], out: Path | None = None) -> float:
    """Run the tool (into out, if given); the seconds an fsync of out then takes."""
    if out is None:
        subprocess.run(argv, check=True, capture_output=True)
        return 0.0
    with out.open("wb") as handle:
        subprocess.run(argv, check=True, stdout=handle, stderr=subprocess.PIPE)
        started = time.perf_counter()
        os.fsync(handle.fileno())
        return time.perf_counter() - started


def timed_baseline(baseline: Callable[[Path], float], out: Path) -> tuple[float, float, float]:
    """The baseline's time, its time without the fsync of its file, and its CPU."""
    cpu, started = children_cpu(), time.perf_counter()
    synced = baseline(out)
    took = time.perf_counter() - started
    out.unlink(missing_ok=True)
    return took, took - synced, children_cpu() - cpu


def ratios(ours: list[float], theirs: list[float]) -> str:
    each = [a / b for a, b in zip(ours, theirs, strict=True)]
    return (
        f"median ratio {statistics.median(each):.3f}x (pairs: "
        + ", ".join(f"{r:.3f}x" for r in each)
        + ")"
    )


def pairs(
    engine: str,
    aishell: Aishell,
    baseline: Callable[[Path], float],
    tmp: Path,
    count: int,
    before: Aishell | None = None,
) -> tuple[list[float], list[float], list[float], list[dict[str, float]], list[float]]:
    """Alternating pairs of `run backup --no-verify` and the baseline (with `before`,
    triples: another checkout's aishell too, each first in turn); the baseline's times
    with its file synced, and without (the bare tool's alone); `before`'s times. Each
    one's CPU (its tool's included) is kept in CPU, by member."""
    ours: list[float] = []
    theirs: list[float] = []
    unsynced: list[float] = []
    steps: list[dict[str, float]] = []
    earlier: list[float] = []
    members = ["aishell", "baseline"] + (["before"] if before else [])
    for i in range(count):
        order = members[i % len(members) :] + members[: i % len(members)]
        for which in order:
            if which == "aishell":
                seconds, took = aishell.run(verify=False)
                ours.append(seconds)
                steps.append(took)
                CPU.setdefault("aishell", []).append(aishell.cpu)
            elif which == "before" and before is not None:
                earlier.append(before.run(verify=False)[0])
                CPU.setdefault("before", []).append(before.cpu)
            else:
                synced, alone, cpu = timed_baseline(baseline, tmp / "plain")
                theirs.append(synced)
                unsynced.append(alone)
                CPU.setdefault("baseline", []).append(cpu)
        bare_tool = (
            f"   (bare tool {unsynced[-1]:.3f} s, ratio {ours[-1] / unsynced[-1]:.3f}x)"
            if engine != "postgresql"
            else ""
        )
        then = (
            f"   before {earlier[-1]:7.3f} s, ratio {earlier[-1] / theirs[-1]:.3f}x"
            if earlier
            else ""
        )
        print(
            f"  {engine} pair {i + 1} ({order[0]} first): aishell {ours[-1]:7.3f} s   "
            f"baseline {theirs[-1]:7.3f} s   ratio {ours[-1] / theirs[-1]:.3f}x{bare_tool}{then}",
            flush=True,
        )
    return ours, theirs, unsynced, steps, earlier


# The CPU of each member's runs in the pairs, by member; emptied for each engine.
CPU: dict[str, list[float]] = {}


def restore_seconds(admin: str, pg: bool, dump: Path) -> float:
    """A bare restore of the baseline's file into a new database."""
    with database(admin, f"{NAME}_restore"):
        started = time.perf_counter()
        if pg:
            bare(["pg_restore", *PG, "-d", f"{NAME}_restore", str(dump)])
        else:
            with dump.open("rb") as source:
                subprocess.run(
                    ["mariadb", *MY, f"{NAME}_restore"],
                    stdin=source,
                    check=True,
                    capture_output=True,
                )
        return time.perf_counter() - started


def verified(
    engine: str,
    aishell: Aishell,
    baseline: Callable[[Path], float],
    admin: str,
    tmp: Path,
    count: int,
) -> list[str]:
    """The command as a user gets it (verification on) against the bare dump, and
    against the bare dump followed by a bare restore."""
    ours: list[float] = []
    dumps: list[float] = []
    both: list[float] = []
    validations: list[float] = []
    for i in range(count):
        order = ("aishell", "baseline") if i % 2 == 0 else ("baseline", "aishell")
        for which in order:
            if which == "aishell":
                seconds, steps = aishell.run(verify=True)
                ours.append(seconds)
                validations.append(steps.get("step_2 validate_backup", 0.0))
            else:
                plain = tmp / "plain"
                started = time.perf_counter()
                baseline(plain)
                dumps.append(time.perf_counter() - started)
                both.append(dumps[-1] + restore_seconds(admin, engine == "postgresql", plain))
                plain.unlink()
        print(
            f"  {engine} verified {i + 1} ({order[0]} first): aishell {ours[-1]:7.3f} s "
            f"(its validation step {validations[-1]:.3f} s)   dump {dumps[-1]:7.3f} s   "
            f"dump + restore {both[-1]:7.3f} s",
            flush=True,
        )
    return [
        f"{engine}: run backup as by default (verified): aishell {statistics.median(ours):.2f} s "
        f"(validation step {statistics.median(validations):.2f} s); against the dump "
        f"{statistics.median(dumps):.2f} s: " + ratios(ours, dumps),
        f"{engine}: the same against the dump + a bare restore {statistics.median(both):.2f} s: "
        + ratios(ours, both),
    ]


# How the probe's phases are shown, in order.
PHASES = (
    "interpreter start",
    "imports (the CLI and what the clock wraps)",
    "config",
    "catalog",
    "state store opened",
    "open target",
    "plan",
    "state writes",
    "step_0 calculate_backup_size",
    "size estimate (in the dump step)",
    "dump streamed (tool, file, sha256)",
    "sync",
    "tool version",
    "manifest",
    "dump step's work",
    "step_1 backup_database_full",
    "run",
    "exit (after the command returned)",
)


def probe(aishell: Aishell, tmp: Path, count: int) -> tuple[float, dict[str, float]]:
    """The wall time and the phases of the quickest of `count` probe runs (the phases of
    one run, so that they add up)."""
    runs: list[tuple[float, dict[str, float]]] = []
    for i in range(count):
        marks_file = tmp / f"marks-{i}.json"
        spawned = time.time()
        wall, steps = aishell.run(verify=False, probe=marks_file)
        ended = spawned + wall
        found = json.loads(marks_file.read_text())
        phases: dict[str, float] = dict(steps)
        phases["interpreter start"] = found["started"] - spawned
        phases["imports (the CLI and what the clock wraps)"] = found["imported"] - found["started"]
        phases["exit (after the command returned)"] = ended - found["ended"]
        for label, start, end in found["marks"]:
            phases[label] = phases.get(label, 0.0) + end - start
        runs.append((wall, phases))
    return min(runs, key=lambda run: run[0])


def phase_lines(engine: str, wall: float, phases: dict[str, float], baseline: float) -> list[str]:
    lines = [
        f"{engine}: where the time goes, the quickest probe run "
        f"(its wall {wall:.3f} s; the baseline's median {baseline:.3f} s):"
    ]
    for label in PHASES:
        if label in phases:
            lines.append(f"    {label:<44}{phases[label]:8.3f} s")
    streamed = phases.get("dump streamed (tool, file, sha256)")
    if streamed is not None:
        lines.append(
            f"    {'outside the dump tool stream':<44}{wall - streamed:8.3f} s  "
            f"(the stream against the baseline: {streamed - baseline:+.3f} s)"
        )
    return lines


def run_engine(engine: str, args: argparse.Namespace) -> list[str]:
    pg = engine == "postgresql"
    admin = PG_ADMIN if pg else MY_ADMIN
    lines: list[str] = []
    with database(admin, NAME) as url, tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        size = build(url, args.megabytes)
        configure(tmp / "home", url)
        aishell = Aishell(tmp / "home", tmp / "pycache" if args.bytecode_cache else None)
        if pg:
            tool = "pg_dump -Fc (which syncs its file)"

            def baseline(out: Path) -> float:
                return bare(["pg_dump", "-Fc", *PG, "-f", str(out), NAME])
        else:
            tool = "mariadb-dump, its file then synced"

            def baseline(out: Path) -> float:
                return bare([*MY_DUMP, "--hex-blob", *MY, NAME], out)

        timed_baseline(baseline, tmp / "warm")  # the caches warm, for both alike
        aishell.run(verify=False)  # the state store made, as after a first run
        before = None
        if args.before:
            configure(tmp / "home-before", url)
            cache = tmp / "pycache-before" if args.bytecode_cache else None
            before = Aishell(tmp / "home-before", cache, Path(args.before).resolve())
            before.run(verify=False)
        ours, theirs, unsynced, steps, earlier = pairs(
            engine, aishell, baseline, tmp, args.pairs, before
        )
        dump_step = statistics.median(s["step_1 backup_database_full"] for s in steps)
        lines.append(
            f"{engine}: {size / 2**20:.0f} MiB of data; run backup --no-verify as a new "
            f"process: aishell {statistics.median(ours):.2f} s (its dump step "
            f"{dump_step:.2f} s), {tool} {statistics.median(theirs):.2f} s (medians of "
            f"{args.pairs}); " + ratios(ours, theirs)
        )
        lines.append(
            f"{engine}: CPU, user and system, the dump tool's included (medians): "
            + ", ".join(f"{who} {statistics.median(cpu):.2f} s" for who, cpu in CPU.items())
        )
        CPU.clear()
        if earlier:
            lines.append(
                f"{engine}: the code at {args.before}, in the same pairs: "
                f"{statistics.median(earlier):.2f} s; " + ratios(earlier, theirs)
            )
        if not pg:
            lines.append(
                f"{engine}: against the bare mariadb-dump, its file not synced "
                f"{statistics.median(unsynced):.2f} s: " + ratios(ours, unsynced)
            )
        print("\n".join(lines), flush=True)
        if args.verified:
            lines += verified(engine, aishell, baseline, admin, tmp, args.verified)
            print("\n".join(lines[-2:]), flush=True)
        if args.probes:
            wall, quickest = probe(aishell, tmp, args.probes)
            phases = phase_lines(engine, wall, quickest, statistics.median(theirs))
            lines += phases
            print("\n".join(phases), flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=300)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--verified", type=int, default=2)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--engines", default="postgresql,mariadb")
    parser.add_argument("--bytecode-cache", action="store_true")
    parser.add_argument(
        "--before",
        help="another checkout (an earlier commit's files): its aishell in the same pairs",
    )
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"Python {sys.version.split()[0]}; {args.pairs} alternating pairs per engine; "
        + ("a bytecode cache" if args.bytecode_cache else "no bytecode cache: every start compiles")
        + f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    lines: list[str] = []
    for engine in args.engines.split(","):
        lines += run_engine(engine, args)
    load = os.getloadavg()
    lines.append(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
