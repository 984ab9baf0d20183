"""`metrics --textfile -` is refused in one line, as `plan --out -` is: the metrics go to
standard output without the option, and it used to write them into a file named `-` in
the working folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aishell import commands
from aishell.cli import cli
from aishell.config.models import load_config
from aishell.errors import UsageError

REFUSED = (
    "Error: --textfile -: the metrics go to standard output without --textfile; give "
    "node_exporter's textfile a file's name (--textfile aishell.prom)"
)


def test_textfile_dash_is_refused_and_no_file_named_dash_is_made(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cwd-textfile-dash"
    folder.mkdir()
    monkeypatch.chdir(folder)
    done = CliRunner().invoke(cli, ["metrics", "--textfile", "-"])
    assert done.exit_code == 2, done.output
    assert done.output.strip().splitlines() == [REFUSED]
    assert list(folder.iterdir()) == []
    # A file named as a file is written, and the metrics still go to standard output
    # without the option.
    saved = CliRunner().invoke(cli, ["metrics", "--textfile", "aishell.prom"])
    assert saved.exit_code == 0, saved.output
    assert [p.name for p in folder.iterdir()] == ["aishell.prom"]
    shown = CliRunner().invoke(cli, ["metrics"])
    assert shown.exit_code == 0 and shown.stdout.startswith("# HELP"), shown.output


def test_the_library_refuses_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a `-` it wrote would be
    with pytest.raises(UsageError, match="^--textfile -: the metrics go to standard output"):
        commands.metrics(load_config(home=home), Path("-"))
