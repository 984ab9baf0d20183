"""A step's limit past what a server's statement limit takes still runs the step: the
server's limit is capped at its maximum, the client-side deadline keeps the rest."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import yaml

from aishell.config.bounds import MAX_RUN_TIME_SECONDS
from aishell.config.models import load_config
from aishell.targets.limits import (
    MARIADB_MAX_STATEMENT_SECONDS,
    MYSQL_MAX_EXECUTION_MS,
    PG_MAX_STATEMENT_MS,
    limit_setting,
)
from tests.services import scratch_mysql, scratch_postgresql
from tests.targets.test_limits import SITE_TOOLS, configure, in_thread, one_step


@pytest.fixture(params=["postgresql", "mysql"])
def fixsil_url(request: pytest.FixtureRequest) -> Iterator[str]:
    scratch = scratch_postgresql if request.param == "postgresql" else scratch_mysql
    with scratch(name=f"fixsil_{uuid.uuid4().hex[:10]}") as url:
        yield url


def test_a_step_limit_of_thirty_days_runs_on_the_server(home, fixsil_url):
    """max_execution_time at the config's maximum (30 days): PostgreSQL's statement_timeout
    takes 24.8 days at most, and refused the step's SET before the cap."""
    configure(home, fixsil_url, agent={"max_execution_time": MAX_RUN_TIME_SECONDS}, load=False)
    tool = {**SITE_TOOLS["sleep_read.yaml"], "name": "fixsil_sleep"}
    tool["max_execution_time"] = MAX_RUN_TIME_SECONDS
    (home / "site_tools" / "fixsil_sleep.yaml").write_text(yaml.safe_dump(tool))
    config = load_config(home=home)
    result = in_thread(lambda: one_step(config, fixsil_url, "fixsil_sleep", {"seconds": 0}))
    assert result.status == "completed", result.error
    assert result.steps[0].status == "succeeded", result.steps[0].error


def test_each_server_limit_is_capped_at_its_maximum():
    days = float(MAX_RUN_TIME_SECONDS * 100)
    assert limit_setting("postgresql", False, days) == ("statement_timeout", PG_MAX_STATEMENT_MS)
    assert limit_setting("mysql", True, days) == (
        "max_statement_time",
        MARIADB_MAX_STATEMENT_SECONDS,
    )
    assert limit_setting("mysql", False, days) == ("max_execution_time", MYSQL_MAX_EXECUTION_MS)
    assert limit_setting("postgresql", False, 2.5) == ("statement_timeout", 2500)
