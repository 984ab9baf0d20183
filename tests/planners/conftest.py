"""What the planner tests share: a local server speaking the Ollama API, answering as
each test's script says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_ollama import Script, fake_ollama


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def ollama_host(script: Script) -> Iterator[str]:
    with fake_ollama(script) as host:
        yield host
