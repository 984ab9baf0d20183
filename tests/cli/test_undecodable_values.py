"""A value on the command line holding bytes the locale cannot decode (a run id or a
name typed under another encoding, a script's binary garbage) is one line naming the
option, before anything reads or stores it: Python keeps such bytes as surrogates,
which no SQLite query, server or file takes (`runs show` failed with an internal
error). A path may hold them: the system takes a file name's bytes as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HANG = 120  # seconds: a hang detector, never a timing assertion
BAD = os.fsencode("\udcff\udcfe")


@pytest.mark.parametrize(
    ("words", "option"),
    [
        ([b"runs", b"show", b"r" + BAD], "RUN_ID"),
        ([b"approve", b"r" + BAD], "RUN_ID"),
        ([b"runs", b"list", b"--targets", b"t" + BAD], "--targets"),
        ([b"plan", b"maintenance", b"--target", BAD], "--target"),
        (
            [b"targets", b"add", b"x", b"sqlite:///x.db", b"--description", b"d" + BAD],
            "--description",
        ),
    ],
)
def test_an_undecodable_value_is_one_line(
    home: Path, demo_db: Path, words: list[bytes], option: str
) -> None:
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"aishell", *words],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.splitlines() == [
        f"Error: Invalid value for '{option}': the value holds bytes that are not text in "
        "the locale's encoding"
    ], err
