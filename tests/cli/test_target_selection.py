"""`--targets SELECTOR` (and `--all-targets`) on the commands that act on several
targets: `runs list` and `aishell approvals` across the selected targets' runs,
`targets list` filtered with their tags, `targets check` and `doctor` checking each
selected target; `targets add --tag`. Three SQLite demo targets, real runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.cli.completion import complete_selector
from aishell.config.models import Config
from aishell.policy.approvers import NonInteractive
from tests.conftest import EditConfig

FLEET = {
    "demo": {"tags": ["dev"]},
    "eu-1": {"url": "sqlite:///eu1.db", "tags": ["prod", "eu"]},
    "us-1": {"url": "sqlite:///us1.db", "tags": ["prod", "us"]},
}


@pytest.fixture
def fleet(edit_config: EditConfig, demo_db: Path) -> Config:
    """demo, eu-1 and us-1, each a copy of the demo database, tagged as FLEET says."""
    for copy in ("eu1.db", "us1.db"):
        shutil.copyfile(demo_db, demo_db.parent / copy)
    return edit_config({"targets": FLEET})


def aishell(*args: str, code: int = 0) -> str:
    done = CliRunner().invoke(cli, list(args))
    assert done.exit_code == code, done.output
    return done.output


def as_json(*args: str, code: int = 0) -> Any:
    return json.loads(aishell(*args, "--json", code=code))


def waiting_run(config: Config, target: str) -> str:
    """A strict maintenance run on `target` that waits for approval of two steps."""
    result = commands.run_job(
        config,
        "maintenance",
        {"type": "full", "tables": ["orders"]},
        target,
        approver=NonInteractive(),
        safety_level="strict",
    )
    assert result.status == "waiting_approval"
    return result.run_id


def test_runs_and_approvals_are_listed_across_the_selected_targets(fleet: Config):
    eu = waiting_run(fleet, "eu-1")
    us = waiting_run(fleet, "us-1")
    demo = commands.run_job(fleet, "maintenance", {"type": "quick"}, "demo", dry_run=True)

    def listed(*args: str) -> list[tuple[str, str]]:
        return [(r["run_id"], r["target"]) for r in as_json("runs", "list", *args)["runs"]]

    assert listed() == [(demo.run_id, "demo"), (us, "us-1"), (eu, "eu-1")]
    assert listed("--all-targets") == listed()
    assert listed("--targets", "tag:prod") == [(us, "us-1"), (eu, "eu-1")]
    assert listed("--targets", "eu-*,demo") == [(demo.run_id, "demo"), (eu, "eu-1")]
    assert listed("--targets", "tag:prod+tag:us", "--status", "waiting_approval") == [(us, "us-1")]
    assert listed("--targets", "tag:dev", "--status", "waiting_approval") == []
    assert "eu-1" in aishell("runs", "list", "--targets", "tag:eu")

    waiting = as_json("approvals", "--targets", "tag:prod")["approvals"]
    assert [(a["run_id"], a["target"], a["index"], a["tool"]) for a in waiting] == [
        (eu, "eu-1", 2, "rebuild_fragmented_indexes"),
        (eu, "eu-1", 3, "optimize_table"),
        (us, "us-1", 2, "rebuild_fragmented_indexes"),
        (us, "us-1", 3, "optimize_table"),
    ]
    assert all(a["risk_level"] == "medium" and a["asked_at"] for a in waiting)
    assert {a["run_status"] for a in waiting} == {"waiting_approval"}
    assert all("strict safety level" in a["reasons"][0] for a in waiting)
    assert as_json("approvals")["approvals"] == waiting
    assert as_json("approvals", "--targets", "demo")["approvals"] == []
    assert "No step waits for an approval." in aishell("approvals", "--targets", "demo")

    # Deciding one run takes it off the list; the other target's steps still wait.
    aishell("deny", eu)
    assert [a["run_id"] for a in as_json("approvals", "--all-targets")["approvals"]] == [us, us]
    shown = aishell("approvals", "--targets", "us-1")
    assert us in shown and "optimize_table" in shown and "aishell approve" in shown


@pytest.mark.usefixtures("fleet")
def test_a_selector_that_names_nothing_known_ends_in_one_line():
    for args, message in [
        (["runs", "list", "--targets", "tag:staging"], "Error: Unknown tag 'staging'; tags in "),
        (["approvals", "--targets", "ap-*"], "Error: Target selector 'ap-*' matches no target"),
        (["targets", "list", "--targets", "db9"], "Error: Unknown target 'db9'; targets in "),
        (["runs", "list", "--targets", "demo", "--all-targets"], "Error: --targets and --all"),
        (["doctor", "--target", "demo", "--targets", "demo"], "Error: --target and --targets"),
    ]:
        out = aishell(*args, code=2)
        assert out.startswith(message) and out.count("\n") == 1, out


@pytest.mark.usefixtures("fleet")
def test_targets_list_shows_tags_and_filters_by_selector():
    rows = as_json("targets", "list")["targets"]
    assert {r["name"]: r["tags"] for r in rows} == {t: f["tags"] for t, f in FLEET.items()}
    assert [r["name"] for r in as_json("targets", "list", "--targets", "tag:prod")["targets"]] == [
        "eu-1",
        "us-1",
    ]
    assert "prod, eu" in aishell("targets", "list")


def test_targets_check_and_doctor_check_each_selected_target(fleet: Config, home: Path):
    (home / "us1.db").unlink()
    checked = as_json("targets", "check", "--targets", "tag:prod", code=1)["targets"]
    assert checked[0]["target"] == "eu-1" and checked[0]["tables"] == 4
    assert checked[1] == {
        "target": "us-1",
        "error": f"Target 'us-1': database file {home / 'us1.db'} does not exist; correct "
        f"targets.us-1.url in {fleet.path}, or `aishell demo --target us-1` makes a demo "
        "database there",
    }
    assert as_json("targets", "check", "--targets", "tag:eu")["targets"][0]["target"] == "eu-1"
    out = aishell("targets", "check", "eu-1", "--targets", "eu-1", code=2)
    assert out == "Error: Give a target's NAME or --targets, not both\n"
    assert as_json("targets", "check", "eu-1")["target"] == "eu-1"  # one NAME, as before

    report = as_json("doctor", "--targets", "tag:eu")
    assert [t["target"] for t in report["targets"]] == ["eu-1"] and report["problems"] == []
    report = as_json("doctor", "--targets", "tag:prod", code=1)
    assert [t["target"] for t in report["targets"]] == ["eu-1", "us-1"]
    assert [p["target"] for p in report["problems"]] == ["us-1"]
    assert [t["target"] for t in as_json("doctor", "--target", "eu-1")["targets"]] == ["eu-1"]


def test_targets_add_writes_its_tags(home: Path):
    before = (home / "config" / "aishell.yaml").read_text()
    add = ("targets", "add", "eu-9", "sqlite:///eu9.db", "--no-check")
    out = aishell(*add, "--tag", "Prod", code=2)
    assert out.startswith("Error: Tag 'Prod' may hold lower-case letters")
    assert (home / "config" / "aishell.yaml").read_text() == before
    added = as_json(*add, "--tag", "prod", "--tag", "eu")
    assert added["tags"] == ["prod", "eu"]
    assert '    tags: ["prod", "eu"]\n' in (home / "config" / "aishell.yaml").read_text()
    assert [r["name"] for r in as_json("targets", "list", "--targets", "tag:eu")["targets"]] == [
        "eu-9"
    ]


@pytest.mark.usefixtures("fleet")
def test_completion_offers_names_and_tags_for_the_selectors_last_part(home: Path):
    ctx = click.Context(cli)
    ctx.params = {"config_path": None, "home": str(home)}

    def offered(incomplete: str) -> list[str]:
        return [item.value for item in complete_selector(ctx, None, incomplete)]

    assert offered("") == ["demo", "eu-1", "us-1", "tag:dev", "tag:eu", "tag:prod", "tag:us"]
    assert offered("tag:p") == ["tag:prod"]
    assert offered("eu-1,tag:u") == ["eu-1,tag:us"]
    assert offered("tag:prod+u") == ["tag:prod+us-1"]
