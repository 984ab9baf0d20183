"""A view over a table whose row-security policy calls a function that may write runs
that function when it is read, as the view's owner or as the session's role
(security_invoker). A writing step's read of such a view, or of a view over it, is
refused before it is sent, and nothing is written; where the policy applies to no role
a view may read the table as (a superuser reading, a view of the table's owner), it
passes."""

from __future__ import annotations

import types
from pathlib import Path

from tests.guard.test_guard import Cases, execute, fingerprint, refill, refusals, run_one
from tests.guard.test_guard_hidden import (
    PG_HIDDEN,
    PG_WRITERS,
    _delete_then_read,
    as_role,
    database_with,
    handlers,
    writing_tool,
)

__all__ = ["handlers"]  # the fixture, found by pytest in this module

# (how the views are made, {role} the reading role; who reads; refused?)
CASES = {
    "invoker view": (
        [
            "CREATE VIEW pv WITH (security_invoker = true) AS SELECT id FROM guarded",
            "GRANT SELECT ON pv TO {role}",
        ],
        "role",
        True,
    ),
    "view of the role's own": (
        ["CREATE VIEW pv AS SELECT id FROM guarded", "ALTER VIEW pv OWNER TO {role}"],
        "role",
        True,
    ),
    "view over an invoker view": (
        [
            "CREATE VIEW inner_v WITH (security_invoker = true) AS SELECT id FROM guarded",
            "CREATE VIEW pv WITH (security_invoker = true) AS SELECT id FROM inner_v",
            "GRANT SELECT ON inner_v, pv TO {role}",
        ],
        "role",
        True,
    ),
    "view of the table's owner read by a superuser": (
        [
            "ALTER TABLE guarded OWNER TO {role}",
            "CREATE VIEW pv AS SELECT id FROM guarded",
            "ALTER VIEW pv OWNER TO {role}",
        ],
        "superuser",
        False,
    ),
    "invoker view read by a superuser": (
        ["CREATE VIEW pv WITH (security_invoker = true) AS SELECT id FROM guarded"],
        "superuser",
        False,
    ),
}


def test_a_view_over_a_policy_that_writes_is_refused_where_the_policy_applies(
    home: Path, tmp_path: Path, handlers: types.ModuleType
) -> None:
    with database_with("postgresql", tmp_path, *PG_WRITERS) as url, Cases() as case:
        for name, (views, reader, refused) in CASES.items():
            with case(name):
                execute(
                    url,
                    "DROP VIEW IF EXISTS pv, inner_v",
                    "DROP TABLE IF EXISTS guarded",
                    *PG_HIDDEN["policy"],
                )
                refill(url)
                with as_role(url, *views) as role_url:
                    read_as = role_url if reader == "role" else url
                    _read_through(home, handlers, url, read_as, refused)


def _read_through(
    home: Path, handlers: types.ModuleType, url: str, read_as: str, refused: bool
) -> None:
    config = writing_tool(home, read_as, handlers, "delete_then_read", _delete_then_read)

    params = {"table": "t", "statement": "SELECT count(*) FROM pv"}
    run = run_one(config, read_as, "delete_then_read", params)

    step = run.steps[0]
    assert fingerprint(url, "other") == (5, 15)
    if refused:
        assert step.status == "failed"
        assert "statement refused" in (step.error or ""), step.error
        assert "(policy p)" in (step.error or ""), step.error
        assert len(refusals(config, run.run_id)) == 1
    else:
        assert step.status == "succeeded", step.error
        assert fingerprint(url) == (9, 54)
