"""Human output with rich: tables, progress, the approval prompt. Nothing here decides.

Callers use `render.X`; each X lives in the submodule of its subject, imported when X
is first used (aishell.lazy).
"""

from typing import TYPE_CHECKING

from aishell.lazy import exports

__all__ = [
    "RISK_STYLE",
    "STATUS_STYLE",
    "StepProgress",
    "adoption_preview",
    "adoption_result",
    "agent_detail",
    "approval_prompt",
    "approvals_table",
    "backup_detail",
    "backups_table",
    "console",
    "demo_progress",
    "demo_result",
    "doctor_report",
    "fleet_table",
    "init_result",
    "log_line",
    "plan_preview",
    "plan_warnings",
    "prompt_console",
    "run_detail",
    "run_summary",
    "runs_table",
    "scheduler_units",
    "schedules_table",
    "statements",
    "steps_left",
    "target_added",
    "target_check",
    "targets_checked",
    "targets_table",
    "tool_detail",
    "tools_table",
    "when",
]

if TYPE_CHECKING:
    from aishell.render.adoption import adoption_preview, adoption_result
    from aishell.render.base import RISK_STYLE, STATUS_STYLE, console, prompt_console
    from aishell.render.fleet import fleet_table
    from aishell.render.home import doctor_report, init_result, scheduler_units
    from aishell.render.listings import (
        agent_detail,
        backup_detail,
        backups_table,
        demo_result,
        target_added,
        target_check,
        targets_checked,
        targets_table,
        tool_detail,
        tools_table,
    )
    from aishell.render.plans import plan_preview, plan_warnings
    from aishell.render.progress import StepProgress, demo_progress
    from aishell.render.prompt import approval_prompt
    from aishell.render.runs import (
        approvals_table,
        run_detail,
        run_summary,
        runs_table,
        statements,
        steps_left,
    )
    from aishell.render.schedules import log_line, schedules_table, when
else:
    __getattr__, __dir__ = exports(
        __name__,
        __all__,
        {
            "aishell.render.base": (
                "RISK_STYLE",
                "STATUS_STYLE",
                "console",
                "prompt_console",
            ),
            "aishell.render.adoption": ("adoption_preview", "adoption_result"),
            "aishell.render.fleet": ("fleet_table",),
            "aishell.render.home": (
                "doctor_report",
                "init_result",
                "scheduler_units",
            ),
            "aishell.render.listings": (
                "agent_detail",
                "backup_detail",
                "backups_table",
                "demo_result",
                "target_added",
                "target_check",
                "targets_checked",
                "targets_table",
                "tool_detail",
                "tools_table",
            ),
            "aishell.render.plans": (
                "plan_preview",
                "plan_warnings",
            ),
            "aishell.render.progress": (
                "StepProgress",
                "demo_progress",
            ),
            "aishell.render.prompt": ("approval_prompt",),
            "aishell.render.runs": (
                "approvals_table",
                "run_detail",
                "run_summary",
                "runs_table",
                "statements",
                "steps_left",
            ),
            "aishell.render.schedules": (
                "log_line",
                "schedules_table",
                "when",
            ),
        },
    )
