"""`aishell serve --http` started on a port the system picks, for the tests of the web view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serving(home: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The home's web view serving: its process (stderr a pipe) and its URL. Stopped
    as its operator stops it (SIGTERM) when still running at the end."""
    serve = subprocess.Popen(
        [sys.executable, "-m", "aishell", "serve", "--http", "--port", "0"],
        env={**os.environ, "AISHELL_HOME": str(home), "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        first = serve.stderr.readline()
        assert first.startswith("Serving http://127.0.0.1:"), first + serve.stderr.read()
        yield serve, first.split()[1]
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
