"""A URL pasted where a name or a choice belongs holds a password: the error line that
echoes what was typed shows it without the password (or a secret query value), in text
and in --json, whichever slot it was typed in."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell.cli import cli

SECRET = "s3cret-Pw"
URLS = [
    f"postgresql://dba:{SECRET}@db.example/prod",
    f"mysql+pymysql://root:{SECRET}@10.0.0.5:3306/shop",
    f"postgresql://dba@db.example/prod?password={SECRET}",
]
SLOTS = [
    ("run", "{url}"),  # an agent's name
    ("run", "maintenance", "--type", "{url}"),  # a choice
    ("runs", "show", "{url}"),  # a run id
    ("schedule", "remove", "{url}"),  # a schedule's name
    ("run", "maintenance", "--target", "{url}"),  # a target's name
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("slot", SLOTS, ids=lambda s: " ".join(s[:-1] if "{url}" in s[-1] else s))
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_url_typed_where_it_does_not_belong_is_echoed_without_its_password(
    url: str, slot: tuple[str, ...], as_json: bool, tmp_path: Path
) -> None:
    words = [w.replace("{url}", url) for w in slot]
    if as_json:
        words.append("--json")
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), *words])
    said = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code != 0, said
    assert SECRET not in said, said
    # Where the URL is echoed (its host in the line), it is there without its secret.
    if "db.example" in said or "10.0.0.5" in said:
        assert "***" in said, said
