"""A REINDEX INDEX CONCURRENTLY whose session the server ends (pg_terminate_backend, a
restart, the network) fails its step with the server's word and what it left, never as
aishell's internal error: nothing more can be read on a session that is gone, so the
leftovers are looked for, and dropped, when the table is rebuilt again."""

from __future__ import annotations

from pathlib import Path

from aishell import commands
from aishell.policy.approvers import NonInteractive
from tests.guard.test_guard import scalar
from tests.handlers.purge.test_log_cleanup import _database
from tests.policy.test_approval_after_a_failure import _rebuild_failed
from tests.policy.test_approval_reach import events_to_rebuild


def test_a_rebuild_whose_session_is_ended_fails_with_the_server_s_word_and_resumes(
    home: Path,
) -> None:
    with _database("postgresql", home) as url:
        events_to_rebuild(url)
        run_id, config, index = _rebuild_failed(home, url)
        shown = commands.show_run(config, run_id)
        error = str(shown["steps"][index]["error"])
        assert "internal error" not in error, error
        assert "terminating connection due to administrator command" in error, error
        assert "lost its session" in error and f"aishell resume {run_id}" in error, error
        resumed = commands.resume_run(config, run_id, approver=NonInteractive())
        assert resumed.status == "completed", resumed.error
        invalid = scalar(
            url,
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "WHERE c.relname = 'events' AND NOT i.indisvalid",
        )
        assert invalid == 0
