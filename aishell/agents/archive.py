"""The one rule of an archive a job names (an option of kind `archive`): `file:PATH` or
`table:NAME`, the kind said, never guessed from the text, and a file's path made
absolute where the job is given, not where a scheduler or a worker later runs it.

The command line, `normalize_job` (aishell's log cleanup and every agent on its
declared options) and `schedule add` all read an archive here, so each refuses the
same values in the same words."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aishell.config.options import Option
from aishell.errors import UsageError

ARCHIVE_FORMS = "file:PATH or table:NAME"


def archive_problem(value: object) -> str:
    """Why a value is not an archive, as the end of a sentence naming it ("": it is one):
    a table named like a file (or a file named like a table) must not receive the rows
    meant for the other, so the kind is always said."""
    kind, sep, where = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or kind not in ("file", "table") or not where:
        return f"is not {ARCHIVE_FORMS}"
    # As typed, before pathlib drops a trailing "/" or ".": `old/` and `.` are folders.
    if kind == "file" and os.path.basename(os.path.expanduser(where)) in ("", ".", ".."):
        return "names a folder, not a file"
    return ""


def archive_parts(value: object, flag: str = "--archive-to") -> tuple[str, str]:
    """`file:PATH` -> ("file", the absolute path); `table:NAME` -> ("table", NAME); any
    other value a UsageError naming `flag`. A file's path is taken relative to the
    working folder now; its folder's links are followed, its own name is not (a link
    there is refused by the purge, not written through)."""
    wrong = archive_problem(value)
    if wrong:
        raise UsageError(f"{flag}: {value!r} {wrong}")
    kind, _, where = str(value).partition(":")
    if kind == "table":
        return kind, where
    given = Path(where).expanduser().absolute()
    return kind, str(given.parent.resolve() / given.name)


def absolute_archive(value: object, flag: str = "--archive-to") -> str:
    """The archive as a job keeps it: `file:` and an absolute path, or `table:NAME`."""
    kind, where = archive_parts(value, flag)
    return f"{kind}:{where}"


def archives_fixed(options: Iterable[Option], job: Mapping[str, Any]) -> dict[str, Any]:
    """The job with each archive option's `file:` path made absolute here and now (where
    a schedule is added, a job sent), values of no archive's form left for the agent's
    own check to refuse in its words."""
    fixed = dict(job)
    for option in options:
        value = job.get(option.key)
        if option.kind == "archive" and value is not None and not archive_problem(value):
            fixed[option.key] = absolute_archive(value, option.cli_flag)
    return fixed


def relative_archives(options: Iterable[Option], job: Mapping[str, Any]) -> list[str]:
    """The archive options of a job whose `file:` path is relative (a job stored before
    paths were made absolute when it was given): each as `--flag 'file:PATH'`."""
    found = []
    for option in options:
        value = job.get(option.key)
        if option.kind != "archive" or not isinstance(value, str) or archive_problem(value):
            continue
        kind, _, where = value.partition(":")
        if kind == "file" and not Path(where).expanduser().is_absolute():
            found.append(f"{option.cli_flag} {value!r}")
    return found


def refuse_relative_archives(schedule: Mapping[str, Any], options: Iterable[Option]) -> None:
    """A stored schedule's job is refused where it holds a relative file archive (stored
    before `schedule add` made it absolute): it names no one file, the scheduler's folder
    not being the one it was added in, so it is written nowhere."""
    relative = relative_archives(options, schedule["job"])
    if relative:
        raise UsageError(
            f"schedule {schedule['name']} archives to {', '.join(relative)}, a path relative "
            "to no known folder: remove the schedule and add it again (its path is then "
            "fixed where it is added), or give an absolute path"
        )
