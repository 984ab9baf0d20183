"""A password's "@" written into a URL as it is, not as %40: the URL's parser ends the
password at the first "@" and took the rest of it for the host, which `targets list`
showed (`postgres:***@TAIL@db1/shop`), as did every connection error and `doctor`. Now
the URL is refused when the config is read, in one line that shows neither part, as
`targets add` refuses it, and as the state store's URL is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli
from tests.helpers import read_yaml, write_yaml

HEAD, TAIL = "Kp2-head", "Zr9-tail"
URLS = [
    f"postgresql+psycopg://dba:{HEAD}@{TAIL}@127.0.0.1/shop",
    f"mysql+pymysql://root:{HEAD}@{TAIL}@127.0.0.1:3306/shop",
    f"postgresql://dba:{HEAD}@{TAIL}@db1.example/shop",
]
ARGV = [
    ["targets", "list"],
    ["targets", "list", "--json"],
    ["targets", "check", "db", "--json"],
    ["run", "maintenance", "--type", "quick", "--dry-run"],
]


@pytest.mark.parametrize("where", ["target", "state"])
@pytest.mark.parametrize("url", URLS)
def test_a_raw_at_in_a_urls_password_is_refused_without_showing_it(
    url: str, where: str, home: Path
) -> None:
    path = home / "config" / "aishell.yaml"
    data = read_yaml(path)
    if where == "target":
        data["targets"]["db"] = {"url": url}
        data["default_target"] = "db"
    else:
        data["state"] = {"url": url}
    write_yaml(path, data)
    key = "targets.db.url" if where == "target" else "state.url"
    for argv in ARGV:
        result = CliRunner().invoke(cli, argv)
        said = result.output + result.stderr
        assert result.exit_code == 2, (argv, said)
        assert HEAD not in said and TAIL not in said, said
        line = (
            f"{path}: {key}: the URL's host holds '@': write an '@' of the user or password as %40"
        )
        if "--json" in argv:
            assert json.loads(result.stdout)["error"]["message"].startswith(line), said
        else:
            assert line in said, said
