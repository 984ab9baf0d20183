"""A PostgreSQL backup's manifest records every schema its dump holds and the order its
source searched them. A restore into a target whose sessions would search those schemas
in another order (the dump holds a and b, the source searched a, b, the target searches
b, a, or a without b) is refused in one line naming the schemas, before anyone is asked
and with nothing restored; a target searching them as the source did is restored into.
A manifest taken before it recorded them is checked for its own schema only, as before.
Every database and role a test names is unique to it and dropped."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.policy.approvers import Prompting
from tests.handlers.backup.recorded import record_as_on_disk
from tests.handlers.backup.test_restore_schema import another_database
from tests.handlers.backup.test_validate_database_settings import database_of_role
from tests.helpers import run_sql, use_target
from tests.services import PG_ADMIN, engine

_TWO_SCHEMAS = (
    "CREATE SCHEMA a",
    "CREATE SCHEMA b",
    "CREATE TABLE a.ta (id int PRIMARY KEY)",
    "INSERT INTO a.ta VALUES (1), (2)",
    "CREATE TABLE b.tb (id int PRIMARY KEY)",
    "INSERT INTO b.tb VALUES (1)",
)


def _restore(config: object, backup_id: int, asked: list[str]) -> object:
    typed = Prompting(ask=lambda request: asked.append(str(request)) or "yes")
    return commands.restore(config, backup_id, "to", approver=typed)  # type: ignore[arg-type]


def _backed_up(home: Path, role: str, name: str, url: str, to: str) -> tuple[object, int, Path]:
    """A full backup of a database holding schemas a and b, searched a, b; the target
    `to`, a database of the role's made empty (its search_path the test's to set)."""
    run_sql(url, *_TWO_SCHEMAS, f'ALTER DATABASE "{name}" SET search_path = a, b')
    config = use_target(home, url, to=to)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    new = to.rsplit("/", 1)[1].split("?")[0]
    run_sql(PG_ADMIN, f'CREATE DATABASE "{new}" OWNER "{role}"')
    return config, int(backup["id"]), Path(backup["path"])


def _schemas_named(url: str, *names: str) -> list[str]:
    """Those of the schemas named that the database at url holds."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            sql = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(:names) ORDER BY 1"
            return [r[0] for r in conn.execute(text(sql), {"names": list(names)})]
    finally:
        eng.dispose()


def _manifest_file(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def test_a_target_searching_the_schemas_in_another_order_is_refused(home):
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        config, backup_id, path = _backed_up(home, role, name, url, to)
        manifest = json.loads(_manifest_file(path).read_text())
        assert {"a", "b", "public"} <= set(manifest["schemas"])
        assert manifest["search_path"][:2] == ["a", "b"] and manifest["schema"] == "a"
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = b, a')
        asked: list[str] = []
        refused = _restore(config, backup_id, asked)
        assert refused.status == "failed"
        assert asked == []
        error = str(refused.error)
        assert "'b' first" in error and 'start with "a", "b"' in error, error
        assert "\n" not in error
        assert _schemas_named(to, "a", "b") == []  # nothing restored
        # A target that searches them as the source did is restored into.
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = a, b, public')
        done = _restore(config, backup_id, asked)
        assert done.status == "completed", done.error
        assert _schemas_named(to, "a", "b") == ["a", "b"]


def test_a_target_that_leaves_out_a_schema_the_source_searched_is_refused(home):
    """The source found b's tables by their bare names; the target would not."""
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        config, backup_id, _path = _backed_up(home, role, name, url, to)
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = a, public')
        refused = _restore(config, backup_id, [])
        assert refused.status == "failed"
        assert 'order "a", "b"' in str(refused.error), refused.error
        assert _schemas_named(to, "a", "b") == []


def test_a_manifest_without_the_schemas_is_checked_for_its_own_schema_only(home):
    """Taken before manifests recorded the dump's schemas: the target searching b, a is
    not foreseen (a is first of those the check knows), so the restore runs and its
    measure finds a's tables missing, as before; a target searching public first is
    still refused."""
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        config, backup_id, path = _backed_up(home, role, name, url, to)
        manifest = json.loads(_manifest_file(path).read_text())
        del manifest["schemas"], manifest["search_path"]
        _manifest_file(path).write_text(json.dumps(manifest))
        record_as_on_disk(home, path)
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = public, a')
        refused = _restore(config, backup_id, [])
        assert refused.status == "failed" and "'public'" in str(refused.error)
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = b, a')
        done = _restore(config, backup_id, [])
        assert done.status == "failed"
        assert "did not come back: ta" in str(done.error), done.error
