"""A purge whose server falls silent mid-batch ends within the documented bound after a
signal: the statement is cut read_timeout_seconds after the stop, and the purge's
reconnect, which a lost session sets off, looks at the stop before it tries the server
(and while it waits between tries), rather than after a connect that waits its whole
connect_timeout_seconds on the same silent server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from aishell import commands
from aishell.config.models import load_config
from aishell.errors import EXIT_DENIED
from tests.faultproxy import Proxy, server_port, through
from tests.handlers.purge.test_log_cleanup import fill
from tests.services import scratch_postgresql
from tests.targets.test_limits import configure

READ_TIMEOUT = 1
# Far longer than the bound below: a reconnect that tried the silent server first would
# wait all of it.
CONNECT_TIMEOUT = 40
# From the signal to the command's end: the cancel's wait and the socket's close
# (read_timeout_seconds), the run lock's release (as long again on a silent server), the
# bookkeeping and the child's exit; generous for a loaded two-core machine.
SLACK = 15
HANG = 60


def test_a_signal_ends_a_purge_on_a_silent_server_without_waiting_to_reconnect(
    home: Path,
) -> None:
    with scratch_postgresql() as url:
        fill(url)
        proxy = Proxy(server_port(url))
        try:
            configure(
                home,
                through(proxy.port, url),
                load=False,
                read_timeout_seconds=READ_TIMEOUT,
                connect_timeout_seconds=CONNECT_TIMEOUT,
            )
            # The first batch's DELETE never reaches the server; nothing more passes.
            freezer = proxy.freeze_once_held(b"DELETE", wait=HANG)
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aishell",
                    "run",
                    "log-cleanup",
                    "--table",
                    "events",
                    "--retention-days",
                    "30",
                    "--max-batch-size",
                    "50",
                    "--non-interactive",
                ],
                env={**os.environ, "AISHELL_HOME": str(home)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                freezer.join(HANG)
                assert proxy.silent.is_set(), child.communicate(timeout=HANG)
                time.sleep(0.5)  # the batch waits on the frozen proxy
                child.send_signal(signal.SIGTERM)
                since = time.monotonic()
                out, err = child.communicate(timeout=CONNECT_TIMEOUT + HANG)
                took = time.monotonic() - since
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        finally:
            proxy.close()
    assert took < 2 * READ_TIMEOUT + SLACK, (took, err)
    assert child.returncode == EXIT_DENIED, (child.returncode, out, err)
    config = load_config(home=home)
    (run,) = commands.list_runs(config, limit=1)
    shown = commands.show_run(config, run["run_id"])
    assert shown["status"] == "interrupted", shown["error"]
    purge = shown["steps"][1]
    assert purge["tool"] == "delete_old_records" and purge["status"] == "interrupted", purge
