"""The safety policy: every risk level x safety level x environment, and each constraint."""

from datetime import UTC, datetime

import pytest
import yaml

from aishell.config.models import (
    BackupRequired,
    BusinessHours,
    MaintenanceWindow,
    MaxTableSize,
)
from aishell.policy.hours import window_end
from aishell.policy.rules import Confirmation, SafetyPolicy, StepFacts
from aishell.registry import load_tool

RISKS = ["safe", "low", "medium", "high", "critical"]
LEVELS = {"strict": "medium", "moderate": "high", "permissive": "critical"}


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools")
    made = {}
    for risk in RISKS:
        for flavour in ("plain", "destructive", "ddl"):
            name = f"{flavour}_{risk}"
            data = {
                "name": name,
                "description": f"A {flavour} {risk} tool.",
                "category": "ddl" if flavour == "ddl" else "maintenance",
                "risk_level": risk,
                "destructive": flavour == "destructive",
                "required_capabilities": ["database_read"],
                "max_execution_time": 10,
                "idempotent": True,
                "params": {
                    "type": "object",
                    "properties": {"table": {"type": "string", "x-identifier": "table"}},
                },
                "returns": {"type": "object"},
                "examples": [{"params": {}}],
                "mitigations": ["It is watched."],
                "implementations": {"sqlite": {"sql": "SELECT 1"}},
                "locks": {"sqlite": []},
            }
            path = folder / f"{name}.yaml"
            path.write_text(yaml.safe_dump(data))
            made[name] = load_tool(path)
    return made


def rank(risk):
    return RISKS.index(risk)


@pytest.mark.parametrize("risk", RISKS)
@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("environment", ["development", "production"])
def test_the_matrix(tools, risk, level, environment):
    verdict = SafetyPolicy(level, environment, "db1").check(StepFacts(tool=tools[f"plain_{risk}"]))
    by_level = rank(risk) >= rank(LEVELS[level])
    by_production = environment == "production" and rank(risk) >= rank("medium")
    assert verdict.requires_approval == (by_level or by_production)
    expected = []
    if by_level:
        expected.append(
            f"{risk} risk needs approval at the {level} safety level (from {LEVELS[level]})"
        )
    if by_production:
        expected.append("target 'db1' is production: medium risk and above need approval")
    assert list(verdict.reasons) == expected
    if verdict.requires_approval:
        wanted = Confirmation.REVIEW if risk == "critical" else Confirmation.CONFIRM
    else:
        wanted = Confirmation.NONE if risk == "safe" else Confirmation.NOTIFY
    assert verdict.confirmation is wanted
    assert verdict.mitigations == ("It is watched.",)
    assert verdict.defer is None


@pytest.mark.parametrize("risk", RISKS)
@pytest.mark.parametrize("flavour", ["destructive", "ddl"])
def test_destructive_and_ddl_always_need_approval(tools, risk, flavour):
    verdict = SafetyPolicy("permissive", "development", "db1").check(
        StepFacts(tool=tools[f"{flavour}_{risk}"])
    )
    assert verdict.requires_approval
    assert verdict.confirmation is Confirmation.REVIEW
    text = "modifies or removes data" if flavour == "destructive" else "changes the schema"
    assert f"{flavour}_{risk} {text}" in verdict.reasons


def facts(tool, **kw):
    return StepFacts(tool=tool, **kw)


def test_max_table_size(tools):
    policy = SafetyPolicy(
        "permissive", "development", "db1", [MaxTableSize(type="max_table_size", max_rows=1000)]
    )
    big = policy.check(facts(tools["plain_medium"], tables=("logs",), rows={"logs": 5400}))
    assert big.requires_approval
    assert big.reasons == ("table 'logs' has about 5,400 rows, over max_table_size (1,000 rows)",)
    small = policy.check(facts(tools["plain_medium"], tables=("logs",), rows={"logs": 999}))
    assert not small.requires_approval
    # Reading a big table is fine.
    assert not policy.check(
        facts(tools["plain_safe"], tables=("logs",), rows={"logs": 10**9})
    ).reasons


def test_max_table_size_limited_to_some_tools(tools):
    constraint = MaxTableSize(type="max_table_size", max_rows=10, tools=["plain_high"])
    policy = SafetyPolicy("permissive", "development", "db1", [constraint])
    assert not policy.check(facts(tools["plain_medium"], tables=("t",), rows={"t": 50})).reasons
    assert policy.check(facts(tools["plain_high"], tables=("t",), rows={"t": 50})).reasons


WINDOW = MaintenanceWindow(
    type="maintenance_window", allowed_hours=[22, 23, 0, 1, 2, 3, 4, 5], timezone="Europe/Berlin"
)


def at(hour, minute=0, day=17):  # 2026-11-17 is a Tuesday; Berlin is UTC+1 in November
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def test_outside_the_window_steps_above_low_are_deferred(tools):
    policy = SafetyPolicy("permissive", "development", "db1", [WINDOW])
    verdict = policy.check(facts(tools["plain_medium"], now=at(13)))
    assert verdict.defer == (
        "outside the maintenance window (hours 00-06,22-24 Europe/Berlin; it is Tue 14:00): "
        "medium-risk steps wait for the window"
    )
    assert policy.check(facts(tools["plain_low"], now=at(13))).defer is None
    assert policy.check(facts(tools["plain_medium"], now=at(23))).defer is None  # 00:00 Berlin


def test_production_hours_is_the_same_constraint(tools):
    hours = MaintenanceWindow(type="production_hours", allowed_hours=[2], timezone="UTC")
    policy = SafetyPolicy("permissive", "development", "db1", [hours])
    assert policy.check(facts(tools["plain_high"], now=at(3))).defer.startswith(
        "outside the maintenance window (hours 02-03 UTC"
    )


def test_a_step_that_will_not_fit_before_the_window_closes_is_not_started(tools):
    policy = SafetyPolicy("permissive", "development", "db1", [WINDOW])
    late = facts(
        tools["plain_medium"],
        now=at(4, 40),
        expected_seconds=3600,
        expected_basis="median of 3 earlier run(s)",
    )
    assert policy.check(late).defer == (
        "expected to take 60 min (median of 3 earlier run(s)), but the maintenance window "
        "closes at 06:00 Europe/Berlin (in 20 min)"
    )
    early = facts(tools["plain_medium"], now=at(22), expected_seconds=3600, expected_basis="x")
    assert policy.check(early).defer is None


def test_window_end_wraps_midnight_and_days():
    hours = {22, 23, 0, 1}
    end = window_end(datetime(2026, 11, 17, 23, 30), hours, {"tue", "wed"})
    assert end == datetime(2026, 11, 18, 2, 0)
    assert (
        window_end(
            datetime(2026, 11, 17, 3),
            set(range(24)),
            set(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
        )
        is None
    )


def test_backup_required(tools):
    constraint = BackupRequired(type="backup_required", before_operations=["plain_medium"])
    policy = SafetyPolicy("permissive", "development", "db1", [constraint])
    none = policy.check(facts(tools["plain_medium"], now=at(12)))
    assert none.requires_approval
    assert none.reasons == (
        "plain_medium needs a verified backup of 'db1' (of the database it reaches now) from "
        "the last 24 h and none was found; take a backup first or approve without one",
    )
    old = policy.check(facts(tools["plain_medium"], now=at(12), last_backup=at(10, day=15)))
    assert "the newest is from 2026-11-15 10:00 UTC" in old.reasons[0]
    fresh = policy.check(facts(tools["plain_medium"], now=at(12), last_backup=at(1)))
    assert not fresh.requires_approval
    in_run = policy.check(facts(tools["plain_medium"], now=at(12), backup_in_run=True))
    assert not in_run.requires_approval
    assert not policy.check(facts(tools["plain_high"], now=at(12))).reasons


def test_critical_steps_wait_out_business_hours(tools):
    hours = BusinessHours(type="business_hours", hours=list(range(9, 18)), timezone="UTC")
    policy = SafetyPolicy("moderate", "development", "db1", [hours])
    during = policy.check(facts(tools["plain_critical"], now=at(10)))
    assert during.defer == (
        "it is business hours (09-18 mon,tue,wed,thu,fri UTC; it is Tue 10:00): "
        "critical steps wait until after"
    )
    assert policy.check(facts(tools["plain_critical"], now=at(20))).defer is None
    assert policy.check(facts(tools["plain_critical"], now=at(10, day=15))).defer is None  # Sunday
    assert policy.check(facts(tools["plain_high"], now=at(10))).defer is None


# Europe/Berlin's clocks: 2027-03-28 02:00 CET -> 03:00 CEST; 2027-10-31 03:00 CEST -> 02:00 CET.
NIGHT = MaintenanceWindow(type="maintenance_window", allowed_hours=[1, 2], timezone="Europe/Berlin")


def test_a_window_on_the_night_the_clocks_go_forward_is_an_hour_shorter(tools):
    """01:30 CET (00:30 UTC): the window [01, 03) closes at 03:00 CEST, 30 real minutes
    later; a step expected to take 60 min does not start."""
    policy = SafetyPolicy("permissive", "development", "db1", [NIGHT])
    now = datetime(2027, 3, 28, 0, 30, tzinfo=UTC)
    late = facts(tools["plain_medium"], now=now, expected_seconds=3600, expected_basis="x")
    assert policy.check(late).defer == (
        "expected to take 60 min (x), but the maintenance window closes at 03:00 "
        "Europe/Berlin (in 30 min)"
    )
    fits = facts(tools["plain_medium"], now=now, expected_seconds=25 * 60, expected_basis="x")
    assert policy.check(fits).defer is None


def test_a_window_on_the_night_the_clocks_go_back_is_an_hour_longer(tools):
    """01:30 CEST (23:30 UTC): the window runs through 02:00-03:00 CEST and again through
    02:00-03:00 CET, 150 real minutes; a step of 120 min starts."""
    policy = SafetyPolicy("permissive", "development", "db1", [NIGHT])
    now = datetime(2027, 10, 30, 23, 30, tzinfo=UTC)
    fits = facts(tools["plain_medium"], now=now, expected_seconds=120 * 60, expected_basis="x")
    assert policy.check(fits).defer is None
    late = facts(tools["plain_medium"], now=now, expected_seconds=160 * 60, expected_basis="x")
    assert "closes at 03:00 Europe/Berlin (in 2.5 h)" in (policy.check(late).defer or "")
    closes = policy.window_closes(tools["plain_medium"], now)
    assert closes is not None and closes.astimezone(UTC) == datetime(2027, 10, 31, 2, 0, tzinfo=UTC)
