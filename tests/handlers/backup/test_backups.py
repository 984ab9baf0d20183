"""Full backups on SQLite, PostgreSQL and MariaDB: taken, validated, restored, and
refused when damaged."""

import contextlib
import json
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from aishell import commands
from aishell.agents.backup import BackupAgent
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import UsageError
from aishell.policy.approvers import PreApproved
from tests.handlers.backup.recorded import resealed
from tests.helpers import one_step_plan, tmpfs
from tests.services import engine

HANG = 120  # seconds: a hang detector, never a timing assertion


def fill_disk_when(ready, disk: Path) -> threading.Thread:
    """A thread that fills `disk` (a small tmpfs) as soon as ready() is true."""

    def fill() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready():
                free = shutil.disk_usage(disk).free
                with contextlib.suppress(OSError):  # fill it, as far as it goes
                    (disk / "filler").write_bytes(b"\0" * max(free - 4096, 0))
                return
            time.sleep(0.0005)

    thread = threading.Thread(target=fill)
    thread.start()
    return thread


def test_sqlite_backup_validate_restore_round_trip(config, demo_db, home):
    result = commands.run_job(config, "backup", {"type": "full"})
    assert result.status == "completed", result.error
    backup = Path(result.steps[1].output["backup_path"])
    assert backup.is_file() and backup.parent == home / "backups" / "demo"
    manifest = json.loads(backup.with_name(backup.name + ".manifest.json").read_text())
    assert manifest["tables"]["app_logs"] == 5400 and manifest["sha256"]
    assert result.steps[2].output["ok"] and result.steps[2].output["tables_compared"] == 4
    assert result.steps[2].output["checksums_compared"] == 4
    [listed] = commands.list_backups(config)
    assert listed["verified_at"] and listed["sha256"] == manifest["sha256"]

    # Change the data, then restore the backup into a new, empty target.
    conn = sqlite3.connect(demo_db)
    conn.execute("DELETE FROM orders")
    conn.commit()
    conn.close()
    sqlite3.connect(home / "restored.db").close()
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["restored"] = {"url": "sqlite:///restored.db"}
    path.write_text(yaml.safe_dump(data))
    config = load_config(home=home)
    restored = commands.restore(config, listed["id"], "restored", approver=PreApproved())
    # Critical: a flag never approves it.
    assert restored.status == "waiting_approval"
    from aishell.policy.approvers import Prompting

    restored = commands.restore(
        config, listed["id"], "restored", approver=Prompting(ask=lambda r: "yes")
    )
    assert restored.status == "completed", restored.error
    original = sqlite3.connect(backup)
    copy = sqlite3.connect(home / "restored.db")
    for table in ("users", "orders", "products", "app_logs"):
        assert (
            original.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            == copy.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        )


def flip(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.25:
        del data[rng.randrange(len(data) // 2, len(data)) :]  # truncation
    else:
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def test_every_injected_corruption_fails_validation(config, demo_db):
    result = commands.run_job(config, "backup", {"type": "full", "verify": False})
    good = Path(result.steps[1].output["backup_path"])
    pristine = good.read_bytes()
    rng = random.Random(7)
    truncated = 0
    # Eight corruptions, bit flips and a truncation: whatever changed and wherever, the
    # file's sha256 no longer matches its manifest's, and that is what each run meets
    # (twenty runs took that one path twenty times).
    for i in range(8):
        good.write_bytes(pristine)
        flip(good, rng)
        truncated += good.stat().st_size < len(pristine)
        plan = one_step_plan(
            "backup", "demo", "sqlite", "validate_backup", {"backup_path": str(good)}
        )
        checked = commands.apply_plan(config, plan)
        assert checked.status == "failed", i
        assert "failed validation" in checked.steps[0].error
    assert 0 < truncated < 8  # both kinds were injected
    [listed] = commands.list_backups(config)
    assert listed["verified_at"] is None
    assert "does not match the manifest" in " ".join(listed["verification"]["problems"])


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MiB tmpfs: a real file system that fills up."""
    with tmpfs(tmp_path / "small", "40m") as mount_point:
        yield mount_point


def test_a_disk_that_fills_during_the_backup_leaves_nothing_marked_good(
    edit_config, home, small_disk
):
    from aishell.targets.demo import create_demo

    create_demo(home / "demo.db", log_rows=100_000, users=2_000, orders=20_000)
    config = edit_config({"backup_dir": str(small_disk)})

    filler = fill_disk_when(lambda: bool(list(small_disk.rglob("*.partial"))), small_disk)
    result = commands.run_job(config, "backup", {"type": "full"})
    filler.join()
    assert (small_disk / "filler").exists(), "the copy never started"
    assert result.status == "failed", [s.status for s in result.steps]
    assert result.steps[1].status == "failed"
    assert "full" in result.steps[1].error.lower(), result.steps[1].error
    assert commands.list_backups(config) == []
    left = [p.name for p in small_disk.rglob("*") if p.is_file() and p.name != "filler"]
    assert left == []


def test_restore_refuses_an_unverified_backup(config, demo_db):
    result = commands.run_job(config, "backup", {"type": "full", "verify": False})
    [listed] = commands.list_backups(config)
    assert result.status == "completed" and listed["verified_at"] is None
    with pytest.raises(UsageError, match="never proven restorable"):
        commands.restore(config, listed["id"], "demo")


def test_a_restore_runs_the_plan_the_backup_agent_makes(config, demo_db):
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    [listed] = commands.list_backups(config)
    # Critical: waiting for a person's yes, nothing restored, the plan stored.
    result = commands.restore(config, listed["id"], "demo", replace=True, lock_wait=7.0)
    assert result.status == "waiting_approval"
    job, steps = BackupAgent().plan_restore(listed, "demo", replace=True, lock_wait=7.0)
    assert [(s.tool, s.params, s.rationale) for s in result.steps] == [
        (s.tool, s.params, s.rationale) for s in steps
    ]
    assert steps[0].params == {
        "backup_path": listed["path"],
        "replace": True,
        "lock_wait_seconds": 7.0,
        "sha256": listed["sha256"],
    }
    assert commands.show_run(config, result.run_id)["job"] == job
    assert job == {"type": "restore", "backup_id": listed["id"]}


def test_backups_cli(demo_db, home):
    runner = CliRunner()
    made = runner.invoke(cli, ["run", "backup", "--type", "full", "--json"])
    assert made.exit_code == 0, made.output
    listed = json.loads(runner.invoke(cli, ["backups", "list", "--json"]).stdout)["backups"]
    assert len(listed) == 1 and listed[0]["verified_at"]
    shown = runner.invoke(cli, ["backups", "show", str(listed[0]["id"])])
    assert "verified" in shown.output and "app_logs" in shown.output
    assert runner.invoke(cli, ["backups", "show", "999"]).exit_code == 2


def populate(url: str) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
        conn.execute(
            text(
                'CREATE TABLE "odd name" (id INTEGER PRIMARY KEY)'
                if url.startswith("postgresql")
                else "CREATE TABLE `odd name` (id INTEGER PRIMARY KEY)"
            )
        )
        # One executemany for the 200 rows, not 200 round trips.
        rows = [{"i": i, "v": f"value {i}"} for i in range(200)]
        conn.execute(text("INSERT INTO a VALUES (:i, :v)"), rows)


def test_server_backup_validates_and_restores(server_config, server_url, home):
    populate(server_url)
    result = commands.run_job(server_config, "backup", {"type": "full"})
    assert result.status == "completed", result.error
    out = result.steps[1].output
    assert out["tables"] == 2 and out["rows"] == 200
    assert result.steps[2].output["tables_compared"] == 2
    assert result.steps[2].output["checksums_compared"] == 2
    quick = commands.run_job(server_config, "backup", {"type": "full", "quick": True})
    assert quick.status == "completed", quick.error
    # Change the data after the backups: a restore brings back what they hold.
    with engine(server_url).connect() as conn:
        conn.execute(text("DELETE FROM a WHERE id < 100"))
    # Restore into a fresh database on the same server, then compare.
    from tests.services import scratch_mysql, scratch_postgresql

    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as other:
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        data["targets"]["copy"] = {"url": other}
        path.write_text(yaml.safe_dump(data))
        config = load_config(home=home)
        backup_id = commands.list_backups(config, "db")[-1]["id"]
        from aishell.policy.approvers import Prompting

        restored = commands.restore(
            config, backup_id, "copy", approver=Prompting(ask=lambda r: "yes")
        )
        assert restored.status == "completed", restored.error
        with engine(other).connect() as conn:
            rows = conn.execute(text("SELECT id, v FROM a ORDER BY id")).all()
        assert rows == [(i, f"value {i}") for i in range(200)]


def test_retention_keeps_what_it_must(config, home):
    import sqlite3 as sq

    # Retention reads the catalog, not what the backups hold: a one-table database at
    # the demo target's path, where the demo's 11 MB would be copied five times.
    small = sq.connect(home / "demo.db")
    small.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    small.commit()
    small.close()
    ids = []
    for _ in range(5):
        ids.append(commands.run_job(config, "backup", {"type": "full", "verify": False}).run_id)
    # Make them old, and only the second oldest verified.
    conn = sq.connect(home / "state.db")
    rows = conn.execute("SELECT id FROM backups ORDER BY id").fetchall()
    for n, (backup_id,) in enumerate(rows):
        conn.execute(
            "UPDATE backups SET created_at = ? WHERE id = ?",
            (f"2026-01-0{n + 1}T00:00:00.000+00:00", backup_id),
        )
    conn.execute("UPDATE backups SET verified_at = created_at WHERE id = ?", (rows[1][0],))
    conn.commit()
    conn.close()
    resealed(home)  # as if the run had recorded them so
    plan = one_step_plan(
        "backup", "demo", "sqlite", "cleanup_old_backups", {"retention_days": 7, "keep_last": 2}
    )
    preview = commands.apply_plan(config, plan, dry_run=True)
    assert preview.steps[0].status == "previewed"
    listed = commands.list_backups(config)
    by_id = {b["id"]: b for b in listed}
    would = preview.steps[0].estimate["backups_to_delete"]
    assert sorted(would) == sorted([by_id[rows[0][0]]["path"], by_id[rows[2][0]]["path"]])
    assert "the newest verified backup" in preview.steps[0].estimate["kept"][str(rows[1][0])]
    # High risk: approval at moderate.
    from aishell.policy.approvers import Prompting

    done = commands.apply_plan(config, plan, approver=Prompting(ask=lambda r: "yes"))
    assert done.status == "completed", done.error
    remaining = {b["id"] for b in commands.list_backups(config)}
    assert remaining == {rows[1][0], rows[3][0], rows[4][0]}
    assert all(Path(by_id[i]["path"]).exists() for i in remaining)
    assert not Path(by_id[rows[0][0]]["path"]).exists()


def test_restore_drill_checks_the_newest_backup(config, demo_db):
    commands.run_job(config, "backup", {"type": "full", "verify": False})
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "completed", drill.error
    assert drill.steps[1].output["tables_compared"] == 4
    freshness = commands.backup_catalog(config)["newest_restorable"]
    assert freshness["demo"]["age_hours"] < 1


def test_a_drill_without_any_backup_says_so(config, demo_db):
    drill = commands.run_job(config, "backup", {"type": "drill"})
    assert drill.status == "failed"
    assert "has no backup on disk" in drill.steps[0].error


def test_schema_comparison_ignores_the_restrict_tokens():
    from aishell.handlers.backup.validate import schema_lines

    one = "\\restrict AAA\nCREATE TABLE a (id int);\n-- comment\n\\unrestrict AAA\n"
    two = "\\restrict BBB\n\nCREATE TABLE a (id int);\n\\unrestrict BBB\n"
    assert schema_lines(one) == schema_lines(two) == ["CREATE TABLE a (id int);"]


def dump_into_a_disk_filled_while_it_waits(config: Any, url: str, disk: Path) -> Any:
    """A backup whose dump tool has opened its file and waits for a lock on the table
    `big` when `disk` fills up: after the free-space check, before the rows."""
    pg = url.startswith("postgresql")
    if pg:  # pg_dump locks every table it dumps; another session's view of it waits
        lock, unlock = "LOCK TABLE big IN ACCESS EXCLUSIVE MODE", "ROLLBACK"
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'aishell pg_dump %' AND wait_event_type = 'Lock'"
        )
    else:
        lock, unlock = "LOCK TABLES big WRITE", "UNLOCK TABLES"
        waiting = text(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
            "AND STATE LIKE 'Waiting for table%'"
        )
    ran: list[Any] = []
    with engine(url).connect() as locker, engine(url).connect() as watcher:
        if pg:
            locker.execute(text("BEGIN"))
        locker.execute(text(lock))
        job = threading.Thread(
            target=lambda: ran.append(commands.run_job(config, "backup", {"type": "full"}))
        )
        job.start()
        deadline = time.monotonic() + HANG
        while not (list(disk.rglob("*.partial")) and watcher.execute(waiting).scalar()):
            assert job.is_alive() and time.monotonic() < deadline, "the dump never waited"
            time.sleep(0.01)
        free = shutil.disk_usage(disk).free
        with contextlib.suppress(OSError):  # fill it, as far as it goes
            (disk / "filler").write_bytes(b"\0" * max(free - 4096, 0))
        locker.execute(text(unlock))
    job.join(HANG)
    [result] = ran
    return result


def test_a_dump_that_hits_a_full_disk_leaves_nothing_marked_good(
    server_config, server_url, home, tmp_path
):
    # 20,000 rows (2 to 3 MB): the free-space check passes on the 32 MiB disk, and what
    # the dump writes once the lock is let go is far more than the 4 KiB left free.
    with tmpfs(tmp_path / "small", "32m") as mount_point:
        pg = server_url.startswith("postgresql")
        with engine(server_url).connect() as conn:
            conn.execute(text("CREATE TABLE big (id INTEGER PRIMARY KEY, body VARCHAR(200))"))
            if pg:
                conn.execute(
                    text(
                        "INSERT INTO big SELECT g, md5(g::text) || md5(g::text) "
                        "FROM generate_series(1, 20000) g"
                    )
                )
            else:
                conn.execute(text("SET SESSION max_recursive_iterations = 100000"))
                conn.execute(
                    text(
                        "INSERT INTO big WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL "
                        "SELECT n + 1 FROM g WHERE n < 20000) "
                        "SELECT n, CONCAT(MD5(n), MD5(n)) FROM g"
                    )
                )
        path = home / "config" / "aishell.yaml"
        data = yaml.safe_load(path.read_text())
        data["backup_dir"] = str(mount_point)
        path.write_text(yaml.safe_dump(data))
        config = load_config(home=home)

        result = dump_into_a_disk_filled_while_it_waits(config, server_url, mount_point)
        assert (mount_point / "filler").exists(), "the dump never started"
        assert result.status == "failed", [s.status for s in result.steps]
        assert "No space left on device" in result.steps[1].error, result.steps[1].error
        assert commands.list_backups(config) == []
        left = [p.name for p in mount_point.rglob("*") if p.is_file() and p.name != "filler"]
        assert left == []


def test_backup_cli_drill_and_restore_behind_approval(demo_db, home):
    runner = CliRunner()
    assert runner.invoke(cli, ["run", "backup"]).exit_code == 0
    drill = runner.invoke(cli, ["run", "backup", "--type", "drill", "--json"])
    assert drill.exit_code == 0, drill.output
    assert json.loads(drill.stdout)["steps"][1]["output"]["ok"] is True
    # Critical: --yes does not approve a restore; the run waits for a person.
    waiting = runner.invoke(cli, ["restore", "1", "--to", "demo", "--replace", "--yes"])
    assert waiting.exit_code == 3 and "aishell approve" in waiting.output


def restore_target(home, name, url):
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = {"url": url}
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_sqlite_incremental_chain_restores_the_state_at_the_incremental(config, demo_db, home):
    from aishell.policy.approvers import Prompting

    orphan = commands.run_job(config, "backup", {"type": "incremental"})
    assert orphan.status == "failed"  # nothing verified to chain from yet
    assert "has no verified backup on disk" in orphan.steps[0].error
    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    conn = sqlite3.connect(demo_db)
    conn.execute("UPDATE products SET price_cents = price_cents + 1 WHERE id < 10")
    conn.execute("CREATE TABLE coupons (code TEXT PRIMARY KEY, cents INTEGER)")
    conn.execute("INSERT INTO coupons VALUES ('SPRING', 500)")
    conn.commit()
    conn.close()
    first = commands.run_job(config, "backup", {"type": "incremental"})
    assert first.status == "completed", first.error
    assert first.steps[1].output["changed_tables"] == ["coupons", "products"]
    assert first.steps[2].output["chain"][0].startswith("demo-full-")
    conn = sqlite3.connect(demo_db)
    conn.execute("DROP TABLE coupons")
    conn.execute("DELETE FROM users WHERE id % 7 = 0")
    conn.commit()
    expected = {
        t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        for t in ("users", "orders", "products", "app_logs")
    }
    conn.close()
    second = commands.run_job(config, "backup", {"type": "incremental"})
    assert second.status == "completed", second.error
    assert second.steps[1].output["changed_tables"] == ["users"]
    assert len(second.steps[2].output["chain"]) == 3
    newest = commands.list_backups(config)[0]
    assert newest["kind"] == "incremental" and newest["manifest"]["dropped"] == ["coupons"]

    sqlite3.connect(home / "restored.db").close()
    config = restore_target(home, "restored", "sqlite:///restored.db")
    done = commands.restore(
        config, newest["id"], "restored", approver=Prompting(ask=lambda r: "yes")
    )
    assert done.status == "completed", done.error
    copy = sqlite3.connect(home / "restored.db")
    tables = {r[0] for r in copy.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert tables == set(expected)
    for table, rows in expected.items():
        assert copy.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() == rows


def test_server_incremental_chain(server_config, server_url, home):
    from aishell.policy.approvers import Prompting
    from tests.services import scratch_mysql, scratch_postgresql

    populate(server_url)
    assert commands.run_job(server_config, "backup", {"type": "full"}).status == "completed"
    with engine(server_url).connect() as conn:
        conn.execute(text("UPDATE a SET v = 'changed' WHERE id = 5"))
        conn.execute(text("CREATE TABLE b (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO b VALUES (1), (2)"))
    inc = commands.run_job(server_config, "backup", {"type": "incremental"})
    assert inc.status == "completed", inc.error
    # On PostgreSQL a new table changes the schema: the run takes the whole database.
    whole = server_url.startswith("postgresql")
    assert inc.steps[1].output["changed_tables"] == ["a", "b", *(["odd name"] if whole else [])]
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as other:
        config = restore_target(home, "copy", other)
        newest = commands.list_backups(config, "db")[0]
        done = commands.restore(
            config, newest["id"], "copy", approver=Prompting(ask=lambda r: "yes")
        )
        assert done.status == "completed", done.error
        with engine(other).connect() as conn:
            assert conn.execute(text("SELECT v FROM a WHERE id = 5")).scalar() == "changed"
            assert conn.execute(text("SELECT count(*) FROM a")).scalar() == 200
            assert conn.execute(text("SELECT count(*) FROM b")).scalar() == 2


def test_retention_keeps_the_parents_of_a_kept_incremental(config, demo_db, home):
    from aishell.policy.approvers import Prompting

    assert commands.run_job(config, "backup", {"type": "full"}).status == "completed"
    conn = sqlite3.connect(demo_db)
    conn.execute("DELETE FROM products WHERE id = 1")
    conn.commit()
    conn.close()
    assert commands.run_job(config, "backup", {"type": "incremental"}).status == "completed"
    conn = sqlite3.connect(home / "state.db")
    conn.execute(
        "UPDATE backups SET created_at = '2026-01-01T00:00:00.000+00:00' WHERE kind = 'full'"
    )
    conn.commit()
    conn.close()
    resealed(home)  # as if the full one had been taken then
    plan = one_step_plan(
        "backup", "demo", "sqlite", "cleanup_old_backups", {"retention_days": 0, "keep_last": 1}
    )
    done = commands.apply_plan(config, plan, approver=Prompting(ask=lambda r: "yes"))
    assert done.status == "completed", done.error
    assert done.steps[0].output["deleted_backups"] == []
    reasons = {k["why"] for k in done.steps[0].output["kept"]}
    assert any(r.startswith("a kept backup depends on it") for r in reasons)
    assert len(commands.list_backups(config)) == 2
