"""`aishell backups adopt`: what a person is asked to sign, and what was signed."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from aishell.render.base import human_size, safe_text


def adoption_preview(out: Console, checked: dict[str, Any]) -> None:
    """Each row whose file matched it, as it will be signed, and each refused."""
    for row in checked["ready"]:
        verified = row["verified_at"] or "never"
        out.print(
            safe_text(
                f"backup {row['id']} of {row['target']} ({row['kind']}), taken "
                f"{row['created_at']}, restore-proven {verified}: {row['path']}"
            )
        )
        out.print(
            safe_text(
                f"  sha256 {row['sha256']}, {human_size(row['size_bytes'])}: matches its "
                f"file; database {row['database'] or 'not named by its manifest'}"
                + (f"; builds on backup {row['builds_on']}" if row.get("builds_on") else "")
            )
        )
    adoption_refusals(out, checked["refused"])


def adoption_refusals(out: Console, refused: list[dict[str, Any]]) -> None:
    for each in refused:
        out.print(safe_text(str(each["why"]), "red"))


def adoption_result(out: Console, result: dict[str, Any]) -> None:
    """Which rows were signed, which were signed already, and each refusal's line."""
    if result["adopted"]:
        ids = ", ".join(map(str, result["adopted"]))
        out.print(Text(f"Signed with this home's key: backup {ids}", style="green"))
    if result["already_signed"]:
        ids = ", ".join(map(str, result["already_signed"]))
        out.print(safe_text(f"Already signed, left as they are: backup {ids}"))
    adoption_refusals(out, result["refused"])
    if not result["adopted"] and not result["already_signed"] and not result["refused"]:
        out.print(safe_text("No backup row to adopt: every kept one is signed"))
