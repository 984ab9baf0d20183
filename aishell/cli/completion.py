"""Shell completion of target names and run ids (bash, zsh and fish, through click).

While the shell asks, no command runs and the top-level options are not yet a State:
the config is found from them as a command would find it. Any problem means no
suggestions, never an error in the middle of someone's typing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from aishell.cli.context import NonEmpty

if TYPE_CHECKING:
    from aishell.config.models import Config


# How many of the newest runs are offered.
RUNS_OFFERED = 50


def _config(ctx: click.Context) -> Config:
    from aishell.config.models import load_config

    root = ctx.find_root().params
    return load_config(root.get("config_path"), root.get("home"))


def complete_target(ctx: click.Context, _param: Any, incomplete: str) -> list[CompletionItem]:
    try:
        targets = _config(ctx).main.targets
    except Exception:  # a broken config: no suggestions
        return []
    return [
        CompletionItem(name, help=target.description or None)
        for name, target in sorted(targets.items())
        if name.startswith(incomplete)
    ]


def complete_selector(ctx: click.Context, _param: Any, incomplete: str) -> list[CompletionItem]:
    """The last part of a target selector (after its last ',' or '+'): a name or tag:TAG."""
    try:
        targets = _config(ctx).main.targets
    except Exception:  # a broken config: no suggestions
        return []
    cut = max(incomplete.rfind(","), incomplete.rfind("+")) + 1
    done, part = incomplete[:cut], incomplete[cut:]
    tags = sorted({tag for target in targets.values() for tag in target.tags})
    words = [*sorted(targets), *(f"tag:{tag}" for tag in tags)]
    return [CompletionItem(done + word) for word in words if word.startswith(part)]


def complete_run_id(ctx: click.Context, _param: Any, incomplete: str) -> list[CompletionItem]:
    from sqlalchemy.engine import make_url

    from aishell.state.store import StateStore

    try:
        url = _config(ctx).state_url
        where = make_url(url)
        if where.get_backend_name() == "sqlite" and not Path(where.database or "").is_file():
            return []  # asking must not make a state store
        with StateStore(url) as store:
            runs = store.list_runs(limit=RUNS_OFFERED)
    except Exception:  # no state store yet, or one that cannot be read
        return []
    return [
        CompletionItem(run["run_id"], help=f"{run['agent']} on {run['target']}: {run['status']}")
        for run in runs
        if run["run_id"].startswith(incomplete)
    ]


target_option = click.option(
    "--target",
    type=NonEmpty(click.STRING),
    shell_complete=complete_target,
    help="Target from config (default: the default target).",
)
run_id_argument = click.argument("run_id", shell_complete=complete_run_id)
