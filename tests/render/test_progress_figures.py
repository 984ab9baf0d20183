"""Progress of long steps: backups, validations and restores report bytes done, of how
many, and how fast, a few times a second at most, whatever the size of the dump; the
display shows them (and a purge's rows) as a bar, and nothing at all when quiet."""

from __future__ import annotations

import io
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from sqlalchemy import text

from aishell import commands
from aishell.config.models import Config, load_config
from aishell.executor import StepResult
from aishell.handlers.backup.reporting import REPORTS_PER_SECOND, ByteProgress
from aishell.policy.approvers import Prompting
from aishell.render.progress import SPINNER_AFTER, StepProgress
from tests.helpers import use_target
from tests.services import engine, scratch_mysql, scratch_postgresql


class Figures:
    """An observer that keeps the progress figures each tool reported."""

    def __init__(self) -> None:
        self.by_tool: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def step_started(self, step: StepResult, total: int) -> None:
        pass

    def step_finished(self, step: StepResult, total: int) -> None:
        pass

    def step_progress(self, step: StepResult, figures: dict[str, Any]) -> None:
        self.by_tool[step.tool].append(dict(figures))


def _bytes_of(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The last figures, once checked to be byte figures that never go back."""
    assert figures, "no progress figures were reported"
    done = [f["bytes_done"] for f in figures]
    assert done == sorted(done)
    return figures[-1]


def _populate(url: str, rows: int) -> None:
    with engine(url).connect() as conn:
        conn.execute(text("CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(60))"))
        conn.execute(
            text("INSERT INTO a VALUES (:i, :v)"),
            [{"i": i, "v": f"value {i} of a table that is backed up"} for i in range(rows)],
        )
        # The estimate reads the sizes the statistics keep.
        conn.execute(text("ANALYZE a" if url.startswith("postgresql") else "ANALYZE TABLE a"))


def _with_target(home: Path, name: str, url: str) -> Config:
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"][name] = {"url": url}
    path.write_text(yaml.safe_dump(data))
    return load_config(home=home)


def test_a_server_backup_its_validation_and_a_restore_report_bytes(
    server_config: Config, server_url: str, home: Path
) -> None:
    _populate(server_url, 2_000)
    seen = Figures()
    result = commands.run_job(server_config, "backup", {"type": "full"}, observer=seen)
    assert result.status == "completed", result.error
    size = result.steps[1].output["size_bytes"]
    # The dump: bytes so far, of the tables' size read once before it began.
    dumped = _bytes_of(seen.by_tool["backup_database_full"])
    assert dumped["bytes_done"] > 0 and dumped["bytes_total"] > 0
    assert dumped["bytes_per_second"] > 0
    # The validation reads the file: all of it, of its size.
    validated = _bytes_of(seen.by_tool["validate_backup"])
    assert validated["bytes_done"] == validated["bytes_total"] == size
    scratch = scratch_postgresql if server_url.startswith("postgresql") else scratch_mysql
    with scratch() as other:
        config = _with_target(home, "copy", other)
        backup_id = commands.list_backups(config, "db")[-1]["id"]
        restoring = Figures()
        restored = commands.restore(
            config, backup_id, "copy", approver=Prompting(ask=lambda r: "yes"), observer=restoring
        )
        assert restored.status == "completed", restored.error
    read = _bytes_of(restoring.by_tool["restore_backup"])
    assert read["bytes_done"] == read["bytes_total"] == size


def test_a_sqlite_backup_and_its_validation_report_bytes(config: Config, demo_db: Path) -> None:
    seen = Figures()
    result = commands.run_job(config, "backup", {"type": "full"}, observer=seen)
    assert result.status == "completed", result.error
    size = result.steps[1].output["size_bytes"]
    # The copy's size as VACUUM INTO wrote it, of the database's.
    copied = _bytes_of(seen.by_tool["backup_database_full"])
    assert copied["bytes_done"] == size
    assert copied["bytes_total"] == demo_db.stat().st_size
    validated = _bytes_of(seen.by_tool["validate_backup"])
    assert validated["bytes_done"] == validated["bytes_total"] == size


@pytest.mark.skipif(not Path("/proc/self/fdinfo").is_dir(), reason="needs Linux's /proc")
def test_a_slow_restore_reports_while_pg_restore_reads(pg_url: str, home: Path) -> None:
    """pg_restore reads the file itself: how far it got comes from its position in the
    file, reported while it runs, not only at its end."""
    config = use_target(home, pg_url)
    with engine(pg_url).connect() as conn:
        # Rows enough for the validation's restore to take seconds, on a quiet machine
        # too (a check calling a function of the database's own would not slow it: a
        # validation leaves out what runs the database's code).
        conn.execute(text("CREATE TABLE slow (id integer PRIMARY KEY, v text)"))
        conn.execute(
            text(
                "INSERT INTO slow SELECT g, repeat(md5(g::text), 4) "
                "FROM generate_series(1, 1000000) g"
            )
        )
    seen = Figures()
    result = commands.run_job(config, "backup", {"type": "full"}, observer=seen)
    assert result.status == "completed", result.error
    figures = seen.by_tool["validate_backup"]
    last = _bytes_of(figures)
    assert last["bytes_done"] == last["bytes_total"] == result.steps[1].output["size_bytes"]
    # Reported as pg_restore went, a few times a second (at most REPORTS_PER_SECOND).
    assert len(figures) >= 3, figures
    assert all(0 < f["bytes_done"] <= last["bytes_total"] for f in figures)


def test_reports_come_a_few_times_a_second_however_many_chunks() -> None:
    reports: list[dict[str, Any]] = []
    progress = ByteProgress(reports.append, 1 << 40)
    started = time.monotonic()
    for _ in range(300_000):
        progress.add(4096)
    progress.finish()
    elapsed = time.monotonic() - started
    assert len(reports) <= elapsed * REPORTS_PER_SECOND + 2
    assert reports[-1]["bytes_done"] == 300_000 * 4096
    assert reports[-1]["bytes_total"] == 1 << 40


def _step(tool: str) -> StepResult:
    return StepResult(0, "step_1", tool, "", {}, "low")


def _shown(figures: dict[str, Any], quiet: bool = False, terminal: bool = True) -> str:
    """What the display shows of a step that reports `figures` once it has run a while."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200, color_system=None)
    step = _step("some_tool")
    with StepProgress(console, quiet=quiet) as progress:
        progress.step_started(step, 1)
        time.sleep(SPINNER_AFTER + 0.05)
        progress.step_progress(step, figures)
        step.status, step.seconds = "succeeded", 0.4
        progress.step_finished(step, 1)
    return out.getvalue()


def test_the_bar_shows_bytes_with_their_rate_and_rows_as_before() -> None:
    shown = _shown({"bytes_done": 3 << 20, "bytes_total": 12 << 20, "bytes_per_second": 2 << 20})
    assert "3.0 MiB/12.0 MiB" in shown and "2.0 MiB/s" in shown and "━" in shown
    # Past its estimate, a dump says how much it did, not of how many.
    over = _shown({"bytes_done": 5 << 20, "bytes_total": 4 << 20, "bytes_per_second": 1 << 20})
    assert "5.0 MiB 1.0 MiB/s" in over and "/4.0 MiB" not in over
    rows = _shown({"rows_deleted": 500, "expected_rows": 2_000, "rows_per_second": 2_500})
    assert "500/2,000 rows" in rows and "2,500 rows/s" in rows
    # Past the estimate of the rows to delete, a purge too says how many it did.
    past = _shown({"rows_deleted": 2_500, "expected_rows": 2_000, "rows_per_second": 2_500})
    assert "2,500 rows 2,500 rows/s" in past and "/2,000" not in past
    assert "✓ step_1 some_tool" in shown


def test_quiet_or_not_a_terminal_shows_no_bar() -> None:
    figures = {"bytes_done": 3 << 20, "bytes_total": 12 << 20, "bytes_per_second": 2 << 20}
    assert _shown(figures, quiet=True) == ""
    piped = _shown(figures, terminal=False)
    assert "MiB" not in piped and "━" not in piped
    assert "✓ step_1 some_tool" in piped
