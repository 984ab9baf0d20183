"""The backup tests' fixtures."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.engine import make_url

from tests.services import scratch_mysql


@dataclass(frozen=True)
class Source:
    """A scratch MariaDB database of the test's own, dropped after it: its URL, and its
    name (what a dump's SQL names it by)."""

    url: str
    name: str


@pytest.fixture
def mariadb_source() -> Iterator[Source]:
    with scratch_mysql() as url:
        yield Source(url, str(make_url(url).database))


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The child processes a test starts: any still running when it ends is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
