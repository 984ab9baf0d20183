"""A local request is served without the token only when its Host header is a host and
a port alone, naming this host: `127.0.0.1:1@evil.example` (a port that is no number)
names no host, and is judged as one naming another (403), as a name of its own a
rebinding page points at 127.0.0.1 is.

Before, all that came after the last colon was dropped as the port, whatever it was,
and such a header read as 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from aishell.config.models import Config
from aishell.view.access import names_this_host
from tests.conftest import EditConfig
from tests.fleet.builders import build_fleet, fleet_config
from tests.fleet.test_web import client

ODD = ("127.0.0.1:1@evil.example", "localhost:80 evil.example", "[::1]@evil.example", "[::1]:x")


@pytest.mark.parametrize("host", ODD)
def test_a_host_header_with_more_than_a_port_is_refused(
    edit_config: EditConfig, home: Path, demo_template: Path, host: str
) -> None:
    config: Config = fleet_config(edit_config, home, demo_template)
    build_fleet(config)
    answer = client(config).get("/runs", headers={"Host": host})
    assert answer.status_code == 403 and "Host header" in answer.text


def test_a_host_and_a_port_name_this_host() -> None:
    for host in (
        "localhost",
        "LOCALHOST:8765",
        "127.0.0.1:8765",
        "[::1]",
        "[::1]:8765",
        "localhost.",
        "localhost:",
    ):
        assert names_this_host(host.encode()), host
    for host in (*ODD, "evil.example", "127.0.0.1.evil.example:80"):
        assert not names_this_host(host.encode()), host
