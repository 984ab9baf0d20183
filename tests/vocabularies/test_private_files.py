"""Private by default: every folder aishell makes is 0700 and every file 0600 whatever
the umask (a backup with its validation, a purge's archive file, a saved plan, the
metrics textfile, retention, a restore), 0750/0640 when files.group_readable says so,
and `doctor` names a backup file left more open, with the chmod that closes it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from aishell import commands, files
from aishell.config.models import load_config
from tests.helpers import use_target
from tests.services import engine
from tests.vocabularies.test_file_safety import in_process

# Each command is a child process under this umask: the modes are aishell's, not its.
OPEN_UMASK = 0o000
TIMEOUT = 300  # a hang detector for one command, far above its few seconds

RESTORE = """
import sys
from aishell import commands
from aishell.policy.approvers import Prompting
from aishell.config.models import load_config

config = load_config()
done = commands.restore(config, int(sys.argv[1]), sys.argv[2], replace=True,
                        approver=Prompting(ask=lambda request: "yes"))
print(done.status, done.error)
sys.exit(0 if done.status == "completed" else 1)
"""


def aishell(*argv: str, umask: int = OPEN_UMASK) -> str:
    """Run an aishell command line in a child process under `umask`; its output."""
    done = subprocess.run(
        [sys.executable, "-m", "aishell", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        umask=umask,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def restore(backup_id: int, to: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RESTORE, str(backup_id), to],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        umask=OPEN_UMASK,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def everything(*roots: Path) -> dict[Path, int]:
    """Every folder and file under `roots` (themselves too), with its permission bits."""
    found: dict[Path, int] = {}
    for root in roots:
        if not root.exists():
            continue
        found[root] = stat.S_IMODE(root.lstat().st_mode)
        for path in root.rglob("*"):
            found[path] = stat.S_IMODE(path.lstat().st_mode)
    return found


def made_since(before: dict[Path, int], *roots: Path) -> dict[Path, int]:
    return {p: m for p, m in everything(*roots).items() if p not in before}


def assert_private(made: dict[Path, int], folder: int = 0o700, file: int = 0o600) -> None:
    assert made, "nothing was made"
    wrong = {str(p): f"{m:04o}" for p, m in made.items() if m != (folder if p.is_dir() else file)}
    assert not wrong, wrong


def set_files(home: Path, group_readable: bool) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["files"] = {"group_readable": group_readable}
    path.write_text(yaml.safe_dump(data))


def test_everything_aishell_writes_on_sqlite_is_private_under_an_open_umask(
    demo_db: Path, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("out")
    before = everything(home, out)

    aishell("run", "backup", "--type", "full", "--yes")  # dump, manifest, validation copy
    aishell(
        "run", "log-cleanup", "--table", "app_logs", "--retention-days", "150",
        "--archive-to", f"file:{out / 'archive' / 'logs.jsonl'}", "--yes",
    )  # fmt: skip
    aishell("plan", "maintenance", "--type", "full", "--out", str(out / "plan.json"))
    aishell("metrics", "--textfile", str(out / "metrics.prom"))
    aishell("run", "backup", "--type", "full", "--cleanup", "--retention-days", "0",
            "--keep-last", "1", "--yes")  # fmt: skip
    made = made_since(before, home, out)
    wanted = [out / "archive", out / "archive" / "logs.jsonl", out / "plan.json"]
    wanted += [out / "metrics.prom", home / "backups", home / "backups" / "demo"]
    for expected in wanted:
        assert expected in made, sorted(map(str, made))
    dumps = [p for p in made if p.parent == home / "backups" / "demo"]
    assert any(p.name.endswith(".manifest.json") for p in dumps), dumps
    assert_private(made)

    # A restore into another target: whatever it writes is private too.
    (home / "restored.db").touch(mode=0o600)
    with_restored = yaml.safe_load((home / "config" / "aishell.yaml").read_text())
    with_restored["targets"]["restored"] = {"url": "sqlite:///restored.db"}
    (home / "config" / "aishell.yaml").write_text(yaml.safe_dump(with_restored))
    before = everything(home, out)
    newest = commands.list_backups(load_config(home=home))[0]
    restore(newest["id"], "restored")
    assert_private(made_since(before, home, out) | {home / "restored.db": 0o600})
    assert stat.S_IMODE((home / "restored.db").stat().st_mode) == 0o600
    # Retention and the restore left every backup as private as it was made.
    assert_private(everything(home / "backups"))


def test_group_readable_opens_backups_plans_and_archives_to_the_group_only(
    demo_db: Path, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    set_files(home, group_readable=True)
    shutil.rmtree(home / "cache")  # the cache as a home's first command makes it
    out = tmp_path_factory.mktemp("out")
    before = everything(home, out)
    aishell("run", "backup", "--type", "full", "--yes")
    aishell(
        "run", "log-cleanup", "--table", "app_logs", "--retention-days", "150",
        "--archive-to", f"file:{out / 'archive' / 'logs.jsonl'}", "--yes",
    )  # fmt: skip
    aishell("plan", "maintenance", "--type", "full", "--out", str(out / "plan.json"))
    aishell("metrics", "--textfile", str(out / "metrics.prom"))
    made = made_since(before, home, out)
    cache = home / "cache"
    assert_private(
        {p: m for p, m in made.items() if p.parent != home and not p.is_relative_to(cache)},
        folder=0o750,
        file=0o640,
    )
    # The state store, the plan-signing key beside it, and the cache of what the catalog's
    # load judged (used only from a file no one else can write) stay their owner's alone.
    state = {p: m for p, m in made.items() if p.parent == home and p.is_file()}
    assert home / "state.db" in state, sorted(map(str, state))
    assert_private(state)
    kept = {p: m for p, m in made.items() if p.is_relative_to(cache)}
    assert cache / "verdicts.json" in kept, sorted(map(str, made))
    assert_private(kept)
    # Under the usual umask the group gets what config says, no more.
    before = everything(home)
    aishell("run", "backup", "--type", "full", "--yes", umask=0o022)
    assert_private(
        {p: m for p, m in made_since(before, home).items() if p.is_relative_to(home / "backups")},
        folder=0o750,
        file=0o640,
    )


@pytest.mark.parametrize("url_fixture", ["pg_url", "mysql_url"])
def test_a_server_backup_with_its_validation_is_private_under_an_open_umask(
    home: Path, url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(url_fixture)
    use_target(home, url)
    with engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE private_rows (id INTEGER PRIMARY KEY, v VARCHAR(40))"))
        conn.execute(text("INSERT INTO private_rows VALUES (1, 'secret'), (2, 'more')"))
    before = everything(home)
    aishell("run", "backup", "--type", "full", "--yes")
    made = made_since(before, home)
    assert any(p.name.endswith(".manifest.json") for p in made), sorted(map(str, made))
    assert_private(made)
    # umask 0o022 as well: still not the group's or the world's.
    before = everything(home)
    aishell("run", "backup", "--type", "full", "--yes", umask=0o022)
    assert_private({p: m for p, m in made_since(before, home).items() if "backups" in p.parts})


def test_doctor_names_a_backup_file_left_open_and_the_chmod_that_closes_it(
    demo_db: Path, home: Path
) -> None:
    # The backup is made here; the modes doctor judges are the ones this test sets.
    made = in_process("run", "backup", "--type", "full", "--yes")
    assert made.returncode == 0, made.stderr
    [dump] = [p for p in (home / "backups" / "demo").iterdir() if p.suffix == ".sqlite"]
    dump.chmod(0o644)
    (home / "backups" / "demo").chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "aishell", "doctor"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    report = done.stdout + done.stderr
    assert f"{dump} is mode 0644" in report, report
    assert f"fix: chmod 600 {dump}" in report, report
    assert f"fix: chmod 700 {home / 'backups' / 'demo'}" in report, report
    assert done.returncode != 0, report
    # The fix it gives is the fix: run it, and doctor no longer names them.
    os.chmod(dump, 0o600)
    os.chmod(home / "backups" / "demo", 0o700)
    again = in_process("doctor")
    assert str(dump) not in again.stdout + again.stderr


def test_doctor_allows_the_group_what_config_gives_it_and_no_more(
    demo_db: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The commands run here, and loading this config makes files group-readable for
    # the rest of the process: as it was, for the tests after this one.
    monkeypatch.setattr(files, "_group_readable", files._group_readable)
    set_files(home, group_readable=True)
    made = in_process("run", "backup", "--type", "full", "--yes")
    assert made.returncode == 0, made.stderr
    [dump] = [p for p in (home / "backups" / "demo").iterdir() if p.suffix == ".sqlite"]
    ok = in_process("doctor")
    assert str(dump) not in ok.stdout + ok.stderr
    dump.chmod(0o664)  # the group may write: more than read
    done = in_process("doctor")
    assert f"fix: chmod 640 {dump}" in done.stdout + done.stderr, done.stdout + done.stderr


def test_group_readable_must_be_true_or_false(home: Path) -> None:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["files"] = {"group_readable": "sometimes"}
    path.write_text(yaml.safe_dump(data))
    done = in_process("backups", "list")
    assert done.returncode != 0
    assert "files.group_readable" in done.stderr or "group_readable" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_doctor_judges_a_linked_backup_folder_by_the_folder_it_leads_to(
    demo_db: Path, home: Path, tmp_path: Path
) -> None:
    """Backups written through a link to a folder others may write to can be replaced
    or renamed by them: the folder the link leads to is judged, and its chmod given."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (home / "backups").mkdir(exist_ok=True)
    (home / "backups" / "demo").symlink_to(shared, target_is_directory=True)
    done = in_process("doctor")
    report = done.stdout + done.stderr
    assert f"{home / 'backups' / 'demo'} (a link to {shared}) is mode 0777" in report, report
    assert f"fix: chmod 700 {shared}" in report, report
    shared.chmod(0o700)
    again = in_process("doctor")
    assert str(shared) not in again.stdout + again.stderr
