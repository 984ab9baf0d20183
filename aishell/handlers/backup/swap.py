"""A MariaDB restore that leaves the target whole, whatever stops it.

The mariadb client commits object by object, so a dump loaded into the target itself and
stopped part way (its client killed, its session ended, a full disk, a statement of the
dump refused, aishell killed) leaves some tables restored and the rest as they were. So
the chain is loaded into a scratch database on the same server (recorded in the scratch
ledger before it is made, like a validation's), measured there against the manifest,
and only then swapped in by one RENAME TABLE, which MariaDB runs whole or not at all:
the target's tables the restore replaces move into a second scratch database, the
restored ones into the target; the second is dropped after. Stopped before the swap,
the target is as it was and the scratch databases go (at once, or by the next run's or
`aishell doctor --clean`'s clean-up when aishell itself was killed); after it, the
target holds the backup whole.

RENAME TABLE moves no view between databases, nor a table with triggers, and a routine
or event does not move with tables: a backup holding any of those, or a target whose
replaced tables have triggers or are referenced by a foreign key of a table the backup
does not hold (which would follow them aside), is restored as before, and its preview
says it is not atomic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aishell.errors import StepFailed, StepInterrupted, StepTimeout
from aishell.handlers.backup.apply import DROPPING_SQL, each_file, server_apply
from aishell.handlers.backup.lockwait import held_by
from aishell.handlers.backup.manifest import Chain
from aishell.handlers.backup.measure import NOT_COUNTED, Measured, compare, measure_server
from aishell.handlers.backup.processes import ToolFailed
from aishell.handlers.backup.qualified import code_objects
from aishell.handlers.backup.sessions import ENDING, ENDING_SQL
from aishell.handlers.backup.validate import scratch_server_database
from aishell.risk import RiskLevel
from aishell.sqltext import quote_identifier, text
from aishell.targets.lockholders import lock_holders
from aishell.tool.context import ToolContext
from aishell.tool.side import Side
from aishell.units import took

# The step's checkpoint, kept before the first file is loaded: the backup it began to
# restore, so that a resumed step knows the tables it finds may be its own; and for a
# swapped restore, how far it got.
STARTED = "restoring"
SWAP = "swap"
NOT_SWAPPED, SWAPPING, SWAPPED = "not swapped", "swapping", "swapped"

UNTOUCHED = (
    "The target is as it was: the backup was being loaded into a scratch database, which is dropped"
)
SWAP_AGAIN = "The target is as it was: restore again once the lock is released"

# MySQL's client-side error codes (2000 and up: the connection lost, ...): the server
# may have run the statement.
_CLIENT_ERRORS = 2000
_LOCK_WAIT_TIMEOUT = 1205
# The swap's session waits at most the step's lock wait for the target's tables.
_MY_SESSION_WAIT = DROPPING_SQL["mysql"][0]
SWAPPING_SQL = (_MY_SESSION_WAIT, "RENAME TABLE {database}.{table} TO {scratch}.{table}")

_IN_SCRATCH = text(
    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = :db AND ID <> CONNECTION_ID()"
)
_RELATIONS = text(
    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :db "
    "AND TABLE_TYPE IN ('BASE TABLE', 'SEQUENCE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME"
)
_TRIGGERS = text(
    "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
    "WHERE TRIGGER_SCHEMA = :db AND EVENT_OBJECT_TABLE IN :tables ORDER BY TRIGGER_NAME"
).bindparams(bindparam("tables", expanding=True))
_REFERENCES = text(
    "SELECT TABLE_NAME, REFERENCED_TABLE_NAME, CONSTRAINT_NAME "
    "FROM information_schema.REFERENTIAL_CONSTRAINTS "
    "WHERE CONSTRAINT_SCHEMA = :db AND UNIQUE_CONSTRAINT_SCHEMA = :db "
    "AND REFERENCED_TABLE_NAME IN :tables ORDER BY TABLE_NAME, CONSTRAINT_NAME"
).bindparams(bindparam("tables", expanding=True))


def not_swappable(links: Chain, conn: Connection, replaced: list[str]) -> str | None:
    """Why the chain cannot be swapped into the target whole (the words after "because"),
    or None when it can; `replaced`: the target's tables it replaces."""
    made = list(
        dict.fromkeys(m for link, _ in links if link.stat().st_size for m in code_objects(link))
    )
    if made:
        shown = ", ".join(made[:3]) + (", ..." if len(made) > 3 else "")
        return (
            f"the backup holds {shown}, which RENAME TABLE cannot move from a scratch "
            "database into the target"
        )
    if not replaced:
        return None
    database = str(conn.engine.url.database)
    found = conn.execute(_TRIGGERS, {"db": database, "tables": replaced}).first()
    if found is not None:
        return (
            f"the target's table {found[1]} has trigger {found[0]}, and RENAME TABLE cannot "
            "move a table with triggers into another database"
        )
    for child, parent, name in conn.execute(_REFERENCES, {"db": database, "tables": replaced}):
        if child not in replaced:
            return (
                f"the target's table {child}, which the backup does not hold, references "
                f"{parent} (foreign key {name}), and would follow it out of the target"
            )
    return None


# The scratch database a swapped restore loads, as its preview shows it (its name is
# drawn when it is made).
SCRATCH_SHOWN = "aishell_verify_XXXXXXXXXX"


def swap_commands(conn: Connection, lock_wait: float) -> list[tuple[str, bool]]:
    """What a swapped restore sends once the scratch copy matches its manifest, as shown:
    its session's lock wait, and the one RENAME TABLE (its names drawn at run time)."""
    dialect = conn.dialect
    target = quote_identifier(dialect, str(conn.engine.url.database))
    scratch = quote_identifier(dialect, SCRATCH_SHOWN)
    aside = quote_identifier(dialect, SCRATCH_SHOWN.replace("X", "Y"))
    return [
        (_MY_SESSION_WAIT.replace(":wait", str(math.ceil(lock_wait))), True),
        (
            f"RENAME TABLE {target}.`t` TO {aside}.`t`, ..., {scratch}.`t` TO {target}.`t`, "
            "... (one statement: each table the target has of those the backup holds or an "
            "increment dropped moved aside, each restored table moved in)",
            False,
        ),
    ]


def how(reason: str | None) -> str:
    """How a MariaDB restore happens, as its preview says it."""
    if reason is None:
        return (
            "how: atomic. The mariadb client loads the backup into a scratch database "
            "(aishell_verify_...) on the target's server, which is compared with the "
            "manifest; then one RENAME TABLE moves the target's tables it replaces into a "
            "second scratch database and the restored ones into the target, all or none, "
            "and the second is dropped. A restore that fails or is stopped before that "
            "leaves the target as it was"
        )
    return (
        f"how: NOT atomic, because {reason}: the mariadb client loads the backup into "
        "the target itself, committing object by object, so a restore that fails or is "
        "stopped part way leaves some tables restored and the rest as they were; take a "
        "verified backup of the target first"
    )


def swap_restore(chain: Chain, params: Mapping[str, Any], ctx: ToolContext) -> Measured:
    """Load the chain into a scratch database, measure it against the newest manifest,
    and swap its tables into the target; what was measured. Fails, the target as it
    was, when the load fails or the copy differs from the manifest."""
    conn = ctx.connection
    url = conn.engine.url
    path, manifest = chain[-1]
    with (
        scratch_server_database(conn, ctx, restoring=True) as (aside, _),
        scratch_server_database(conn, ctx, restoring=True) as (loaded, _),
    ):
        ctx.save_progress({STARTED: str(path), SWAP: NOT_SWAPPED})
        try:
            for link, link_manifest, progress, before in each_file(chain, ctx):
                server_apply(
                    conn.dialect.name,
                    url,
                    loaded,
                    link,
                    link_manifest,
                    False,
                    ctx,
                    progress,
                    before,
                )
        except ToolFailed as exc:
            _end_loading(loaded, ctx)
            raise StepFailed(f"{exc}. {UNTOUCHED}") from None
        except (StepInterrupted, StepTimeout) as exc:
            _end_loading(loaded, ctx)
            raise type(exc)(f"{exc}. {UNTOUCHED}", exc.details) from None
        measured = measure_server(url, loaded, manifest, ctx)
        unread = manifest.get(NOT_COUNTED) or {}
        measured.tables &= set(manifest["tables"]) | set(unread)
        problems = compare(manifest, measured)
        if problems:
            raise StepFailed(
                f"The restore of {path.name} does not match its manifest: "
                f"{'; '.join(problems[:3])}; {UNTOUCHED}: restore another backup"
            )
        if ctx.should_stop():
            raise StepInterrupted(f"Stopped before the swap. {UNTOUCHED}")
        _swap(chain, loaded, aside, params, ctx)
    return measured


def _end_loading(loaded: str, ctx: ToolContext) -> None:
    """End the sessions left in the scratch database a load stopped in: a killed
    client's session finishes its statement holding the dump's LOCK TABLES, which would
    hold the scratch database's DROP past its lock wait. Only sessions in that database,
    whose name is this step's alone."""
    with ctx.side_session(ENDING) as conn:
        for (session,) in conn.execute(_IN_SCRATCH, {"db": loaded}).all():
            with suppress(DBAPIError):  # it may have ended by itself meanwhile
                conn.execute(text(ENDING_SQL["mysql"][0]), {"id": int(session)})


def _swap(
    chain: Chain, loaded: str, aside: str, params: Mapping[str, Any], ctx: ToolContext
) -> None:
    """One RENAME TABLE: the target's tables the chain replaces (those it restores, and
    those an increment dropped) into `aside`, the restored ones from `loaded` into the
    target."""
    conn = ctx.connection
    target = str(conn.engine.url.database)
    new = [str(t) for (t,) in conn.execute(_RELATIONS, {"db": loaded})]
    dropped = {t for _, m in chain for t in m.get("dropped") or []}
    old = [str(t) for (t,) in conn.execute(_RELATIONS, {"db": target}) if t in new or t in dropped]
    backup = str(chain[-1][0])
    if new or old:
        moves = [(target, aside, t) for t in old] + [(loaded, target, t) for t in new]
        rename = "RENAME TABLE " + ", ".join(_moved(conn, *move) for move in moves)
        swapping = Side(
            "swapping the restored tables into the target",
            writes=(_MY_SESSION_WAIT,),
            exact=(rename,),
            risk=RiskLevel.HIGH,
            isolation_level="AUTOCOMMIT",
        )
        lock_wait = float(params["lock_wait_seconds"])
        ctx.save_progress({STARTED: backup, SWAP: SWAPPING})
        with ctx.side_session(swapping) as session:
            session.execute(text(_MY_SESSION_WAIT), {"wait": math.ceil(lock_wait)})
            try:
                session.execute(text(rename))
            except DBAPIError as exc:
                raise _not_swapped(exc, backup, old, lock_wait, ctx) from None
    ctx.save_progress({STARTED: backup, SWAP: SWAPPED})


def _moved(conn: Connection, source: str, into: str, table: str) -> str:
    """One move of a RENAME TABLE: `source`.`table` TO `into`.`table`."""
    name = quote_identifier(conn.dialect, table)
    return (
        f"{quote_identifier(conn.dialect, source)}.{name} TO "
        f"{quote_identifier(conn.dialect, into)}.{name}"
    )


def _not_swapped(
    exc: DBAPIError, backup: str, old: list[str], lock_wait: float, ctx: ToolContext
) -> StepFailed:
    """The step's failure when the RENAME TABLE did not succeed: refused by the server
    (it moved nothing: so checkpointed), or its answer lost (it may have run)."""
    code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    if not isinstance(code, int) or code >= _CLIENT_ERRORS:
        return StepFailed(
            f"The connection was lost while RENAME TABLE swapped the restored tables into "
            f"'{ctx.target}' ({exc.orig}): the target holds either its old tables or the "
            "restored ones, whole; look before restoring again"
        )
    ctx.save_progress({STARTED: backup, SWAP: NOT_SWAPPED})
    if code == _LOCK_WAIT_TIMEOUT:
        holders = lock_holders(ctx.connection, old)
        return StepFailed(
            f"RENAME TABLE waited {took(lock_wait, None)} for a table lock and stopped; the "
            "lock is held by " + held_by(holders, SWAP_AGAIN, lock_wait)
        )
    said = str(exc.orig).strip().splitlines()
    return StepFailed(
        f"Swapping the restored tables into '{ctx.target}' failed "
        f"({said[0] if said else exc}); {UNTOUCHED}"
    )


def swap_done(params: Mapping[str, Any], ctx: ToolContext) -> bool | None:
    """After a crash or a failure: whether a swapped restore's effect is in the target
    (swapped), is not (it was still loading a scratch database or file, or the server
    refused the swap: the target is as it was, and it may run again), or cannot be told
    (it stopped at the swap itself, or a SQLite chain's copy); None for any other
    restore."""
    phase = (ctx.load_progress() or {}).get(SWAP)
    if phase == SWAPPED:
        return True
    if phase == NOT_SWAPPED:
        return False
    return None
