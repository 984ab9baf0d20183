"""Fleet tasks sent to the broker, one per target.

The broker is asked first, before the fleet job is recorded: one that refuses, fails or
does not answer within the fleet's timeouts ends the send in one line, nothing sent
and nothing recorded. A failure midway names the fleet job and how many of its tasks
went; `aishell fleet resend` sends them again, which is safe because a target's run of
a fleet job starts once however often its task is delivered.

Each task carries what it was sent with (`sent_with`): every tool's fingerprint, a
digest of the agent's config and of each target's. A worker whose own differ runs none
of it (`unlike`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aishell.config.models import AgentConfig, Config, TargetConfig
from aishell.config.stateurl import display_url
from aishell.errors import BrokerUnreachable
from aishell.fleet.app import RUN_TARGET, make_app
from aishell.registry import Registry
from aishell.units import took

if TYPE_CHECKING:
    from celery import Celery


class Sender:
    """A connection to the broker that answered, and the tasks sent on it."""

    def __init__(self, config: Config, app: Celery, connection: Any) -> None:
        self.config, self.app, self.connection = config, app, connection

    def send(self, fleet_id: str, targets: list[str], carried: dict[str, Any]) -> None:
        """One task per target, in order, each carrying `carried` (sent_with); raises
        BrokerUnreachable naming how many went."""
        for sent, target in enumerate(targets):
            try:
                self.app.send_task(
                    RUN_TARGET,
                    args=[fleet_id, target],
                    kwargs={"sent_with": carried},
                    queue=self.config.main.fleet.queue,
                    connection=self.connection,
                )
            except broker_errors(self.connection) as exc:
                raise BrokerUnreachable(
                    said(self.config, exc, "sending")
                    + f"; {sent} of the {len(targets)} tasks of fleet job {fleet_id} were sent:"
                    f" `aishell fleet resend {fleet_id}` sends the rest once it answers"
                ) from None


@contextmanager
def broker(config: Config, unanswered: str = "nothing was sent") -> Iterator[Sender]:
    """A Sender on a connection the broker has answered; BrokerUnreachable when it did
    not, its line ending with `unanswered` (what did not happen)."""
    app = make_app(config)
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(max_retries=0)
        except broker_errors(connection) as exc:
            raise BrokerUnreachable(f"{said(config, exc, 'connecting')}; {unanswered}") from None
        yield Sender(config, app, connection)


def broker_errors(connection: Any) -> tuple[type[BaseException], ...]:
    """What a broker's failure raises: kombu's own, the transport's, the socket's."""
    from kombu.exceptions import OperationalError

    return (OperationalError, OSError, *connection.connection_errors, *connection.channel_errors)


def said(config: Config, exc: BaseException, doing: str) -> str:
    """One line: which broker, and what it did (with the setting that bounded it)."""
    fleet = config.main.fleet
    text = str(exc).strip() or type(exc).__name__
    lowered = text.lower()
    broker_at = f"The fleet's broker {display_url(fleet.broker_url)}"
    if "timed out" not in lowered and "timeout" not in lowered:
        return f"{broker_at} failed while {doing} ({text})"
    # A connection's handshake is bounded by the connect timeout (RabbitMQ's; Redis
    # says "connecting"); a read once connected by the read timeout.
    if "connecting" in lowered or (doing == "connecting" and "reading" not in lowered):
        waited = f"{took(fleet.connect_timeout_seconds, None)} (fleet.connect_timeout_seconds)"
    else:
        waited = f"{took(fleet.read_timeout_seconds, None)} (fleet.read_timeout_seconds)"
    return f"{broker_at} did not answer within {waited} while {doing}"


def sent_with(
    registry: Registry, agent: AgentConfig, targets: Mapping[str, TargetConfig]
) -> dict[str, Any]:
    """What a fleet task carries of the tools and config it was sent with, for the worker
    to hold its own against: each tool's fingerprint (its definition file's digest), a
    digest of the agent's config as loaded (defaults, capabilities, constraints, purge
    settings; not its comments nor where its file is) and, per target, a digest of each
    setting of its config (_target_prints)."""
    config = {
        "defaults": agent.defaults.model_dump(mode="json"),
        "capabilities": sorted(agent.capabilities),
        "constraints": [c.model_dump(mode="json") for c in agent.constraints],
        "purge": agent.purge.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    return {
        "tools": {n: t.fingerprint for n, t in sorted(registry.tools.items())},
        "agent": digest,
        "targets": {name: _target_prints(t) for name, t in sorted(targets.items())},
    }


# What of a target's config selects it, or describes it, and changes nothing of a run.
_NOT_RUN = ("description", "tags")


def _target_prints(target: TargetConfig) -> dict[str, str]:
    """A digest of each setting of a target's config that its run depends on (where its
    URL leads, its environment, trusted functions, timeouts), so that a worker can name
    which differs. The URL's password, if it holds one, is left out (display_url): a
    broker's queue keeps no secret, not even hashed."""
    settings = target.model_dump(mode="json", exclude=set(_NOT_RUN))
    settings["url"] = display_url(target.url)
    return {
        key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        for key, value in sorted(settings.items())
    }


def unlike(carried: Any, own: dict[str, Any], agent: str) -> list[str]:
    """How a worker's own tools, agent config and target's config (sent_with, over the
    task's one target) differ from what its task carried, each a phrase; [] when they
    are the same. A task that carries none (sent by an aishell before it did) is unlike
    any: nothing says what it was sent with."""
    if not isinstance(carried, dict) or not isinstance(carried.get("tools"), dict):
        return ["the task carries no fingerprint of them (an older aishell sent it)"]
    theirs, mine = carried["tools"], own["tools"]
    found = [f"tool '{name}' is missing here" for name in sorted(set(theirs) - set(mine))]
    found += [
        f"tool '{name}' differs"
        for name in sorted(set(theirs) & set(mine))
        if theirs[name] != mine[name]
    ]
    found += [f"tool '{name}' is only here" for name in sorted(set(mine) - set(theirs))]
    if carried.get("agent") != own["agent"]:
        found.append(f"the {agent} agent's config differs")
    sent = carried.get("targets")
    for name, prints in own["targets"].items():
        held = sent.get(name) if isinstance(sent, dict) else None
        if not isinstance(held, dict):
            found.append(f"the task carries no fingerprint of target '{name}'")
            continue
        differs = sorted(k for k in set(prints) | set(held) if prints.get(k) != held.get(k))
        if differs:
            found.append(f"target '{name}' differs here ({', '.join(differs)})")
    return found
