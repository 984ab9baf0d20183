"""Kill the process at every checkpoint of a run, resume, and count each side effect."""

import multiprocessing
import os
import shutil
import signal
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import MetaData, create_engine, insert

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import PlanError, StateError
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.state.history import LEGACY_SCHEMA_VERSION as SCHEMA_VERSION
from aishell.state.schema import meta
from aishell.state.store import StateStore
from tests.executor.prewarmed import Child, at_once, schema_version, start_aishell
from tests.state.test_state_migrations import baseline_schema

SITE_TOOLS = Path(__file__).parents[1] / "site_tools"
LEDGER_STEPS = 16


# A tmpfs, and the room a test's folder may take there at most.
MEMORY = Path("/dev/shm")
MEMORY_ROOM = 1 << 30


@pytest.fixture
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test's folder (its home: the state store, the ledger) in memory, where the
    machine has a tmpfs with room. The processes here are killed at checkpoints set in
    their code, or signalled, never the machine: what they wrote stays in the page cache
    all the same, and the fsync of every commit (the store is synchronous=FULL, for a
    power cut) cost most of these tests' time on a disk the other tests keep busy."""
    if not (os.access(MEMORY, os.W_OK) and shutil.disk_usage(MEMORY).free > MEMORY_ROOM):
        yield tmp_path_factory.mktemp("crash")
        return
    path = Path(tempfile.mkdtemp(prefix="aishell-crash-", dir=MEMORY))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ledger_config(home):
    """A config with a `ledger` SQLite target and the test tools."""
    db = home / "ledger.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, token TEXT NOT NULL)")
    conn.commit()
    conn.close()
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["ledger"] = {"url": "sqlite:///ledger.db"}
    data["catalog_paths"] = [str(SITE_TOOLS)]
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def ledger_plan(tag):
    steps = [Step("step_0", "count_table_rows", {"table": "ledger"})]
    for i in range(1, LEDGER_STEPS + 1):
        steps.append(Step(f"step_{i}", "append_ledger", {"token": f"{tag}-{i}"}))
    return Plan("maintenance", "ledger", "sqlite", {"type": "ledger"}, tuple(steps))


def ledger_tokens(home):
    conn = sqlite3.connect(home / "ledger.db")
    try:
        return [r[0] for r in conn.execute("SELECT token FROM ledger ORDER BY id")]
    finally:
        conn.close()


def _run_and_die(home, plan, where, index):
    """In a forked child: run the plan and SIGKILL ourselves at one checkpoint."""
    os.environ["AISHELL_HOME"] = str(home)
    original_started = StateStore.step_started
    original_finished = StateStore.step_finished

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def step_started(self, run_id, idx, *args, **kw):
        if where == "before" and idx == index:
            die()  # the step is about to run: nothing of it happened
        return original_started(self, run_id, idx, *args, **kw)

    def step_finished(self, run_id, idx, status, **kw):
        if where == "during" and idx == index and status == "succeeded":
            die()  # its statement committed, its checkpoint did not: in doubt
        original_finished(self, run_id, idx, status, **kw)
        if where == "after" and idx == index:
            die()  # checkpointed; the next step has not begun

    StateStore.step_started = step_started
    StateStore.step_finished = step_finished
    commands.apply_plan(load_config(home=home), plan)
    os._exit(0)  # not killed: the kill point was never reached


def killed_at(home, plan, where, index):
    """Run the plan in a forked child that SIGKILLs itself at one checkpoint; wait for it."""
    child = multiprocessing.get_context("fork").Process(
        target=_run_and_die, args=(home, plan, where, index)
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, (where, index, child.exitcode)


KILL_POINTS = [(w, i) for i in range(LEDGER_STEPS + 1) for w in ("before", "during", "after")]


def test_every_kill_point_resumes_with_each_effect_exactly_once(ledger_config, home):
    assert len(KILL_POINTS) >= 50
    for where, index in KILL_POINTS:
        tag = f"{where}{index}-{uuid.uuid4().hex[:6]}"
        plan = ledger_plan(tag)
        killed_at(home, plan, where, index)

        killed = commands.list_runs(ledger_config, limit=1)[0]
        assert killed["status"] == "interrupted", (where, index)  # its process is gone
        result = commands.resume_run(ledger_config, killed["run_id"])
        assert result.status == "completed", (where, index, result.error)
        assert all(s.status == "succeeded" for s in result.steps)
        ours = [t for t in ledger_tokens(home) if t.startswith(f"{tag}-")]
        assert sorted(ours) == sorted(f"{tag}-{i}" for i in range(1, LEDGER_STEPS + 1)), (
            where,
            index,
        )
        events = commands.show_run(ledger_config, killed["run_id"])["events"]
        if where == "during" and index > 0:
            found = [e for e in events if e["kind"] == "in_doubt"]
            assert found and found[0]["data"]["effect_found"] is True


def test_a_step_in_doubt_that_cannot_be_checked_waits_for_a_person(ledger_config, home):
    """A non-idempotent tool that cannot look for its effect is never run twice blindly."""
    steps = [
        Step("step_0", "append_ledger_unchecked", {"token": "blind-0"}),
        Step("step_1", "append_ledger_unchecked", {"token": "blind-1"}),
    ]
    plan = Plan("maintenance", "ledger", "sqlite", {"type": "ledger"}, tuple(steps))
    killed_at(home, plan, "during", 0)
    run_id = commands.list_runs(ledger_config, limit=1)[0]["run_id"]
    waiting = commands.resume_run(ledger_config, run_id)
    assert waiting.status == "waiting_approval"
    assert waiting.steps[0].status == "waiting_approval"
    assert "its effect is unknown and append_ledger_unchecked is not idempotent" in (
        waiting.steps[0].error
    )
    assert waiting.steps[1].status == "succeeded"  # it does not need step_0's output
    assert ledger_tokens(home) == ["blind-0", "blind-1"]
    with pytest.raises(Exception, match="needs --step N and --reason"):
        commands.decide_steps(ledger_config, run_id, "succeeded", step=0)
    commands.decide_steps(ledger_config, run_id, "succeeded", step=0, reason="row is there")
    done = commands.resume_run(ledger_config, run_id)
    assert done.status == "completed"
    assert ledger_tokens(home) == ["blind-0", "blind-1"]  # exactly once


def test_resume_refuses_a_run_whose_tools_changed(ledger_config, home):
    run = commands.apply_plan(ledger_config, ledger_plan("changed"))
    with StateStore(ledger_config.state_url) as store:
        store.finish_run(run.run_id, "failed")
    site = home / "site"
    site.mkdir()
    for tool in SITE_TOOLS.glob("*.yaml"):
        (site / tool.name).write_text(tool.read_text().replace("Unique per step", "Unique"))
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["catalog_paths"] = [str(site)]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PlanError, match=f"Tool 'append_ledger' changed since run {run.run_id}"):
        commands.resume_run(load_config(home=home), run.run_id)


def test_state_store_upgrades_an_older_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        MetaData().create_all(conn)
        meta.create(conn)
        # The tables of schema version 1, the first of the history before Alembic, as
        # the baseline revision holds them (schema.py has moved on since).
        baseline = baseline_schema().tables
        for name in ("runs", "steps", "events", "approvals", "backups", "target_locks"):
            baseline[name].create(conn)
        conn.execute(insert(meta).values(key="schema_version", value="1"))
    engine.dispose()
    with StateStore(url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.list_statements("nope") == []  # a table of version 2


def test_state_store_refuses_a_newer_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore(url):
        pass
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StateError) as err:
        StateStore(url)
    assert str(err.value) == (
        f"The state store {tmp_path / 'state.db'} has schema version 99, newer than this "
        f"aishell knows ({SCHEMA_VERSION}); upgrade aishell"
    )


def slow_plan(tag, spins):
    return Plan(
        "maintenance",
        "ledger",
        "sqlite",
        {"type": "slow"},
        (
            Step("step_0", "append_ledger", {"token": f"{tag}-0"}),
            Step("step_1", "slow_append", {"token": f"{tag}-1", "spins": spins}),
            Step("step_2", "append_ledger", {"token": f"{tag}-2"}),
        ),
    )


def _run_plan_file(home: Path, plan_file: Path) -> Child:
    """`aishell apply plan_file --json` in a process of its own (forked from a server
    that has imported aishell: tests/executor/prewarmed.py); its stderr in home/apply.err."""
    env = {**os.environ, "AISHELL_HOME": str(home)}
    args = ["apply", str(plan_file), "--json"]
    return start_aishell(args, env, home / "apply.out", home / "apply.err")


def _ended(proc: Child, home: Path, timeout: float) -> str:
    """What the process said on stderr, once it has ended."""
    proc.wait(timeout)
    return (home / "apply.err").read_text(errors="replace")


def wait_for_step_running(config, index, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = commands.list_runs(config, limit=1)
        if runs:
            steps = commands.show_run(config, runs[0]["run_id"])["steps"]
            if steps[index]["status"] == "running":
                return runs[0]["run_id"]
        time.sleep(0.05)
    raise AssertionError(f"step {index} never ran")


def save(plan, path):
    """A signed plan file in the home beside it, as `aishell plan --out` writes one."""
    commands.save_plan(load_config(home=path.parent), plan, path)
    return path


# A slow step's count: a few seconds of a core (about 2.5 million a second), long enough
# that the signal or the stop the test sends once the step is seen running lands inside
# it many times over, and no longer: a resume counts it all again.
SPINS = 6_000_000


def test_sigterm_cancels_the_statement_and_resume_finishes(ledger_config, home):
    plan_file = save(slow_plan("term", SPINS), home / "slow.json")
    proc = _run_plan_file(home, plan_file)
    run_id = wait_for_step_running(ledger_config, 1)
    proc.send_signal(signal.SIGTERM)
    err = _ended(proc, home, timeout=30)
    assert proc.returncode == 4, err
    run = commands.show_run(ledger_config, run_id)
    assert run["status"] == "interrupted"
    assert "interrupted by SIGTERM" in run["error"]
    assert [s["status"] for s in run["steps"]] == ["succeeded", "interrupted", "pending"]
    assert ledger_tokens(home) == ["term-0"]  # the cancelled statement left nothing
    # The plan is the stored one, so patch nothing; the slow step is idempotent and runs
    # again to the end.
    result = commands.resume_run(ledger_config, run_id)
    assert result.status == "completed"
    assert sorted(ledger_tokens(home)) == ["term-0", "term-1", "term-2"]


def test_stop_lets_the_current_step_finish_then_stops_resumably(ledger_config, home):
    plan_file = save(slow_plan("stop", SPINS), home / "slow.json")
    proc = _run_plan_file(home, plan_file)
    run_id = wait_for_step_running(ledger_config, 1)
    # `aishell stop` only records the request in the state store, which the run reads:
    # in this process it asks the same (the run it stops is the process under test).
    stopped = CliRunner().invoke(cli, ["stop", run_id])
    assert stopped.exit_code == 0, stopped.output
    # A hang detector: the step it lets finish counts for a few seconds, several times
    # that on a loaded two-core machine.
    err = _ended(proc, home, timeout=180)
    assert proc.returncode == 4, err
    run = commands.show_run(ledger_config, run_id)
    assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded", "pending"]
    assert run["status"] == "interrupted" and "aishell stop" in run["error"]
    result = commands.resume_run(ledger_config, run_id)
    assert result.status == "completed"
    assert ledger_tokens(home) == ["stop-0", "stop-1", "stop-2"]


def test_every_statement_is_audited(ledger_config, home):
    run = commands.apply_plan(ledger_config, ledger_plan("audit"))
    statements = commands.run_statements(ledger_config, run.run_id)
    inserts = [s for s in statements if s["sql"].startswith("INSERT INTO ledger")]
    assert len(inserts) == LEDGER_STEPS
    assert all(s["rows"] == 1 and s["finished_at"] and s["error"] is None for s in inserts)
    assert statements[0]["sql"].startswith("SELECT count(*)")


def test_a_failed_statement_is_audited_with_its_error(ledger_config, home):
    conn = sqlite3.connect(home / "ledger.db")
    conn.execute(
        "CREATE TRIGGER no_more BEFORE INSERT ON ledger BEGIN "
        "SELECT RAISE(ABORT, 'ledger is closed'); END"
    )
    conn.commit()
    conn.close()
    # The trigger fires on the step's INSERT: the step asks for a yes, and gets one.
    run = commands.apply_plan(ledger_config, ledger_plan("closed"), approver=PreApproved())
    assert run.status == "failed"
    statements = commands.run_statements(ledger_config, run.run_id)
    assert statements[-1]["error"] == "ledger is closed"


def test_circuit_breaker_opens_after_repeated_connection_failures(edit_config, home):
    (home / "broken.db").write_bytes(b"this is not a database" * 100)
    config = edit_config(
        {
            "targets": {"broken": {"url": "sqlite:///broken.db"}},
            "circuit_breaker": {"failures": 2, "cool_down_seconds": 600},
        }
    )
    from aishell.errors import TargetUnreachable

    with pytest.raises(TargetUnreachable, match="Cannot connect to target 'broken'"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")
    with pytest.raises(TargetUnreachable, match="2 failures in a row, so aishell leaves"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")
    with pytest.raises(TargetUnreachable, match="failed to connect 2 times in a row"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")


def test_an_open_breaker_closes_once_a_check_connects_or_the_target_moves(edit_config, home):
    """The login fixed (here: the file made good) while the breaker is open: `targets
    check` connecting closes it, as the refusal says. A target pointed elsewhere since,
    or another home's target of the same name, starts closed."""
    import sqlite3

    from aishell.errors import TargetUnreachable

    broken = home / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    settings = {"circuit_breaker": {"failures": 1, "cool_down_seconds": 600}}
    config = edit_config({"targets": {"broken": {"url": "sqlite:///broken.db"}}, **settings})
    with pytest.raises(TargetUnreachable, match="1 failures in a row"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")
    with pytest.raises(TargetUnreachable, match="or until `aishell targets check broken`"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")

    # Pointed at another file: another target, whose breaker is closed.
    sqlite3.connect(home / "good.db").execute("CREATE TABLE t (id integer)").connection.close()
    moved = edit_config({"targets": {"broken": {"url": "sqlite:///good.db"}}, **settings})
    assert commands.run_job(moved, "maintenance", {"type": "quick"}, "broken").status == "completed"

    # Back at the first file, made good: still open until a check connects.
    broken.unlink()
    sqlite3.connect(broken).execute("CREATE TABLE t (id integer)").connection.close()
    with pytest.raises(TargetUnreachable, match="failed to connect 1 times in a row"):
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken")
    assert commands.check_target(config, "broken")["target"] == "broken"
    assert (
        commands.run_job(config, "maintenance", {"type": "quick"}, "broken").status == "completed"
    )


def test_processes_opening_a_new_state_store_at_once_all_get_it(tmp_path_factory):
    """The slower of two first opens finds the tables the other created."""
    # On the disk, as a state store is (not the tmpfs of this module's other tests): the
    # race is of the first opens' writes, and they take as long as they take there.
    folder = tmp_path_factory.mktemp("stores")
    rounds = [(folder / f"state{round_}.db",) for round_ in range(5)]
    assert at_once(8, schema_version, rounds) == [[SCHEMA_VERSION] * 8] * 5
