"""The schemas a PostgreSQL session searches, in order, once a restore has made the
schemas a backup holds: read from the session's search_path as the server reads it,
since current_schema() passes over a schema not made yet. A backup's manifest records
the schemas its dump holds and the order its source searched them; a restore's target
must search them in that order, or the dump's names would resolve to other objects.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.engine import Connection, Dialect

from aishell.errors import StepFailed
from aishell.handlers.backup.manifest import Chain
from aishell.sqltext import quote_identifier, text
from aishell.tool.context import ToolContext

# The path, and the role its "$user" entry stands for.
_PATH = "SELECT pg_catalog.current_setting('search_path'), current_user"
_EXISTING = "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(:names)"
# The schemas pg_dump dumps: all but the server's own (pg_catalog, pg_toast, a session's
# temporary ones, information_schema). Each operator named in pg_catalog, its operands
# of its exact types: an operator of the database's own over other types is never picked.
_DUMPED = (
    "SELECT nspname FROM pg_catalog.pg_namespace "
    "WHERE nspname OPERATOR(pg_catalog.!~) CAST('^pg_' AS pg_catalog.text) "
    "AND nspname OPERATOR(pg_catalog.<>) CAST('information_schema' AS pg_catalog.name) "
    "ORDER BY 1"
)


def path_entries(setting: str) -> list[str]:
    """The schema names of a search_path setting, as the server splits it: entries
    separated by commas, a double-quoted one taken as written ("" a quote), any other
    with its ASCII letters in lower case."""
    entries: list[str] = []
    rest = setting.strip()
    while rest:
        if rest.startswith('"'):
            end = 1
            while (end := rest.find('"', end)) >= 0 and rest[end + 1 : end + 2] == '"':
                end += 2
            if end < 0:
                break  # an unclosed quote: the server never shows one
            entries.append(rest[1:end].replace('""', '"'))
            rest = rest[end + 1 :]
        else:
            entry = rest.split(",", 1)[0]
            entries.append("".join(c.lower() if c.isascii() else c for c in entry.strip()))
            rest = rest[len(entry) :]
        rest = rest.strip().removeprefix(",").strip()
    return entries


def searched_schemas(conn: Connection, made: Collection[str] = ()) -> list[str]:
    """The schemas the session's search_path names that exist or are `made` (which the
    restore makes), in its order, each once. A temporary schema holds no restored table
    and is passed over."""
    setting, user = conn.execute(text(_PATH)).one()
    names = [str(user) if e == "$user" else e for e in path_entries(str(setting))]
    names = [n for n in names if n != "pg_temp"]
    existing = {r[0] for r in conn.execute(text(_EXISTING), {"names": names})}
    return list(dict.fromkeys(n for n in names if n in made or n in existing))


def shown_path(dialect: Dialect, names: list[str]) -> str:
    """Schema names as a search_path setting writes them: quoted where the server would
    otherwise fold or split them."""
    return ", ".join(quote_identifier(dialect, name) for name in names)


def dumped_schemas(conn: Connection) -> dict[str, list[str]]:
    """What a backup's manifest records of the names its dump resolves by: the schemas
    the dump holds, and the schemas the session searches (its search_path), in order."""
    return {
        "schemas": [r[0] for r in conn.execute(text(_DUMPED))],
        "search_path": searched_schemas(conn),
    }


def order_of(path: list[str], schemas: Collection[str]) -> list[str]:
    """The schemas of `schemas` in the order `path` searches them."""
    return [name for name in path if name in schemas]


def refuse_other_schema(links: Chain, ctx: ToolContext) -> None:
    """A PostgreSQL backup's tables come back in the schema they were read from
    (pg_restore makes each in its own), and the restore, its measure and every later
    step see those of the schema the target's sessions search first: the two must be
    one. A manifest that names no schema (taken before they did) is not checked; one
    that names no other schemas (taken before it did) only so."""
    schema = links[-1][1].get("schema")
    conn = ctx.connection
    if conn.dialect.name != "postgresql" or not isinstance(schema, str):
        return
    held = {s for _, m in links for s in m.get("schemas") or () if isinstance(s, str)}
    path = searched_schemas(conn, held | {schema})
    source = links[-1][1].get("search_path")
    order = order_of(source, held) if isinstance(source, list) and held else None
    first = path[0] if path else None
    if first != schema:
        shown = f"'{first}'" if first is not None else "no schema"
        wanted = shown_path(conn.dialect, order or [schema])
        raise StepFailed(
            f"Backup {links[-1][0].name} holds tables of schema '{schema}' and the sessions "
            f"of target '{ctx.target}' search {shown} first; set the target database's or "
            f"role's search_path to start with {wanted} (ALTER DATABASE ... SET "
            "search_path = ..., see docs/targets.md) and retry"
        )
    if order is not None and isinstance(source, list):
        _refuse_other_order(links, order, order_of(path, held), ctx)
        _refuse_searched_between(links, order, [*source, *held], path, ctx)


def _refuse_other_order(
    links: Chain, source: list[str], target: list[str], ctx: ToolContext
) -> None:
    """The schemas the dump holds must be searched by the target's sessions in the order
    its source searched them (others the source did not search may follow): else a name
    the source found in one schema would be found in another."""
    if target[: len(source)] == source:
        return
    dialect = ctx.connection.dialect
    wanted, found = shown_path(dialect, source), shown_path(dialect, target) or "(none)"
    raise StepFailed(
        f"Backup {links[-1][0].name} holds schemas its source searched in the order "
        f"{wanted} and the sessions of target '{ctx.target}' would search them in the "
        f"order {found}, so the backup's names would resolve to other objects; set the "
        f"target database's or role's search_path to {wanted} (ALTER DATABASE ... SET "
        "search_path = ..., see docs/targets.md) and retry"
    )


def _refuse_searched_between(
    links: Chain, order: list[str], known: list[str], path: list[str], ctx: ToolContext
) -> None:
    """A schema the dump does not hold and its source did not search, searched by the
    target's sessions before the last of the dump's schemas: a name the source found in
    a later one of those would be found among that schema's objects, the target's own."""
    if not order or order[-1] not in path:
        return
    between = [s for s in path[: path.index(order[-1])] if s not in known]
    if not between:
        return
    dialect = ctx.connection.dialect
    wanted, found = shown_path(dialect, order), shown_path(dialect, path)
    raise StepFailed(
        f"Backup {links[-1][0].name} holds schemas its source searched in the order "
        f"{wanted} and the sessions of target '{ctx.target}' would search schema "
        f"'{between[0]}', which the backup does not hold, between them ({found}), so the "
        f"backup's names could resolve to its objects; set the target database's or "
        f"role's search_path to {wanted} (ALTER DATABASE ... SET search_path = ..., see "
        "docs/targets.md) and retry"
    )
