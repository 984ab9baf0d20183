"""What becomes of a fleet task's delivery that cannot go on as sent (commands/fleet.py's
run_fleet_target): one refused before its target's run began or went on is kept for
`fleet show` and `fleet status`; a resume whose server does not answer comes back while
the target's circuit breaker lets it try; a worker whose tools or agent config are not
those the task was sent with runs nothing of it; a run whose server slot was let go
under it stops; a run a person stopped, or its run-time limit, ends its task."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aishell.commands.breaker import breaker_key
from aishell.commands.tools import load_catalog
from aishell.config.models import Config
from aishell.errors import (
    AishellError,
    ConfigError,
    DeliveryRefused,
    StateError,
    StateTampered,
    TargetUnreachable,
)
from aishell.fleet.sending import sent_with, unlike
from aishell.fleet.worker import TryLater
from aishell.registry import Registry
from aishell.state.fleet import standing_refusal
from aishell.state.store import StateStore, signed_store

logger = logging.getLogger(__name__)

# Who asks a run to stop when its slot was let go (slot_lost): its task comes back.
SLOT_LOST_BY = "fleet: its slot on "
# How a run stopped at its run-time limit says so (executor/stopping.py's reason).
TIME_LIMIT = "interrupted by the run-time limit of "
# How the end of such a task begins, as `fleet show` gives it.
NOT_RESUMED = "not resumed by the queue: "
# A target whose task ended before its run began: its error says why.
NOT_STARTED = "not_started"
# How the refusal of a delivery again of such a task begins.
AGAIN = "Not run: its task was delivered again, not sent again: "


def keep_refusal(
    config: Config,
    fleet_id: str,
    target: str,
    earlier: dict[str, Any] | None,
    exc: AishellError,
) -> None:
    """A delivery that failed before the target's run began, or before its run went on
    (resumed, or a dry run started anew): the refusal is kept for `fleet show` and
    `fleet status`, not left in a worker's log alone (the target unknown or its SQLite
    file gone on this worker, the job refused there, a resume refused before it reopens
    the run). Past that, the run's own row says what became of it: raised, not doubled.
    Returns for a target with no run (its task ends not started); a refused resume is
    raised, after it is kept."""
    with signed_store(config) as store:  # signed: the refusal is linked into its chain
        if earlier is None:
            went_on = store.fleet_run_id(fleet_id, target) is not None
        else:
            went_on = store.fleet_run_went_on(
                fleet_id, target, earlier["run_id"], earlier["changed"]
            )
        if went_on:
            raise exc
        if earlier is not None and isinstance(exc, TargetUnreachable):
            exc = _unreached(store, config, fleet_id, target, earlier["run_id"], exc)
        store.record_not_started(fleet_id, target, str(exc))
    if earlier is not None:
        raise exc


def _unreached(
    store: StateStore,
    config: Config,
    fleet_id: str,
    target: str,
    run_id: str,
    exc: TargetUnreachable,
) -> TargetUnreachable:
    """A resume that could not reach its target's server (restarting, failing over,
    gone): it comes back (TryLater) every `slot_wait_seconds` while the target's circuit
    breaker is closed, and once more when it closes again after it opened; the error to
    keep once the breaker has counted more failed connections in a row than its
    `failures`, the run left interrupted for `fleet resend`."""
    # By the count, not by whether the breaker is still open: a slow connection attempt
    # can outlast a short cool-down.
    until, failures, _ = store.failed_in_a_row(breaker_key(config, target))
    if failures > config.main.circuit_breaker.failures:
        return TargetUnreachable(
            f"{exc}; run {run_id} stays interrupted: `aishell fleet resend {fleet_id}` "
            "once the server answers"
        )
    wait = config.main.fleet.slot_wait_seconds
    if until is not None:  # timed by the store's clock, which opened it
        wait += max((until - store.store_clock()).total_seconds(), 0.0)
    raise TryLater(wait, f"run {run_id} waits for its server: {exc}") from None


def checked_delivery(
    config: Config, fleet: dict[str, Any], target: str, carried: Any, facts: dict[str, Any]
) -> Registry:
    """check_sent_with's catalog, after what the task read (delivery_facts): refused
    (DeliveryRefused) when the target's event chain is broken, a stop or a refusal
    deleted from it would otherwise let its run begin or resume; and, for a delivery that
    begins the target's run (it has none yet), when may_begin says it may not."""
    if facts["broken"] is not None:
        raise DeliveryRefused(
            f"Not run: {facts['broken']}; find who changed the state store, then "
            f"`aishell fleet resend {fleet['fleet_id']}`"
        )
    if facts["begins"]:
        may_begin(config, fleet, target, facts)
    return check_sent_with(config, fleet, target, carried)


def delivery_facts(
    store: StateStore, fleet: dict[str, Any], target: str, earlier: dict[str, Any] | None
) -> dict[str, Any]:
    """What checked_delivery decides by, read in the store the task opened with the home's
    key: the target's event chain, broken when one of its events was deleted, copied or
    moved, or naming another run than fleet_runs links to it; for a delivery that
    begins its run (none earlier), its standing refusal and its last resend (one not
    signed as it is lets nothing begin: StateTampered, in one line)."""
    fleet_id, begins = fleet["fleet_id"], earlier is None
    facts: dict[str, Any] = {
        "begins": begins,
        "broken": store.fleet_chain_breaks(fleet, [target]).get(target),
    }
    if begins:
        facts["standing"] = store.fleet_not_started(fleet_id).get(target)
        facts["resent"] = store.fleet_resent_at(fleet_id, target)
    return facts


def may_begin(config: Config, fleet: dict[str, Any], target: str, facts: dict[str, Any]) -> None:
    """DeliveryRefused for a delivery that may not begin the target's run. One whose
    target's task ended not started (its last delivery refused) and was not sent again
    since: only `fleet resend` begins it. And one of a schedule's trigger that comes more
    than scheduler.misfire_grace_seconds after the trigger was due (or after its task
    was last sent again): the schedule's options (--force, --ignore-window) were given
    for that trigger, and serve reports a trigger so late missed, not run. `facts`: what
    delivery_facts read."""
    fleet_id, due = fleet["fleet_id"], fleet.get("due")
    resend = f"`aishell fleet resend {fleet_id}` begins it"
    standing, resent = facts["standing"], facts["resent"]
    if standing is not None:
        error = str(standing["error"])
        if not error.startswith(AGAIN):
            error = f"{AGAIN}it ended not started at {standing['at']} ({error}); {resend}"
        raise DeliveryRefused(error)
    if fleet.get("schedule") is None or due is None:
        return
    since = max(datetime.fromisoformat(t) for t in (due, resent or due))
    late = (datetime.now(UTC) - since).total_seconds()
    grace = config.main.scheduler.misfire_grace_seconds
    if late > grace:
        raise DeliveryRefused(
            f"Not run: fleet job {fleet_id} of schedule {fleet['schedule']}'s trigger due "
            f"{due} came {late:.0f} s after it{' was sent again' if resent else ''}, past "
            f"scheduler.misfire_grace_seconds ({grace} s); {resend} now"
        )


def check_sent_with(config: Config, fleet: dict[str, Any], target: str, carried: Any) -> Registry:
    """This worker's tool catalog, which the task's run is given; ConfigError when its
    tools, agent config or config of the target are not those the task was sent with: a
    job is run with what it was checked and sent with, on the database the sender named,
    or not at all."""
    agent = fleet["agent"]
    catalog = load_catalog(config)
    _, here = config.target(target)
    found = unlike(carried, sent_with(catalog, config.agent(agent), {target: here}), agent)
    if found:
        shown = "; ".join(found[:4]) + (f"; {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(
            f"Not run: this worker's tools, agent config or target differ from those fleet job "
            f"{fleet['fleet_id']} was sent with ({shown}); give this worker the sender's "
            f"tools and config, then `aishell fleet resend {fleet['fleet_id']}`"
        )
    return catalog


def stopped_for_good(
    config: Config, fleet_id: str, target: str, run_id: str, error: str | None
) -> bool:
    """Whether an interrupted run's task ends here instead of coming back to resume it:
    a person's `aishell stop`, or the run's time limit (`--max-run-time`), which the
    queue resuming it at once, its time limit anew, would undo. The end is kept, as a
    refused delivery is, for `fleet show` (and `fleet run --wait` waits no more);
    `aishell fleet resend`, or its schedule's next trigger, resumes the run. Any other
    stop (the worker's shutdown, its slot lost, its server silent) comes back."""
    with signed_store(config) as store:  # signed: the end is linked into its chain
        who = store.stop_requested(run_id)
        if who is not None and not who.startswith(SLOT_LOST_BY):
            why = f"stopped by {who} with `aishell stop`"
        elif error is not None and error.startswith(TIME_LIMIT):
            why = "stopped by " + error.removeprefix("interrupted by ").split(";")[0]
        else:
            return False
        ended = f"{NOT_RESUMED}run {run_id} was {why}; `aishell fleet resend {fleet_id}` resumes it"
        store.record_not_started(fleet_id, target, ended)
    logger.info("fleet %s: %s: %s", fleet_id, target, ended)
    return True


def still_stopped(store: StateStore, fleet_id: str, target: str, earlier: dict[str, Any]) -> bool:
    """Whether the target's run ended its task stopped on purpose (stopped_for_good) and
    nothing sent its task again since: a delivery again (its worker lost before it was
    acknowledged) leaves it stopped; `fleet resend` clears the end, and resumes it."""
    ended = store.fleet_not_started(fleet_id).get(target)
    shown = standing_refusal(earlier, ended)
    return shown is not None and str(shown["error"]).startswith(NOT_RESUMED)


def slot_lost(config: Config, fleet_id: str, target: str, server: str) -> None:
    """The run's slot on its server was let go under it (its session to the state store
    cut): another worker may take it, so the run stops as `aishell stop` stops it, and
    its task comes back once a slot is free."""
    logger.warning("fleet %s: %s: its slot on %s was lost; its run stops", fleet_id, target, server)
    try:
        with StateStore(config.state_url) as store:
            run_id = store.fleet_run_id(fleet_id, target)
            if run_id is not None:
                store.request_stop(run_id, f"{SLOT_LOST_BY}{server} was lost")
    except StateError as exc:  # the store is gone too: the run meets that itself
        logger.warning("fleet %s: %s: its run could not be told to stop: %s", fleet_id, target, exc)


def after_store_error(config: Config, fleet_id: str, target: str, exc: StateError) -> str:
    """A fleet task the state store failed: TryLater (nothing of the task can be kept
    without it). But a fleet job whose fields are not what the home's key signed (changed
    in the store since it was sent: a safety level, --force or --ignore-window written in;
    or stored without a signature) runs on no target: kept as its refusal, not retried."""
    if not isinstance(exc, StateTampered):
        raise TryLater(config.main.fleet.slot_wait_seconds, f"the state store: {exc}") from None
    with signed_store(config) as store:
        store.record_not_started(fleet_id, target, str(exc))
    return NOT_STARTED
