"""An alert condition's limit is a finite number in its unit's range, and a count's limit
is whole: anything else is refused when the config loads, with one line naming it."""

from __future__ import annotations

import pytest

from aishell.config.bounds import MAX_COUNT
from aishell.config.monitoring import parse_condition
from aishell.errors import ConfigError
from tests.conftest import EditConfig

TOO_MANY_DIGITS = "9" * 400


@pytest.mark.parametrize(
    ("condition", "said"),
    [
        (f"backup_age_hours > {TOO_MANY_DIGITS}", "a limit of 400 digits is not a finite number"),
        (f"execution_time > {TOO_MANY_DIGITS}.5", "is not a finite number"),
        (f"errors_encountered > {TOO_MANY_DIGITS}", "is not a finite number"),
        ("errors_encountered > 0.5", "errors_encountered counts, so its limit is a whole number"),
        ("errors_encountered > 1.0", "errors_encountered counts, so its limit is a whole number"),
        (f"errors_encountered > {MAX_COUNT + 1}", f"a whole number from 0 to {MAX_COUNT}"),
        ("backup_age_hours > 876001", "at most 876000 hours"),
        ("approval_wait > 2592001", "at most 2592000 seconds"),
    ],
)
def test_a_limit_that_is_no_number_of_its_kind_is_refused(condition: str, said: str) -> None:
    with pytest.raises(ValueError, match=said) as refused:
        parse_condition(condition)
    message = str(refused.value)
    assert "\n" not in message and len(message) < 200, message


@pytest.mark.parametrize(
    ("condition", "limit"),
    [
        ("errors_encountered > 0", 0),
        (f"errors_encountered > {MAX_COUNT}", MAX_COUNT),
        ("backup_age_hours > 26.5", 26.5),
        ("backup_age_hours > 876000", 876000),
        ("execution_time > 1800", 1800),
        ("schedule_late > 0.5", 0.5),
        ("run_failed", 0),
    ],
)
def test_a_limit_of_its_kind_is_taken(condition: str, limit: float) -> None:
    assert parse_condition(condition)[1] == limit


@pytest.mark.parametrize(
    "condition",
    [f"backup_age_hours > {TOO_MANY_DIGITS}", "errors_encountered > 0.5"],
)
def test_the_config_refuses_such_a_condition_in_one_line(
    edit_config: EditConfig, condition: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        edit_config({"monitoring": {"enabled": True, "alerts": [{"condition": condition}]}})
    message = str(refused.value)
    assert "monitoring" in message and "\n" not in message, message
    assert TOO_MANY_DIGITS not in message
