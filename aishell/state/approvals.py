"""Approvals: who decided a step, how and why."""

from __future__ import annotations

from sqlalchemy import insert

from aishell.state.core import StoreCore
from aishell.state.schema import approvals
from aishell.state.values import now


class ApprovalRepository(StoreCore):
    """Rows of the approvals table, each with its event."""

    def record_approval(
        self, run_id: str, index: int, decision: str, decided_by: str, how: str, reason: str
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                insert(approvals).values(
                    run_id=run_id,
                    step_idx=index,
                    decision=decision,
                    decided_by=decided_by,
                    how=how,
                    reason=reason,
                    at=now(),
                )
            )
            self._event(
                conn,
                run_id,
                index,
                "approval",
                {"decision": decision, "by": decided_by, "how": how},
            )
