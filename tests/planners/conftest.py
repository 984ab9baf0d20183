"""What the planner tests share: a local server speaking the Ollama API, answering as
each test's script says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aishell.config.models import Config
from tests.fake_ollama import Script, fake_ollama


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def ollama_host(script: Script) -> Iterator[str]:
    with fake_ollama(script) as host:
        yield host


def planner_settings(host: str, tries: int) -> dict[str, Any]:
    """The model planner's settings for the server at `host`, asked `tries` times a run."""
    llm = {"host": host, "model": "planner-test", "tries": tries, "retry_backoff_seconds": 0.01}
    return {"planner": {"llm": llm}}


def one_try(host: str) -> dict[str, Any]:
    return planner_settings(host, 1)


@pytest.fixture
def llm_config(demo_db: Path, edit_config: Any, ollama_host: str) -> Config:
    """The demo target, its model planner asked once a run."""
    return edit_config(one_try(ollama_host))
