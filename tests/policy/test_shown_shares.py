"""A share a person approves is shown as the approval holds it: the prompt's percent is
rounded up to the whole percent that a yes by name allows (never 81% shown for 81.42%
while 82% is allowed), and a limit is shown as exact as it was configured."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aishell.config.resources import bundled_catalog_dir
from aishell.handlers.purge.share import _shown_percent
from aishell.policy.rules import PurgeLimits, StepFacts, _purge_limits
from aishell.registry import load_registry
from aishell.units import percent, percent_up


@given(st.integers(min_value=1, max_value=10**9), st.data())
def test_the_percent_shown_is_the_percent_a_yes_allows(total, data):
    going = data.draw(st.integers(min_value=0, max_value=total))
    shown = percent_up(going / total)
    allowed = _shown_percent({"rows_this_run": going, "table_rows": total})
    assert shown == f"{allowed}%"
    assert allowed >= going * 100 / total


def test_limits_are_shown_as_configured():
    assert [percent(s) for s in (0.5, 0.005, 0.1225, 1.0, 0.3333)] == [
        "50%",
        "0.5%",
        "12.25%",
        "100%",
        "33.33%",
    ]


def test_the_prompt_shows_a_share_rounded_up_and_a_small_limit_exactly():
    tool = load_registry([bundled_catalog_dir()]).get("delete_old_records")
    facts = StepFacts(
        tool=tool,
        params={"retention_days": 30},
        effect={"rows_this_run": 146_557, "table_rows": 180_000},
    )
    [reason] = _purge_limits(PurgeLimits(type="purge_limits", max_share=0.005), facts)
    assert "(82%), over max_share (0.5%)" in reason, reason


def test_a_share_that_is_no_number_is_shown_unknown() -> None:
    assert [percent(v) for v in (float("nan"), float("inf"), -float("inf"))] == ["-", "-", "-"]
