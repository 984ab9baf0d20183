"""Saved plans are signed with the home's key and checked whole before their first step."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.cli import cli
from aishell.config.models import Config, load_config
from aishell.errors import PlanError
from aishell.plan.model import Plan, Step
from aishell.policy.approvers import PreApproved
from aishell.state import signing
from aishell.targets.engines import open_target
from aishell.targets.identity import plan_identity
from tests.helpers import digest, use_target
from tests.services import engine, scratch_mysql, scratch_postgresql

PURGE = {
    "id": "step_9",
    "tool": "delete_old_records",
    "params": {"table": "orders", "date_column": "created_at", "retention_days": 0},
    "rationale": "",
}


def save(config: Config, path: Path, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """A maintenance plan saved through plan_job, as its JSON."""
    commands.plan_job(config, "maintenance", job or {"type": "quick"}, out=path)
    return json.loads(path.read_text())


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))


def rehash(data: dict[str, Any]) -> None:
    """What a forger can do without the key: recompute the plain sha256."""
    body = {k: v for k, v in data.items() if k not in ("plan_hash", "signature")}
    data["plan_hash"] = Plan.from_dict(body).hash


def resign(home: Path, data: dict[str, Any]) -> None:
    """Sign data with a home's key: a plan that home itself made."""
    rehash(data)
    body = {k: v for k, v in data.items() if k != "signature"}
    key = signing.load_key(home)
    assert key is not None
    data["signature"] = signing.sign(key, body)


def apply_cli(path: Path, *extra: str) -> Any:
    return CliRunner().invoke(cli, ["apply", str(path), *extra])


def refused_line(result: Any) -> str:
    """The one line a refused apply prints, after checking it is exactly one line."""
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# --- a signed plan applies ----------------------------------------------------------------


def test_plan_out_then_apply_through_the_cli(demo_db: Path, home: Path) -> None:
    out = home / "plan.json"
    made = CliRunner().invoke(cli, ["plan", "maintenance", "--type", "quick", "--out", str(out)])
    assert made.exit_code == 0, made.output
    data = json.loads(out.read_text())
    key = signing.load_key(home)
    assert key is not None
    assert data["signature"]["alg"] == "hmac-sha256"
    assert data["signature"]["key_id"] == key.key_id == signing.key_id(key.secret)
    status = demo_db.stat()
    assert data["target_identity"].startswith(f"sqlite:{status.st_dev}:{status.st_ino}#born:")
    applied = CliRunner().invoke(cli, ["apply", str(out), "--json"])
    assert applied.exit_code == 0, applied.output
    run = json.loads(applied.stdout)
    assert run["status"] == "completed" and run["plan_hash"] == data["plan_hash"]


def test_the_signature_covers_content_not_layout(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    data = save(config, out)
    # Another indentation and key order is the same plan.
    out.write_text(json.dumps(dict(reversed(list(data.items())))))
    result = commands.apply_plan(config, commands.load_plan_file(out))
    assert result.status == "completed"


def test_a_signed_plan_applies_on_a_server(server_config: Config, server_url: str) -> None:
    make_table(server_url, "signed_ok")
    out = server_config.home / "plan.json"
    data = save(server_config, out, {"type": "quick", "tables": ["signed_ok"]})
    handle = open_target(server_config, "db", read_only=True)
    with handle.engine.connect() as conn:
        assert data["target_identity"] == plan_identity(conn)
    handle.close()
    result = commands.apply_plan(server_config, commands.load_plan_file(out))
    assert result.status == "completed", result.error
    assert rows(server_url, "signed_ok") == 20


def test_a_run_from_a_signed_plan_resumes(
    edit_config: Callable[..., Config], demo_db: Path
) -> None:
    config = edit_config(maintenance={"default_config": {"safety_level": "strict"}})
    out = demo_db.parent / "plan.json"
    save(config, out, {"type": "full", "tables": ["users"]})
    first = commands.apply_plan(config, commands.load_plan_file(out))
    assert first.status == "waiting_approval"
    resumed = commands.resume_run(config, first.run_id, approver=PreApproved())
    assert resumed.status == "completed"


def test_a_null_plan_hash_is_never_taken_for_no_hash() -> None:
    data = {**Plan("maintenance", "demo", "sqlite", {}, ()).to_dict(), "plan_hash": None}
    with pytest.raises(PlanError, match="plan_hash is null"):
        Plan.from_dict(data)


def test_optional_fields_keep_the_hashes_of_stored_plans() -> None:
    old = Plan("maintenance", "demo", "sqlite", {"type": "x"}, (Step("step_0", "t", {}),))
    stored = old.to_dict()
    assert "target_identity" not in stored and "drafted_by" not in stored
    assert Plan.from_dict(stored).hash == old.hash


# --- forgeries: refused before the first step, nothing changed ----------------------------


def _add_purge(data: dict[str, Any]) -> None:
    data["steps"].append(dict(PURGE, id=f"step_{len(data['steps'])}"))


FORGERIES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "plan_hash null",
        lambda d: d.update(plan_hash=None),
        "'plan_hash' must be a string, not null",
    ),
    (
        "purge added, sha256 recomputed",
        lambda d: (_add_purge(d), rehash(d)),
        "does not match its signature: it was changed after it was signed",
    ),
    (
        "table changed, sha256 recomputed",
        lambda d: (d["steps"][1]["params"].update(table="orders"), rehash(d)),
        "does not match its signature",
    ),
    ("signature removed", lambda d: d.pop("signature"), "is not signed"),
    ("signature null", lambda d: d.update(signature=None), "is not signed"),
    (
        "signature value wrong",
        lambda d: d["signature"].update(value="0" * 64),
        "does not match its signature",
    ),
    (
        "signature not hex",
        lambda d: d["signature"].update(value="é"),
        "does not match its signature",
    ),
    (
        "signature algorithm",
        lambda d: d["signature"].update(alg="sha256"),
        "is signed with 'sha256'; aishell signs plans with hmac-sha256",
    ),
    (
        "unknown top-level key",
        lambda d: d.update(approved_by="dba"),
        "unknown key 'approved_by' (expected: format, agent,",
    ),
    (
        "unknown step key",
        lambda d: d["steps"][1].update(sql="DROP TABLE users"),
        "steps[1]: unknown key 'sql'",
    ),
    (
        "unknown signature key",
        lambda d: d["signature"].update(trusted=True),
        "signature: unknown key 'trusted'",
    ),
    ("missing key", lambda d: d.pop("assumptions"), "missing key 'assumptions'"),
    ("missing identity", lambda d: d.pop("target_identity"), "missing key 'target_identity'"),
    ("missing step key", lambda d: d["steps"][0].pop("params"), "steps[0]: missing key 'params'"),
    ("missing key id", lambda d: d["signature"].pop("key_id"), "signature: missing key 'key_id'"),
    ("step not an object", lambda d: d["steps"].append("x"), "] must be an object, not a string"),
    (
        "steps not a list",
        lambda d: d.update(steps={"a": 1}),
        "'steps' must be a list, not an object",
    ),
    ("format not a number", lambda d: d.update(format=True), "'format' must be an integer"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(change, message, id=name) for name, change, message in FORGERIES],
)
def test_a_forged_plan_is_refused_and_nothing_changes(
    config: Config,
    demo_db: Path,
    change: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    out = demo_db.parent / "plan.json"
    data = save(config, out)
    change(data)
    write(out, data)
    before = digest(demo_db)
    line = refused_line(apply_cli(out))
    assert line.startswith(f"Error: Plan file {out}")
    assert message in line
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []


def test_a_plan_from_another_home_is_refused(config: Config, demo_db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    shutil.copytree(config.home / "config", other / "config")
    # The other home's demo target is this very database: only the key differs.
    main = other / "config" / "aishell.yaml"
    settings = yaml.safe_load(main.read_text())
    settings["targets"]["demo"]["url"] = f"sqlite:///{demo_db}"
    main.write_text(yaml.safe_dump(settings))
    there = load_config(home=other)
    out = tmp_path / "theirs.json"
    theirs = save(there, out)
    ours = signing.load_key(config.home)
    assert ours is not None and theirs["signature"]["key_id"] != ours.key_id
    before = digest(demo_db)
    line = refused_line(apply_cli(out))
    assert f"is signed by another key ({theirs['signature']['key_id']}), not this home's" in line
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []
    # And where it was made, it applies.
    assert commands.apply_plan(there, commands.load_plan_file(out)).status == "completed"


def test_a_plan_for_a_home_without_a_key_is_refused(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    save(config, out)
    signing.key_path(config.home).unlink()
    with pytest.raises(PlanError, match="is signed by another key .*this home has no signing key"):
        commands.apply_plan(config, commands.load_plan_file(out))
    assert not signing.key_path(config.home).exists()  # checking makes no key


def test_a_tool_the_catalog_lacks_is_refused(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    data = save(config, out)
    data["steps"][1]["tool"] = "drop_everything"
    resign(config.home, data)  # as if signed where a plugin had that tool
    write(out, data)
    before = digest(demo_db)
    line = refused_line(apply_cli(out))
    assert line == (
        "Error: The plan uses tools the catalog lacks: 'drop_everything' (1 step); the "
        "package or catalog folder that provided them is gone: make a new plan"
    )
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []


def test_a_plan_for_a_target_no_longer_configured_is_refused(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    data = save(config, out)
    data["target"] = "gone"
    resign(config.home, data)
    write(out, data)
    line = refused_line(apply_cli(out))
    assert "The plan is for target 'gone', which is not in" in line


def test_a_target_that_now_points_at_another_database_is_refused(
    config: Config, demo_db: Path, home: Path
) -> None:
    out = home / "plan.json"
    data = save(config, out)
    twin = home / "twin.db"
    shutil.copyfile(demo_db, twin)  # the same tables and rows, another database
    settings = yaml.safe_load((home / "config" / "aishell.yaml").read_text())
    settings["targets"]["demo"]["url"] = f"sqlite:///{twin}"
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(settings))
    before = digest(twin), digest(demo_db)
    line = refused_line(apply_cli(out))
    twin_id = f"sqlite:{twin.stat().st_dev}:{twin.stat().st_ino}"
    assert f"Target 'demo' now points at another database ({twin_id})" in line
    assert f"than the plan was made on ({data['target_identity']})" in line
    assert (digest(twin), digest(demo_db)) == before


def test_a_plan_of_another_dialect_is_refused(
    config: Config, demo_db: Path, home: Path, pg_url: str
) -> None:
    out = home / "plan.json"
    save(config, out)
    settings = yaml.safe_load((home / "config" / "aishell.yaml").read_text())
    settings["targets"]["demo"]["url"] = pg_url
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(settings))
    line = refused_line(apply_cli(out))
    assert "The plan is for sqlite but target 'demo' is postgresql" in line


def test_a_server_target_moved_to_another_database_is_refused(
    server_config: Config, server_url: str
) -> None:
    make_table(server_url, "moved")
    out = server_config.home / "plan.json"
    save(server_config, out, {"type": "quick", "tables": ["moved"]})
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as twin_url:
        make_table(twin_url, "moved")
        config = use_target(server_config.home, twin_url)
        with pytest.raises(PlanError, match="now points at another database") as err:
            commands.apply_plan(config, commands.load_plan_file(out))
        assert str(err.value).count("/") >= 2  # both identities named
        assert rows(twin_url, "moved") == rows(server_url, "moved") == 20
        assert commands.list_runs(config) == []


def test_a_forged_purge_on_a_server_is_refused(server_config: Config, server_url: str) -> None:
    make_table(server_url, "kept")
    out = server_config.home / "plan.json"
    data = save(server_config, out, {"type": "quick", "tables": ["kept"]})
    data["steps"].append(
        {
            "id": f"step_{len(data['steps'])}",
            "tool": "delete_old_records",
            "params": {"table": "kept", "date_column": "created_at", "retention_days": 0},
            "rationale": "",
        }
    )
    rehash(data)
    write(out, data)
    line = refused_line(apply_cli(out))
    assert "does not match its signature" in line
    assert rows(server_url, "kept") == 20
    assert commands.list_runs(server_config) == []


# --- the whole plan is checked before its first step ---------------------------------------


def test_names_the_catalog_lacks_are_all_reported_before_any_step(
    config: Config, demo_db: Path
) -> None:
    # Sixteen steps that would change the file (ANALYZE writes sqlite_stat1), then
    # names the database lacks: none may run.
    steps = [Step(f"step_{i}", "update_table_statistics", {"table": "users"}) for i in range(16)]
    steps[10] = Step("step_10", "update_table_statistics", {"table": "phantom"})
    steps[12] = Step("step_12", "count_table_rows", {"table": "users", "date_column": "born"})
    steps.append(Step("step_16", "update_table_statistics", {"table": "ghost"}))
    plan = Plan("maintenance", "demo", "sqlite", {"type": "quick"}, tuple(steps))
    out = demo_db.parent / "plan.json"
    commands.save_plan(config, plan, out)
    before = digest(demo_db)
    line = refused_line(apply_cli(out))
    assert line == (
        "Error: The plan names what target 'demo' lacks: table 'phantom' (step_10); "
        "column users.born (step_12); table 'ghost' (step_16); nothing was run"
    )
    assert digest(demo_db) == before
    assert commands.list_runs(config) == []


def test_a_reference_is_left_for_its_step_to_check(config: Config, demo_db: Path) -> None:
    plan = Plan(
        "maintenance",
        "demo",
        "sqlite",
        {"type": "quick"},
        (
            Step("step_0", "count_table_rows", {"table": "users"}),
            Step("step_1", "count_table_rows", {"table": "${step_0.output.table}"}),
        ),
    )
    out = demo_db.parent / "plan.json"
    commands.save_plan(config, plan, out)
    saved = commands.load_plan_file(out)
    status = demo_db.stat()
    assert (saved.plan.target_identity or "").startswith(f"sqlite:{status.st_dev}:{status.st_ino}#")
    # Not refused up front: the reference is resolved and checked when step_1 runs.
    result = commands.apply_plan(config, saved)
    assert result.steps[0].status == "succeeded"


# --- the key -----------------------------------------------------------------------------


def test_the_key_is_made_once_with_mode_0600(config: Config, demo_db: Path) -> None:
    path = signing.key_path(config.home)
    assert not path.exists()
    save(config, demo_db.parent / "plan.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    first = path.read_text()
    save(config, demo_db.parent / "again.json")
    assert path.read_text() == first


def test_processes_racing_to_make_the_key_share_one(tmp_path: Path) -> None:
    ids: list[str] = []

    def make() -> None:
        key = signing.load_key(tmp_path)
        assert key is not None
        ids.append(key.key_id)

    threads = [threading.Thread(target=make) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 16 and len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [signing.KEY_FILE]  # no temporaries left


def test_a_key_readable_by_others_is_refused(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    save(config, out)
    path = signing.key_path(config.home)
    os.chmod(path, 0o644)
    line = refused_line(apply_cli(out))
    assert line == (
        f"Error: Signing key {path} is readable by group or others (mode 0644); "
        f"run `chmod 600 {path}`"
    )
    made = CliRunner().invoke(cli, ["plan", "maintenance", "--out", str(out)])
    assert refused_line(made) == line
    assert commands.list_runs(config) == []
    os.chmod(path, 0o600)
    assert commands.apply_plan(config, commands.load_plan_file(out)).status == "completed"


def test_a_damaged_key_is_refused(config: Config, demo_db: Path) -> None:
    out = demo_db.parent / "plan.json"
    save(config, out)
    signing.key_path(config.home).write_text("not a key\n")
    with pytest.raises(PlanError, match="is damaged; run `aishell plan rotate-key`"):
        commands.apply_plan(config, commands.load_plan_file(out))


def test_rotate_key_refuses_plans_signed_before(config: Config, demo_db: Path) -> None:
    old = demo_db.parent / "old.json"
    data = save(config, old)
    rotated = CliRunner().invoke(cli, ["plan", "rotate-key", "--json"])
    assert rotated.exit_code == 0, rotated.output
    info = json.loads(rotated.stdout)
    assert info["previous_key_id"] == data["signature"]["key_id"] != info["key_id"]
    path = signing.key_path(config.home)
    assert info["path"] == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in config.home.iterdir() if p.name.startswith(".plan-")] == []
    line = refused_line(apply_cli(old))
    assert f"is signed by another key ({data['signature']['key_id']})" in line
    assert f"not this home's ({info['key_id']})" in line
    new = demo_db.parent / "new.json"
    assert save(config, new)["signature"]["key_id"] == info["key_id"]
    assert commands.apply_plan(config, commands.load_plan_file(new)).status == "completed"


def test_rotate_key_in_words(config: Config) -> None:
    first = CliRunner().invoke(cli, ["plan", "rotate-key"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("New plan-signing key ") and "refused" not in first.output
    second = CliRunner().invoke(cli, ["plan", "rotate-key"])
    assert "are refused from now on." in second.output


# --- servers ------------------------------------------------------------------------------


def make_table(url: str, name: str) -> None:
    eng = engine(url)
    with eng.begin() as conn:
        conn.execute(
            text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, created_at VARCHAR(30) NOT NULL)")
        )
        conn.execute(
            text(f"INSERT INTO {name} VALUES (:i, '2000-01-01 00:00:00')"),
            [{"i": i} for i in range(20)],
        )
    eng.dispose()


def rows(url: str, name: str) -> int:
    eng = engine(url)
    with eng.connect() as conn:
        count = int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())
    eng.dispose()
    return count


def test_rotate_key_is_refused_while_a_run_is_not_over(config: Config, demo_db: Path) -> None:
    """A run waiting for approval, signed with the current key, could no longer be
    approved or resumed once it is replaced: refused, naming it, unless --force; and
    the runs stored before are said to be no longer shown."""
    from aishell import commands

    waiting = commands.run_job(config, "log_cleanup", {"table": "app_logs", "retention_days": 3})
    assert waiting.status == "waiting_approval", waiting.error
    refused = CliRunner().invoke(cli, ["plan", "rotate-key"])
    assert refused.exit_code == 2, refused.output
    assert f"1 run(s) are not over ({waiting.run_id})" in refused.output
    assert "pass --force" in refused.output
    forced = CliRunner().invoke(cli, ["plan", "rotate-key", "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["runs_no_longer_readable"] == 1
