"""A MySQL target's client key passphrase (PyMySQL's `ssl_key_password`, given in the
URL's query) is a secret like the password: `targets list` and the listings' cache
show and keep it as ***."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from aishell.cli import cli


def test_a_key_passphrase_in_a_mysql_url_is_never_shown_nor_cached(home: Path) -> None:
    secret = "Zq-Passphrase-7391"
    path = home / "config" / "aishell.yaml"
    data = yaml.safe_load(path.read_text())
    data["targets"]["shop"] = {
        "url": f"mysql+pymysql://app@127.0.0.1:3306/shop?ssl_key_password={secret}"
    }
    path.write_text(yaml.safe_dump(data))
    shown = CliRunner().invoke(cli, ["targets", "list", "--json"])
    assert shown.exit_code == 0, shown.output
    (shop,) = [t for t in json.loads(shown.stdout)["targets"] if t["name"] == "shop"]
    assert shop["location"].endswith("?ssl_key_password=***"), shop["location"]
    plain = CliRunner().invoke(cli, ["targets", "list"], env={"COLUMNS": "250"})
    assert plain.exit_code == 0 and "ssl_key_password=***" in plain.output, plain.output
    for said in (shown.output, plain.output):
        assert secret not in said
    for kept in home.rglob("*"):
        if kept.is_file() and kept != path:
            assert secret.encode() not in kept.read_bytes(), kept
