"""A PostgreSQL step that writes, whose code (a trigger) changes a setting the server
does not report with its answers: extra_float_digits (every float read after it is
rounded) or lc_monetary (money is written otherwise than the session began). The step
is the one failed, as one that changes a reported setting is, and as a read-only step
is that a trusted function changed it in; whether the trigger is named in the estimate
(and approved) or trusted by the site."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guard.test_guard import (
    execute,
    run_one,
    scalar,
    scratch_database,
    site_config,
    tool_yaml,
    write_tool,
)

# What the trigger does, the same for its transaction only, and what the step's failure
# says.
CHANGES = {
    "SET extra_float_digits = -15": (
        "SET LOCAL extra_float_digits = -15",
        "extra_float_digits is now -15",
    ),
    "PERFORM set_config('extra_float_digits', '0', false)": (
        "PERFORM set_config('extra_float_digits', '0', true)",
        "extra_float_digits is now 0",
    ),
    "SET lc_monetary = 'C'": ("SET LOCAL lc_monetary = 'C'", "lc_monetary is now C"),
}


def _trigger_doing(url: str, change: str) -> None:
    execute(
        url,
        "CREATE OR REPLACE FUNCTION resets() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {change}; RETURN NEW; END $$",
    )


@pytest.mark.parametrize("trusted", [(), ("public.resets",)], ids=["approved", "trusted"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_write_whose_trigger_changes_an_unreported_setting_fails(
    home: Path, tmp_path: Path, change: str, trusted: tuple[str, ...]
) -> None:
    with scratch_database("postgresql", tmp_path) as url:
        local, said = CHANGES[change]
        _trigger_doing(url, local)
        execute(
            url,
            "CREATE TABLE w (id integer PRIMARY KEY, x float8)",
            "CREATE TRIGGER w_resets BEFORE INSERT ON w FOR EACH ROW EXECUTE FUNCTION resets()",
        )
        folder = home / "site_writes"
        sql = "INSERT INTO {table} (id, x) VALUES (:n, 0.1)"
        write_tool(folder, tool_yaml("write_w", "medium", {"postgresql": {"sql": sql}}))
        config = site_config(home, url, folder, trusted)

        # First for its transaction only: the session is left as it was, and the step
        # succeeds.
        kept = run_one(config, url, "write_w", {"table": "w", "n": 1})
        assert kept.steps[0].status == "succeeded", kept.steps[0].error
        _trigger_doing(url, change)

        run = run_one(config, url, "write_w", {"table": "w", "n": 2})

        step = run.steps[0]
        assert step.risk_level == ("medium" if trusted else "high"), step.reasons
        assert step.status == "failed", step
        assert f"changed its session ({said})" in (step.error or ""), step.error
        assert scalar(url, "SELECT count(*) FROM w") == 2  # the write itself ran
