"""The listings' cache takes an entry only from the code that runs: a process that lives
on while a module under it changes (aishell upgraded under `serve`) keeps its old code,
so its entries are not used by the new code, and it uses none the new code made."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from aishell.config.cache import cached, keep

KEY = "the same sources"
# A fresh process with the module's folder on its path: it imports the module as the
# file now is, and keeps or reads one entry.
FRESH = """
import sys
sys.path.insert(0, sys.argv[1])
import {module}
from pathlib import Path
from aishell.config.cache import cached, keep
if sys.argv[2] == "keep":
    keep(Path(sys.argv[3]), {key!r}, {{"made by": "new"}})
else:
    print(cached(Path(sys.argv[3]), {key!r}))
"""


def _fresh(folder: Path, module: str, action: str, entry: Path) -> str:
    script = FRESH.format(module=module, key=KEY)
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), action, str(entry)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def old_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[Path, str, Path]:
    """A module this process imported, whose file then changed (a new version)."""
    folder = tmp_path / "code"
    folder.mkdir()
    name = f"served_{tmp_path.name.replace('-', '_')}"
    source = folder / f"{name}.py"
    source.write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.import_module(name)
    request.addfinalizer(lambda: sys.modules.pop(name, None))
    keep(tmp_path / "cache" / "before.json", KEY, {"made by": "old"})  # its first look
    source.write_text("VERSION = 22\n")
    return folder, name, tmp_path / "cache"


def test_an_entry_the_old_code_made_after_an_upgrade_is_not_used_by_the_new(
    old_module: tuple[Path, str, Path],
) -> None:
    folder, name, cache = old_module
    keep(cache / "after.json", KEY, {"made by": "old"})
    assert cached(cache / "after.json", KEY) == {"made by": "old"}  # the old code's own
    assert _fresh(folder, name, "read", cache / "after.json") == "None"
    assert _fresh(folder, name, "read", cache / "before.json") == "None"
    # The new code's own entries are used by the new code.
    _fresh(folder, name, "keep", cache / "new.json")
    assert _fresh(folder, name, "read", cache / "new.json") == "{'made by': 'new'}"


def test_the_old_code_uses_no_entry_the_new_code_made(
    old_module: tuple[Path, str, Path],
) -> None:
    folder, name, cache = old_module
    _fresh(folder, name, "keep", cache / "new.json")
    assert cached(cache / "new.json", KEY) is None
