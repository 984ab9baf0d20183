"""A validation's restore into its scratch database commits without waiting for the WAL's
flush (pg_restore commits each object on its own: thousands of waits for a database of
many tables, for a copy dropped once measured); a restore into a target waits, as every
commit of the server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aishell import commands
from aishell.handlers.backup import apply
from aishell.policy.approvers import Prompting
from tests.helpers import fill_table, use_target
from tests.services import scratch_postgresql


def test_only_a_validations_scratch_restore_skips_the_wait_for_the_wal(
    home: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_table(pg_url, "kept", 30)
    restores: list[tuple[list[str], str]] = []
    run_tool = apply.run_tool

    def seen(argv: list[str], env: dict[str, str], *args: Any, **kwargs: Any) -> Any:
        if argv[0] == "pg_restore":
            restores.append((argv, env.get("PGOPTIONS", "")))
        return run_tool(argv, env, *args, **kwargs)

    monkeypatch.setattr(apply, "run_tool", seen)
    # A PGOPTIONS of the user's is refused (docs/targets.md): the validation's restore
    # sets its own, and the target's none.
    monkeypatch.delenv("PGOPTIONS", raising=False)
    with scratch_postgresql() as other:
        config = use_target(home, pg_url, copy=other)
        backup = commands.run_job(config, "backup", {"type": "full"})
        assert backup.status == "completed", backup.error
        [validation] = restores
        assert "-L" in validation[0]  # the inert TOC list: the validation's load
        assert validation[1] == apply.SCRATCH_COMMITS
        [made] = commands.list_backups(config, "db")
        restored = commands.restore(
            config, made["id"], "copy", approver=Prompting(ask=lambda request: "yes")
        )
        assert restored.status == "completed", restored.error
    assert len(restores) == 2
    target_restore = restores[1]
    assert "-L" not in target_restore[0]
    assert target_restore[1] == ""
