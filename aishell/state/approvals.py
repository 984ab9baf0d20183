"""Approvals: who decided a step, how, why and for which verdict; and the requests for
one, each written before the person is asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update

from aishell.state.beats import with_beats
from aishell.state.core import StoreCore
from aishell.state.processes import recorder_alive
from aishell.state.schema import approval_requests, approvals, runs, steps
from aishell.state.values import dumps, loads, now


class ApprovalRepository(StoreCore):
    """Rows of the approvals and approval_requests tables, signed with the home's key."""

    def record_approval(
        self,
        run_id: str,
        index: int,
        decision: str,
        decided_by: str,
        how: str,
        reason: str,
        *,
        named: bool = False,
        given_for: dict[str, Any] | None = None,
    ) -> None:
        """A decision on step `index`; `named`: given for this step by name, `given_for`:
        the verdict the person saw (resume compares today's with it)."""
        row = {
            "step_idx": index,
            "decision": decision,
            "decided_by": decided_by,
            "how": how,
            "reason": reason,
            "at": now(),
            "named": named,
            "given_for": None if given_for is None else dumps(given_for),
        }
        with self._tx() as conn:
            conn.execute(
                insert(approvals).values(
                    run_id=run_id, **row, seal=self._sealed("approval", run_id, row)
                )
            )
            self._event(
                conn,
                run_id,
                index,
                "approval",
                {"decision": decision, "by": decided_by, "how": how},
            )

    def record_request(
        self, run_id: str, index: int, named: bool, given_for: dict[str, Any]
    ) -> None:
        """A person is about to be asked about step `index`: what they are shown, and
        whether only an approval of the step by name may cover it. Committed with the
        step waiting for approval before the question, so however the prompt ends (an
        answer, Ctrl-C, Ctrl-D, a closed terminal, a signal) the store says it."""
        row = {"step_idx": index, "named": named, "given_for": dumps(given_for), "at": now()}
        with self._tx() as conn:
            conn.execute(
                insert(approval_requests).values(
                    run_id=run_id, **row, seal=self._sealed("request", run_id, row)
                )
            )
            conn.execute(
                update(steps)
                .where((steps.c.run_id == run_id) & (steps.c.idx == index))
                .values(
                    status="waiting_approval",
                    status_seal=self._step_seal(run_id, index, "status", "waiting_approval"),
                    error="asked for approval; not answered",
                    # The risk the person is shown (raised where the server runs user code).
                    risk_level=given_for.get("risk") or steps.c.risk_level,
                )
            )
            self._event(conn, run_id, index, "approval_requested", {"named": named})

    def step_approvals(self, run_id: str, index: int) -> list[dict[str, Any]]:
        """The decisions on step `index`, oldest first, each checked against its signature."""
        return [a for a in self._approvals_of(run_id) if a["step_idx"] == index]

    def last_approval(self, run_id: str, index: int) -> dict[str, Any] | None:
        """The latest decision on step `index`, checked against its signature."""
        found = self.step_approvals(run_id, index)
        return found[-1] if found else None

    def last_request(self, run_id: str, index: int) -> dict[str, Any] | None:
        """The latest request for an approval of step `index`, checked likewise."""
        rows = self._conn.execute(
            select(approval_requests)
            .where(approval_requests.c.run_id == run_id, approval_requests.c.step_idx == index)
            .order_by(approval_requests.c.at, approval_requests.c.id)
        ).all()
        self._conn.rollback()
        for row in rows:
            self._verify("request", run_id, row._mapping, _named_row(run_id, row, "request"))
        if not rows:
            return None
        last = rows[-1]
        return {"named": bool(last.named), "given_for": loads(last.given_for), "at": last.at}

    def waiting_approvals(self, targets: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every step waiting for a person's decision, oldest run first (of `targets`
        when given), with the risk and reasons its latest request showed. A listing: it
        checks no signature (approve and deny do, before they decide)."""
        query = (
            select(
                runs.c.run_id,
                runs.c.target,
                runs.c.agent,
                runs.c.status.label("run_status"),
                runs.c.created_at,
                runs.c.pid,
                runs.c.hostname,
                runs.c.pid_started,
                steps.c.idx,
                steps.c.tool,
                steps.c.subject,
                steps.c.risk_level,
            )
            .join(steps, steps.c.run_id == runs.c.run_id)
            .where(steps.c.status == "waiting_approval")
            .order_by(runs.c.created_at, runs.c.run_id, steps.c.idx)
        )
        if targets is not None:
            query = query.where(runs.c.target.in_(list(targets)))
        rows = self._conn.execute(with_beats(query)).all()
        asked = self._latest_requests([row.run_id for row in rows])
        self._conn.rollback()
        found = []
        for row in rows:
            request = asked.get((row.run_id, row.idx), {})
            # A run whose process is gone is not running, as list_runs shows it too.
            gone = row.run_status == "running" and not recorder_alive(
                row.pid, row.hostname, row.pid_started, row.beat_age
            )
            found.append(
                {
                    "run_id": row.run_id,
                    "target": row.target,
                    "agent": row.agent,
                    "run_status": "interrupted" if gone else row.run_status,
                    "run_created_at": row.created_at,
                    "index": row.idx,
                    "tool": row.tool,
                    "subject": row.subject,
                    "risk_level": request.get("risk") or row.risk_level,
                    "reasons": list(request.get("reasons") or []),
                    "asked_at": request.get("at"),
                }
            )
        return found

    def _latest_requests(self, run_ids: list[str]) -> dict[tuple[str, int], dict[str, Any]]:
        """The latest request per step of these runs: its facts and when it was made."""
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        if not run_ids:
            return latest
        rows = self._conn.execute(
            select(approval_requests)
            .where(approval_requests.c.run_id.in_(sorted(set(run_ids))))
            .order_by(approval_requests.c.at, approval_requests.c.id)
        ).all()
        for row in rows:
            facts = loads(row.given_for)
            shown = facts if isinstance(facts, dict) else {}
            latest[(row.run_id, row.step_idx)] = {**shown, "at": row.at}
        return latest

    def _approvals_of(
        self,
        run_id: str,
        offset: int = 0,
        limit: int | None = None,
        steps: tuple[int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Every decision on the run's steps (or `limit` of them, past the first
        `offset`; only those on the steps from `steps`' first index up to its second),
        oldest first, each checked against its signature (by time: a row copied later
        keeps the time it was given)."""
        query = select(approvals).where(approvals.c.run_id == run_id)
        if steps is not None:
            query = query.where(approvals.c.step_idx.between(steps[0], steps[1] - 1))
        rows = self._conn.execute(
            query.order_by(approvals.c.at, approvals.c.id).offset(offset or None).limit(limit)
        ).all()
        self._conn.rollback()
        found = []
        for row in rows:
            self._verify("approval", run_id, row._mapping, _named_row(run_id, row, "approval"))
            shown = {k: v for k, v in row._mapping.items() if k not in ("id", "run_id", "seal")}
            shown["named"] = bool(shown["named"])
            shown["given_for"] = loads(shown["given_for"])
            found.append(shown)
        return found


def _named_row(run_id: str, row: Any, kind: str) -> str:
    """How a refusal names the row: "run ID's approval of step 1"."""
    what = "approval" if kind == "approval" else "request for approval"
    return f"run {run_id}'s {what} of step {row.step_idx}"
