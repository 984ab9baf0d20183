"""An aishell agent that archives the old range partitions of a PostgreSQL table.

`partition_archive` finds the partitions of a declared parent that ended before a
retention cutoff, detaches them (concurrently where the server allows), copies each into
an archive schema, and drops each one only once its copy holds as many rows. Its tools
ship in `tools/` beside this file, offered to aishell through the `aishell.tools` entry
point; their handlers live in `handlers.py` and are named there by dotted path.
"""

from __future__ import annotations

from pathlib import Path


def tool_folder() -> Path:
    """The folder of this package's tool files (the `aishell.tools` entry point)."""
    return Path(__file__).parent / "tools"
