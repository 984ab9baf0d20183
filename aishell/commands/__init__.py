"""The public API: one function per user action, each taking the loaded config first.

The CLI, the scheduler and the tests call these; nothing shells out to the CLI. Each
subject lives in its own module; this package names them all, so that
`commands.run_job(...)` and `from aishell.commands import PlanPreview` work as they are.
A name's module is imported when the name is first used (aishell.lazy): a command pays
only for the subjects it touches.
"""

from typing import TYPE_CHECKING

from aishell.lazy import exports

__all__ = [
    "DECISIONS",
    "RESUMABLE",
    "ROW_DRIFT_TOLERANCE",
    "SCHEDULE_NAME",
    "UNFINISHED",
    "PlanPreview",
    "Review",
    "RunResult",
    "StepPreview",
    "add_schedule",
    "add_target",
    "adopt_backups",
    "agent_spec",
    "apply_plan",
    "ask",
    "backup_catalog",
    "backup_freshness",
    "backup_state",
    "check_adoption",
    "check_alerts",
    "check_planner",
    "check_target",
    "check_targets",
    "clean_leftovers",
    "create_demo_database",
    "decide_steps",
    "doctor",
    "doctor_without_config",
    "fleet_resend",
    "fleet_run",
    "fleet_status",
    "fleet_summary",
    "forget_drafts",
    "init_home",
    "list_agents",
    "list_approvals",
    "list_backups",
    "list_fleet_jobs",
    "list_runs",
    "list_schedules",
    "list_targets",
    "list_tools",
    "load_catalog",
    "load_plan_file",
    "make_plan",
    "metrics",
    "pause_schedule",
    "plan_job",
    "plugin_problems",
    "remove_schedule",
    "restore",
    "resume_run",
    "rotate_plan_key",
    "run_fleet_target",
    "run_job",
    "run_schedule",
    "run_statements",
    "runs_page",
    "save_plan",
    "scheduler_units",
    "serve_schedules",
    "serve_web",
    "show_agent",
    "show_backup",
    "show_run",
    "show_tool",
    "start_worker",
    "stop_run",
]

if TYPE_CHECKING:
    from aishell.commands.adopt import adopt_backups, check_adoption
    from aishell.commands.agents import agent_spec, list_agents, plugin_problems, show_agent
    from aishell.commands.alerts import check_alerts
    from aishell.commands.assumptions import ROW_DRIFT_TOLERANCE
    from aishell.commands.backups import (
        backup_catalog,
        backup_freshness,
        list_backups,
        restore,
        show_backup,
    )
    from aishell.commands.decisions import DECISIONS, decide_steps, list_approvals, stop_run
    from aishell.commands.fleet import fleet_resend, fleet_run, run_fleet_target, start_worker
    from aishell.commands.fleetlist import fleet_summary, list_fleet_jobs
    from aishell.commands.fleetview import fleet_status, serve_web
    from aishell.commands.health import (
        backup_state,
        clean_leftovers,
        doctor,
        doctor_without_config,
        metrics,
    )
    from aishell.commands.home import init_home, scheduler_units
    from aishell.commands.listings import list_runs, list_targets, list_tools, runs_page
    from aishell.commands.planner import ask, check_planner, forget_drafts
    from aishell.commands.plans import (
        load_plan_file,
        make_plan,
        plan_job,
        rotate_plan_key,
        save_plan,
    )
    from aishell.commands.previews import PlanPreview, Review, StepPreview
    from aishell.commands.runs import (
        RESUMABLE,
        apply_plan,
        resume_run,
        run_job,
        run_statements,
        show_run,
    )
    from aishell.commands.schedules import (
        SCHEDULE_NAME,
        UNFINISHED,
        add_schedule,
        list_schedules,
        pause_schedule,
        remove_schedule,
        run_schedule,
        serve_schedules,
    )
    from aishell.commands.servers import (
        check_target,
        check_targets,
        create_demo_database,
    )
    from aishell.commands.targetfile import add_target
    from aishell.commands.tools import load_catalog, show_tool
    from aishell.executor import RunResult
else:
    __getattr__, __dir__ = exports(
        __name__,
        __all__,
        {
            "aishell.commands.adopt": ("adopt_backups", "check_adoption"),
            "aishell.commands.agents": (
                "agent_spec",
                "list_agents",
                "plugin_problems",
                "show_agent",
            ),
            "aishell.commands.alerts": ("check_alerts",),
            "aishell.commands.assumptions": ("ROW_DRIFT_TOLERANCE",),
            "aishell.commands.backups": (
                "backup_catalog",
                "backup_freshness",
                "list_backups",
                "restore",
                "show_backup",
            ),
            "aishell.commands.decisions": (
                "DECISIONS",
                "decide_steps",
                "list_approvals",
                "stop_run",
            ),
            "aishell.commands.fleet": (
                "fleet_resend",
                "fleet_run",
                "run_fleet_target",
                "start_worker",
            ),
            "aishell.commands.fleetlist": ("fleet_summary", "list_fleet_jobs"),
            "aishell.commands.fleetview": ("fleet_status", "serve_web"),
            "aishell.commands.health": (
                "backup_state",
                "clean_leftovers",
                "doctor",
                "doctor_without_config",
                "metrics",
            ),
            "aishell.commands.home": ("init_home", "scheduler_units"),
            "aishell.commands.listings": ("list_runs", "list_targets", "list_tools", "runs_page"),
            "aishell.commands.planner": (
                "ask",
                "check_planner",
                "forget_drafts",
            ),
            "aishell.commands.plans": (
                "load_plan_file",
                "make_plan",
                "plan_job",
                "rotate_plan_key",
                "save_plan",
            ),
            "aishell.commands.previews": (
                "PlanPreview",
                "Review",
                "StepPreview",
            ),
            "aishell.commands.runs": (
                "RESUMABLE",
                "apply_plan",
                "resume_run",
                "run_job",
                "run_statements",
                "show_run",
            ),
            "aishell.commands.schedules": (
                "SCHEDULE_NAME",
                "UNFINISHED",
                "add_schedule",
                "list_schedules",
                "pause_schedule",
                "remove_schedule",
                "run_schedule",
                "serve_schedules",
            ),
            "aishell.commands.servers": (
                "check_target",
                "check_targets",
                "create_demo_database",
            ),
            "aishell.commands.targetfile": ("add_target",),
            "aishell.commands.tools": (
                "load_catalog",
                "show_tool",
            ),
            "aishell.executor": ("RunResult",),
        },
    )
