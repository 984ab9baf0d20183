"""Listings of what aishell works on and with: targets, tools, backups, the demo database."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aishell.render.base import RISK_STYLE, UNWRAPPED_WIDTH, human_size, plain, safe_text, styled
from aishell.units import age_words


def demo_result(out: Console, result: dict[str, Any]) -> None:
    rows = ", ".join(f"{t} {n:,}" for t, n in result["tables"].items())
    out.print(
        Text.assemble(
            "Demo database for target ",
            safe_text(result["target"], "bold"),
            ": ",
            safe_text(result["path"]),
        )
    )
    out.print(safe_text(f"{human_size(result['size_bytes'])}; rows: {rows}"))


# --- backups ------------------------------------------------------------------------------

ON_DISK = (
    "on disk: a file of the recorded size is at its path (not read here; restore and "
    "validation check its sha256)"
)


def backups_table(
    out: Console, rows: list[dict[str, Any]], freshness: dict[str, dict[str, Any]]
) -> None:
    if not rows:
        out.print("No backups yet.")
        return
    # The targets listed, and any whose newest restorable backup was taken as another.
    shown = {r["target"] for r in rows} | {t for t, f in freshness.items() if f["backup_id"]}
    for target in sorted(shown):
        out.print(_freshness_line(target, freshness.get(target)))
    table = Table()
    columns = (
        "id",
        "target",
        "kind",
        "taken (UTC)",
        "host",
        "size",
        "verified (UTC)",
        "file",
        "path",
    )
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("id", "taken (UTC)"))
    for row in rows:
        table.add_row(
            str(row["id"]),
            safe_text(row["target"]),
            safe_text(row["kind"]),
            row["created_at"][:16].replace("T", " "),
            safe_text(row.get("host") or "?"),
            human_size(row["size_bytes"]),
            _verified_cell(row),
            _file_cell(row.get("file")),
            safe_text(row["path"]),
        )
    out.print(table)
    if any(row.get("file") == "on disk" for row in rows):
        # The listing stats each file, never reads it: a big backup's hash takes minutes.
        out.print(safe_text(ON_DISK))
    for row in rows:  # restore, validation and retention refuse it: the line says why
        if row.get("seal_error"):
            out.print(safe_text(row["seal_error"], "red"))


def _freshness_line(target: str, newest: dict[str, Any] | None) -> Text:
    """A target's newest backup proven restorable, of the database it reaches now
    (commands.backup_freshness), or why none is vouched."""
    if newest is None or newest["backup_id"] is None:
        why = "no backup proven restorable" if newest is None else newest["reason"]
        return safe_text(f"{target}: {why}", "red")
    taken = "" if newest["taken_as"] == target else f" (taken as {newest['taken_as']})"
    return safe_text(
        f"{target}: newest backup proven restorable is id {newest['backup_id']}{taken}, "
        f"{age_words(newest['age_seconds'])} old"
    )


def _verified_cell(row: dict[str, Any]) -> Text:
    """When a restore proved the backup; else whether a quick validation decoded it (no
    proof it restores) or nothing proved it at all (`proof`: commands.list_backups); a
    row not what the home's key signed, refused, whatever it says."""
    if row.get("seal_error"):
        return Text("refused", style="red")
    if row["verified_at"]:
        return safe_text(row["verified_at"][:16].replace("T", " "))
    if row.get("proof") == "decoded":
        return Text("decoded only", style="yellow")
    return Text("no", style="red")


def _file_cell(state: str | None) -> Text:
    """Whether the backup's file is here to restore (commands.list_backups says)."""
    style = {"on disk": "green", "elsewhere": "yellow", "missing": "red"}.get(state or "", "")
    return Text(state or "?", style=style)


def backup_detail(out: Console, row: dict[str, Any]) -> None:
    out.print(
        Text.assemble(
            (f"Backup {row['id']}", "bold"),
            plain(f" of {row['target']} ({row['kind']}): {row['path']}"),
        )
    )
    out.print(
        safe_text(
            f"sha256 {row['sha256']}; {human_size(row['size_bytes'])}; taken {row['created_at']}"
            f" on {row.get('host') or 'an unknown host'}"
        )
    )
    manifest = row["manifest"] or {}
    out.print(safe_text(f"server {manifest.get('server_version')}; tool {manifest.get('tool')}"))
    for table, count in (manifest.get("tables") or {}).items():
        out.print(safe_text(f"  {table}: {count:,} rows"))
    out.print(_validation_line(row))
    if row.get("seal_error"):
        out.print(safe_text(row["seal_error"], "red"))
    left = (row["verification"] or {}).get("not_restored") if row["verified_at"] else None
    if isinstance(left, list) and left:
        # Left out of the proof so as to run none of the database's code: a restore into
        # a target makes them, and may fail there.
        out.print(
            safe_text(
                "not covered by the proof (left out of the scratch restore, as they run the "
                f"database's code): {', '.join(map(str, left))}",
                "yellow",
            )
        )
    if row.get("file") and row["file"] != "on disk":
        out.print(_file_line(row["file"]))


def _validation_line(row: dict[str, Any]) -> Text:
    """What the backup's last validation proved: restored (verified), only decoded by a
    quick one (never restored, so not restorable by `aishell restore`), or failed."""
    verification = row["verification"] or {}
    if row["verified_at"]:
        return Text(f"verified {row['verified_at']} (restored)", style="green")
    if row.get("proof") == "decoded":
        return Text(
            "decoded whole by a quick validation, never restored: not proven restorable",
            style="yellow",
        )
    if verification:
        problems = verification.get("problems") if isinstance(verification, dict) else None
        said = "; ".join(map(str, problems)) if isinstance(problems, list) and problems else None
        return safe_text(f"failed validation: {said or 'no reason recorded'}", "red")
    return Text("never validated", style="yellow")


def _file_line(state: str) -> Text:
    if state == "elsewhere":
        return Text("file: on the host that took it, not on this one", style="yellow")
    return Text("file: missing (deleted, moved or not the size recorded)", style="red")


# --- targets ------------------------------------------------------------------------------


def targets_table(out: Console, rows: list[dict[str, Any]]) -> None:
    table = Table()
    for column in ("target", "dialect", "environment", "tags", "location", "description"):
        table.add_column(column, overflow="fold", no_wrap=column == "target")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        table.add_row(
            *(
                safe_text(value)
                for value in (
                    name,
                    row["dialect"],
                    row["environment"],
                    ", ".join(row["tags"]),
                    row["location"],
                    row["description"],
                )
            )
        )
    out.print(table)


def target_added(out: Console, added: dict[str, Any]) -> None:
    out.print(safe_text(f"Added target {added['name']} ({added['url']}) to {added['file']}"))
    for warning in added["warnings"]:
        out.print(safe_text(f"warning: {warning}", "yellow"))
    if added["checked"]:
        target_check(out, added["checked"])
    else:
        out.print(safe_text(f"Not checked; `aishell targets check {added['name']}` logs in."))


def target_check(out: Console, info: dict[str, Any]) -> None:
    out.print(
        Text.assemble(
            (plain(info["target"]), "bold"),
            plain(f" ({info['dialect']}): {info['server_version']}; {info['tables']} tables"),
        )
    )
    for key, value in info["privileges"].items():
        shown = "\n  ".join(map(plain, value)) if isinstance(value, list) else plain(value)
        out.print(Text(f"  {plain(key)}: {shown}"))
    if info["extensions"]:
        out.print(safe_text(f"  extensions: {', '.join(info['extensions'])}"))
    for warning in info["warnings"]:
        out.print(safe_text(f"warning: {warning}", "yellow"))


def targets_checked(out: Console, checked: list[dict[str, Any]]) -> None:
    """Each target `targets check --targets` checked: what it found, or why it could not."""
    for info in checked:
        if "error" in info:
            out.print(
                Text.assemble((plain(info["target"]), "bold"), (plain(f": {info['error']}"), "red"))
            )
        else:
            target_check(out, info)


# --- tools --------------------------------------------------------------------------------


def tools_table(out: Console, found: list[dict[str, Any]]) -> None:
    """Tools as `tools list` gives them: each one's metadata (ToolDefinition.metadata)."""
    table = Table()
    for column in ("tool", "category", "risk", "approval", "dialects", "description"):
        table.add_column(column, overflow="fold", no_wrap=column == "tool")
    for tool in found:
        table.add_row(
            safe_text(tool["name"]),
            safe_text(tool["category"]),
            styled(tool["risk_level"], RISK_STYLE),
            "always" if tool["requires_approval"] else "by policy",
            safe_text(", ".join(tool["dialects"])),
            safe_text(tool["description"]),
        )
    out.print(table)


def _by_dialect(lists: dict[str, list[str]]) -> list[str]:
    """Sentences that hold on every engine once; the others under their engine's name."""
    values = list(lists.values())
    if all(v == values[0] for v in values):
        return values[0] if values else []
    return [f"{dialect}: {s}" for dialect, sentences in lists.items() for s in sentences]


def _locks(by_dialect: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each engine's locks, what they are on, how long held, and what bounds the wait
    when it is not the target's lock wait."""
    lines = []
    for dialect, locks in by_dialect.items():
        lines += [f"{dialect}: no lock on the target's tables"] if not locks else []
        lines += [
            f"{dialect}: {lock['lock']} on {lock['object']}, {lock['held']}"
            + (f" (lock wait: {lock['wait']})" if lock["wait"] else "")
            for lock in locks
        ]
    return lines


def _described_grid(data: dict[str, Any]) -> Table:
    """A tool's or an agent's facts, its description first: a row wraps to the width
    it is shown in, where a panel's title is cut off at it."""
    grid = Table.grid(padding=(0, 2))
    grid.add_row("description", safe_text(data["description"], newlines=True))
    return grid


def _print_named(out: Console, grid: Table, data: dict[str, Any]) -> None:
    """A tool's or an agent's facts, titled with its name: in a panel on a terminal; in
    a pipe or a file, whose lines are never broken, the name and then the rows, each no
    longer than its text (a panel would pad every row to the longest, a description of a
    thousand characters and more)."""
    if out.width < UNWRAPPED_WIDTH:
        out.print(Panel(grid, title=safe_text(data["name"]), title_align="left", expand=False))
        return
    with out.capture() as captured:
        out.print(grid)
    out.print(safe_text(data["name"]))
    out.file.write("".join(f"{line.rstrip()}\n" for line in captured.get().splitlines()))


def tool_detail(out: Console, data: dict[str, Any]) -> None:
    grid = _described_grid(data)
    grid.add_row("category", safe_text(data["category"]))
    grid.add_row("risk", styled(data["risk_level"], RISK_STYLE))
    grid.add_row("capabilities", safe_text(", ".join(data["required_capabilities"])))
    grid.add_row("approval", "always" if data["requires_approval"] else "by policy")
    grid.add_row("destructive", "yes" if data["destructive"] else "no")
    grid.add_row("idempotent", "yes" if data["idempotent"] else "no")
    grid.add_row("max time", f"{data['max_execution_time']} s")
    for name, spec in (data["params"].get("properties") or {}).items():
        required = name in (data["params"].get("required") or [])
        default = f" (default {spec['default']!r})" if "default" in spec else ""
        grid.add_row(
            safe_text(f"param {name}"),
            safe_text(
                f"{spec.get('type')}{' required' if required else ''}{default}: "
                f"{spec.get('description', '')}"
            ),
        )
    for key in ("risks", "mitigations"):
        lines = _by_dialect(data[key])
        if lines:
            grid.add_row(key, safe_text("\n".join(lines), newlines=True))
    grid.add_row("locks", safe_text("\n".join(_locks(data["locks"])), newlines=True))
    if data["notes"]:
        grid.add_row("notes", safe_text(data["notes"], newlines=True))
    _print_named(out, grid, data)
    out.print(safe_text(f"SQL for example params {json.dumps(data['example_params'])}:"))
    for dialect, statements in data["sql"].items():
        out.print(safe_text(f"-- {dialect}", "bold"))
        for sql in statements:
            out.print(safe_text(sql, newlines=True))
    for dialect, statements in data.get("second_session", {}).items():
        out.print(safe_text(f"-- {dialect}, in a second session of the step", "bold"))
        for sql in statements:
            out.print(safe_text(" ".join(sql.split()), newlines=True))


# --- agents -------------------------------------------------------------------------------


def agent_detail(out: Console, data: dict[str, Any]) -> None:
    """An agent whole (commands.show_agent): a plugin's words are anyone's, printed as
    text, never as terminal controls."""
    grid = _described_grid(data)
    grid.add_row("package", safe_text(data["package"]))
    for key in data["job_keys"]:
        grid.add_row(safe_text(f"job {key['flag'] or key['key']}"), safe_text(_job_key(key)))
    own = data["config"]
    grid.add_row("config", safe_text(own["file"] or "none: the defaults, every capability"))
    defaults = ", ".join(f"{k} {v}" for k, v in own["default_config"].items() if v is not None)
    grid.add_row("defaults", safe_text(defaults))
    grid.add_row("capabilities", safe_text(", ".join(own["capabilities"])))
    for constraint in own["safety_constraints"]:
        grid.add_row("constraint", safe_text(json.dumps(constraint, sort_keys=True)))
    for engine, privileges in sorted(data["privileges"].items()):
        grid.add_row(safe_text(f"needs on {engine}"), safe_text("; ".join(privileges)))
    _print_named(out, grid, data)
    tools = Table("tool", "risk", "category", "description", title="Tools it may plan")
    for tool in [*data["tools"], *data["joining_tools"]]:
        if tool.get("missing"):
            tools.add_row(safe_text(tool["name"]), "", "", "not in the catalog")
            continue
        joins = f" (joins after {tool['after']})" if "after" in tool else ""
        tools.add_row(
            safe_text(tool["name"] + joins),
            styled(tool["risk_level"], RISK_STYLE),
            safe_text(tool["category"]),
            safe_text(_first_sentence(tool["description"])),
        )
    out.print(tools)
    if not data["schedules"]:
        out.print(safe_text(f"No schedule runs {data['name']}."))
    for each in data["schedules"]:
        state = "paused" if each["paused"] else f"next {each['next_run'] or '-'}"
        if each.get("seal_error"):  # serve runs none of its triggers
            state = "never: changed outside aishell"
        line = f"schedule {each['name']}: {each['cron']} ({each['timezone']}), {state}"
        out.print(safe_text(line))


def _first_sentence(words: str, width: int = 90) -> str:
    """The start of a tool's description, as a line of a table (`tools show` says it all)."""
    first = words.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 1].rstrip() + "…"


def _job_key(key: dict[str, Any]) -> str:
    bounds = [
        f"one of {', '.join(map(str, key['choices']))}" if "choices" in key else "",
        f"from {key['minimum']}" if "minimum" in key else "",
        f"to {key['maximum']}" if "maximum" in key else "",
        f"default {key['default']}" if "default" in key else "",
        "required" if key.get("required") else "",
    ]
    said = ", ".join(b for b in bounds if b)
    return f"{key['kind']}{f' ({said})' if said else ''}: {key['help']}"
