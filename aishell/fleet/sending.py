"""Fleet tasks sent to the broker, one per target.

The broker is asked first, before the fleet job is recorded: one that refuses, fails or
does not answer within the fleet's timeouts ends the send in one line, nothing sent
and nothing recorded. A failure midway names the fleet job and how many of its tasks
went; `aishell fleet resend` sends them again, which is safe because a target's run of
a fleet job starts once however often its task is delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aishell.config.models import Config
from aishell.config.stateurl import display_url
from aishell.errors import BrokerUnreachable
from aishell.fleet.app import RUN_TARGET, make_app

if TYPE_CHECKING:
    from celery import Celery


class Sender:
    """A connection to the broker that answered, and the tasks sent on it."""

    def __init__(self, config: Config, app: Celery, connection: Any) -> None:
        self.config, self.app, self.connection = config, app, connection

    def send(self, fleet_id: str, targets: list[str]) -> None:
        """One task per target, in order; BrokerUnreachable naming how many went."""
        for sent, target in enumerate(targets):
            try:
                self.app.send_task(
                    RUN_TARGET,
                    args=[fleet_id, target],
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
        waited = f"{fleet.connect_timeout_seconds}s (fleet.connect_timeout_seconds)"
    else:
        waited = f"{fleet.read_timeout_seconds:g}s (fleet.read_timeout_seconds)"
    return f"{broker_at} did not answer within {waited} while {doing}"
