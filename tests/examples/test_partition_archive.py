"""The example plugin (examples/partition_archive) as a user meets it: installed with pip
into a fresh virtual environment, seen by every command there, then run on a scratch
PostgreSQL database with monthly partitions: planned, approved at the prompt's stead,
and, once SIGKILLed while its detach waits on a lock this test holds, resumed with no
partition lost and none archived twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

from aishell import commands
from aishell.config.models import load_config
from tests.conftest import REPO
from tests.fake_ollama import Script, fake_ollama
from tests.helpers import use_target

# Started first in a worker's share (tests/conftest.py): it runs for a long while.
pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "partition_archive"
AGENT = "partition_archive"
PIP = [sys.executable, "-m", "pip"]
# No network and no build environment: hatchling comes from this interpreter.
OFFLINE = ["--no-deps", "--no-build-isolation", "--no-index"]
RETENTION = ["--table", "events", "--older-than-days", "60"]

# Monthly partitions from six months back to next month, an hour's row each.
SCHEMA = """
CREATE TABLE events (id bigint, created_at timestamptz NOT NULL, payload text)
    PARTITION BY RANGE (created_at);
DO $$
DECLARE m date;
BEGIN
  FOR i IN -6..1 LOOP
    m := date_trunc('month', now())::date + make_interval(months => i);
    EXECUTE 'CREATE TABLE ' || quote_ident('events_' || to_char(m, 'YYYY_MM'))
        || ' PARTITION OF events FOR VALUES FROM (' || quote_literal(m::text) || ') TO ('
        || quote_literal((m + interval '1 month')::date::text) || ')';
  END LOOP;
END $$;
INSERT INTO events SELECT g, date_trunc('month', now()) - interval '6 months'
    + g * interval '1 hour', 'x' FROM generate_series(0, 5000) g;
"""
# Each partition with its rows and schema, as the catalog has them.
TABLES = """
SELECT c.relname, n.nspname, c.relispartition FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname LIKE 'events\\_%' AND c.relkind = 'r'
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with aishell importable from this checkout (and its
    dependencies from this interpreter's), and the example installed with pip."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "aishell_checkout.pth").write_text(
        f"{REPO}\n{sysconfig.get_paths()['purelib']}\n"
    )
    installed = subprocess.run(
        [*PIP, "--python", str(python), "install", "--quiet", *OFFLINE, str(EXAMPLE)],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    return where


def _python(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The venv's Python with ARGS, with no stdin (no person to ask)."""
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _aishell(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`aishell ARGS` in the venv, a process of its own."""
    return _python(venv, "-m", "aishell", *args)


# Commands one after another in one interpreter of the venv, each as its command line
# runs it (click's CliRunner on aishell's: arguments, environment, exit code, output,
# no stdin), so that Python and aishell's imports start once, not once per command. A
# command is run again, 0.1 s apart and up to 60 times, while it exits with its `again`.
BATCH = """
import json, sys, time, traceback
from click.testing import CliRunner
from aishell.cli import cli

done = []
for args, env, again in json.loads(sys.argv[1]):
    for _ in range(60):
        result = CliRunner().invoke(cli, args, env=env, prog_name="aishell")
        if result.exit_code != again:
            break
        time.sleep(0.1)
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    trace = "".join(traceback.format_exception(result.exception)) if crashed else ""
    done.append([result.exit_code, result.stdout, result.stderr + trace])
print(json.dumps(done))
"""
Command = list[str] | tuple[list[str], dict[str, str], int | None]


def _batch(venv: Path, *commands: Command) -> list[subprocess.CompletedProcess[str]]:
    """Each command (its arguments; or its arguments, environment and an exit code to
    run it again on) in one process of the venv, as BATCH runs them: how each ended."""
    given = [c if isinstance(c, tuple) else (c, {}, None) for c in commands]
    done = _python(venv, "-c", BATCH, json.dumps(given))
    assert done.returncode == 0, done.stdout + done.stderr
    return [
        subprocess.CompletedProcess(args, code, out, err)
        for (args, _, _), (code, out, err) in zip(given, json.loads(done.stdout), strict=True)
    ]


def test_pip_installs_the_plugin_and_every_command_sees_it(venv: Path, home: Path) -> None:
    asked = {"_AISHELL_COMPLETE": "bash_complete", "COMP_WORDS": "aishell run part"}
    listed, doctor_json, doctor, helped, completed, tools = _batch(
        venv,
        ["agents", "list", "--json"],
        ["doctor", "--json"],
        ["doctor"],
        ["run", AGENT, "--help"],
        ([], {**asked, "COMP_CWORD": "2"}, None),
        ["tools", "show", "detach_partitions"],
    )
    agents = {a["name"]: a for a in json.loads(listed.stdout)["agents"]}
    assert agents[AGENT]["package"] == "aishell-partitions"
    assert agents[AGENT]["tools"] == [
        "find_old_partitions",
        "detach_partitions",
        "archive_partitions",
        "drop_archived_partitions",
    ]
    assert json.loads(doctor_json.stdout)["agents"][AGENT] == "aishell-partitions"
    assert "partition_archive (aishell-partitions)" in doctor.stdout

    assert helped.returncode == 0, helped.stderr
    for flag in ("--table", "--older-than-days", "--keep", "--archive-schema"):
        assert flag in helped.stdout

    assert completed.stdout.splitlines() == [f"plain,{AGENT}"]

    assert "SHARE UPDATE EXCLUSIVE" in tools.stdout and "ACCESS EXCLUSIVE" in tools.stdout


@pytest.fixture
def events(home: Path, pg_url: str) -> Iterator[Connection]:
    """The scratch database as target `db`, with the partitioned table; a connection to it."""
    use_target(home, pg_url)
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(SCHEMA)
        yield conn
    engine.dispose()


def _partitions(conn: Connection) -> dict[str, tuple[str, bool, int]]:
    """Each events_ table: its schema, whether it is attached, its rows."""
    found = {}
    for name, schema, attached in conn.execute(text(TABLES)):
        rows = conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}"."{name}"').scalar_one()
        found[name] = (schema, attached, rows)
    return found


# The partitions whose range ended over 60 days ago, read from their bounds here.
OLD = r"""
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass
  AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''(.*)''\)'))[1]::timestamptz
      <= now() - interval '60 days'
ORDER BY 1
"""


def _old(conn: Connection) -> list[str]:
    """The partitions a 60-day retention archives; the others stay."""
    old = list(conn.exec_driver_sql(OLD).scalars())
    assert len(old) >= 3  # of eight months, six back to one ahead
    return old


def _assert_archived_once(
    conn: Connection, before: dict[str, tuple[str, bool, int]], old: list[str]
) -> None:
    after = _partitions(conn)
    for name, (_, _, rows) in before.items():
        if name in old:
            assert after[name] == ("archive", False, rows), name  # moved once, whole
        else:
            assert after[name] == before[name], name  # untouched
    total = conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one()
    assert total == sum(rows for n, (_, _, rows) in before.items() if n not in old)


def test_plan_shows_the_locks_and_a_run_waits_for_each_approval(
    venv: Path, home: Path, events: Connection
) -> None:
    before = _partitions(events)
    old = _old(events)
    planned = _aishell(venv, "plan", AGENT, *RETENTION)
    assert planned.returncode == 0, planned.stderr
    for shown in ("DETACH PARTITION", "CONCURRENTLY", "SHARE UPDATE EXCLUSIVE", "DROP TABLE"):
        assert shown in planned.stdout

    ran = _aishell(venv, "run", AGENT, *RETENTION, "--json")
    assert ran.returncode == 3, ran.stderr  # no one at the prompt: it waits
    run = json.loads(ran.stdout)
    assert [s["status"] for s in run["steps"]][:2] == ["succeeded", "waiting_approval"]
    assert run["steps"][0]["output"]["partitions"] == old
    assert _partitions(events) == before

    # Detach, archive, drop: each approved as it comes.
    approve, resume = ["approve", run["run_id"]], ["resume", run["run_id"], "--json"]
    done = _batch(venv, approve, resume, approve, resume, approve, resume)
    for approved in done[::2]:
        assert approved.returncode == 0, approved.stdout + approved.stderr
    resumed = done[-1]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    _assert_archived_once(events, before, old)


def _waiting_detach(conn: Connection, child: subprocess.Popen[str]) -> int:
    """The backend of the run's detach once it waits for this test's transaction."""
    for _ in range(600):
        pid = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND query LIKE :detach "
                "AND wait_event_type = 'Lock'"
            ),
            {"detach": "%DETACH PARTITION%"},
        ).scalar()
        if pid is not None:
            return int(pid)
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    raise AssertionError("the detach never waited")


def test_a_run_killed_while_it_detaches_resumes_with_each_partition_archived_once(
    venv: Path, home: Path, events: Connection, pg_url: str
) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["db"]["lock_timeout_ms"] = 120_000  # the kill comes first
    path.write_text(yaml.safe_dump(data))
    before = _partitions(events)
    old = _old(events)

    holder = create_engine(pg_url).connect()
    holder.exec_driver_sql("LOCK TABLE events IN ACCESS SHARE MODE")  # a long reader
    child = subprocess.Popen(
        [str(venv / "bin" / "python"), "-m", "aishell", "run", AGENT, *RETENTION, "--yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    backend = _waiting_detach(events, child)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    # The killed client's statement is cancelled (its backend is this test's, through
    # the run it started): the partition stays detach-pending, half done.
    events.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": backend})
    holder.rollback()
    holder.close()
    holder.engine.dispose()
    pending = events.exec_driver_sql(
        "SELECT count(*) FROM pg_inherits WHERE inhdetachpending"
    ).scalar_one()
    assert pending == 1

    for _ in range(200):  # the killed run's sessions end as the server notices
        others = events.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalar_one()
        if others == 0:
            break
        time.sleep(0.05)
    (run,) = commands.list_runs(load_config(home=home))
    run_id = run["run_id"]
    resumed, approved, done = _batch(
        venv,
        # Again while it exits 5: its run lock is not yet released.
        (["resume", run_id, "--yes", "--json"], {}, 5),
        ["approve", run_id],
        ["resume", run_id, "--json"],
    )
    assert resumed.returncode == 3, resumed.stdout + resumed.stderr  # the drop is critical
    detached = json.loads(resumed.stdout)["steps"][1]["output"]
    assert detached["finalized"] == [old[0]]
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert json.loads(done.stdout)["status"] == "completed", done.stdout + done.stderr
    _assert_archived_once(events, before, old)


def test_ask_offers_the_model_the_plugin_s_agent(
    venv: Path, home: Path, events: Connection
) -> None:
    script = Script()
    step = {"tool": "find_old_partitions", "params": {"parent": "events", "older_than_days": 60}}
    script.answers = [{"summary": "list", "agent": AGENT, "steps": [{**step, "rationale": "r"}]}]
    with fake_ollama(script) as host:
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        llm = {"host": host, "model": "planner-test", "tries": 1, "context_tokens": 32768}
        data["planner"] = {"llm": llm}
        path.write_text(yaml.safe_dump(data))
        asked = _aishell(venv, "ask", "list the old partitions of events", "--dry-run", "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    found = json.loads(asked.stdout)
    assert found["agent"] == AGENT
    assert found["steps"][0]["output"]["partitions"] == _old(events)
    (chat,) = script.chats
    assert AGENT in json.dumps(chat["format"])  # the answer's schema names the agent
    assert "find_old_partitions" in chat["messages"][1]["content"]
