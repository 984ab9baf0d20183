"""The circuit breaker: a target that keeps failing to connect is left alone a while,
so that a schedule does not hammer a server that is down (or a login that is wrong).

A target's breaker is keyed by its name with what it connects to (its URL, the password
shown as ***, and password_env's name): another home's target of the same name, or this
one pointed elsewhere since, starts closed. A password fixed in its variable or file
keeps the key, so `aishell targets check NAME` that connects closes it at once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from aishell.config.dburl import resolve_url
from aishell.config.models import Config
from aishell.config.stateurl import display_url
from aishell.errors import TargetUnreachable
from aishell.state.store import StateStore, signed_store
from aishell.units import took


def breaker_key(config: Config, target: str) -> str:
    """The key of `target`'s breaker in the state store (no password in it)."""
    name, settings = config.target(target)
    where = f"{display_url(resolve_url(settings.url, config.home))}\0{settings.password_env}"
    # A path not valid UTF-8 keeps its bytes (surrogateescape), as the file system gave them.
    return f"{name} {hashlib.sha256(where.encode(errors='surrogateescape')).hexdigest()[:12]}"


@contextmanager
def circuit_breaker(config: Config, store: StateStore, target: str) -> Iterator[None]:
    """Refuse a target whose breaker is open; count a failed connection, and close the
    breaker on a good one."""
    key = breaker_key(config, target)
    opened = store.breaker_open_until(key)
    if opened is not None:
        until, failures, error = opened
        raise TargetUnreachable(
            f"Target '{target}' failed to connect {failures} times in a row (last: {error}); "
            f"aishell leaves it alone until {until:%H:%M:%S} UTC, or until `aishell targets "
            f"check {target}` connects"
        )
    settings = config.main.circuit_breaker
    try:
        yield
    except TargetUnreachable as exc:
        cool_down = settings.cool_down_seconds
        count = store.connection_failed(key, str(exc), settings.failures, cool_down)
        if count >= settings.failures:
            raise TargetUnreachable(
                f"{exc}; {count} failures in a row, so aishell leaves '{target}' alone for "
                f"{took(cool_down, None)} (`aishell targets check {target}` ends that "
                "once it connects)"
            ) from None
        raise
    else:
        store.connection_succeeded(key)


def close_breakers(config: Config, targets: Iterable[str]) -> None:
    """The targets connected to (a check): their breakers close."""
    keys = [breaker_key(config, t) for t in targets]
    if keys:
        with signed_store(config) as store:
            for key in keys:
                store.connection_succeeded(key)
