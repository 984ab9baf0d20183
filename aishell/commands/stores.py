"""The state store as commands that start, resume, approve or show a run open it: with
the home's signing key, so what it holds about a run is signed and checked."""

from __future__ import annotations

from aishell.config.models import Config
from aishell.state import signing
from aishell.state.store import StateStore


def signed_store(config: Config) -> StateStore:
    """The store with the home's key (made on first use, as for plan files)."""
    return StateStore(config.state_url, key=signing.load_key(config.home))


def checking_store(config: Config) -> StateStore:
    """The store with the home's key when it has one (made by no listing): what it holds
    is checked, and a home without the key checks nothing."""
    return StateStore(config.state_url, key=signing.load_key(config.home, create=False))
