"""A PostgreSQL backup's manifest names the schema its tables were read from, and a
restore goes ahead only into a target whose sessions search that schema first once the
backup is restored: else it is refused in one line naming both schemas, before anyone
is asked and with nothing restored. A manifest without a schema restores as before.
Every database and role a test names is unique to it and dropped."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from aishell.handlers.backup.searched import path_entries
from aishell.policy.approvers import Prompting
from tests.handlers.backup.recorded import record_as_on_disk
from tests.handlers.backup.test_validate_database_settings import (
    _OTHER_SCHEMA,
    database_of_role,
)
from tests.helpers import run_sql, use_target
from tests.services import PG_ADMIN, admin_engine, engine


@contextmanager
def another_database(role: str, url: str) -> Iterator[tuple[str, str]]:
    """The name and URL of a second database of the role's, made by whoever needs it
    (a restore's --create, or the test); dropped afterwards."""
    name = f"aishell_to_{uuid.uuid4().hex[:10]}"
    try:
        yield name, make_url(url).set(database=name).render_as_string(False)
    finally:
        admin = admin_engine(PG_ADMIN, "PostgreSQL")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


def _backup(home: Path, url: str, **others: str) -> tuple[object, int]:
    config = use_target(home, url, **others)
    done = commands.run_job(config, "backup", {"type": "full"})
    assert done.status == "completed", done.error
    [backup] = commands.list_backups(config, "db")
    return config, int(backup["id"])


def _restore(config: object, backup_id: int, asked: list[str], **options: bool) -> object:
    typed = Prompting(ask=lambda request: asked.append(str(request)) or "yes")
    return commands.restore(config, backup_id, "to", approver=typed, **options)  # type: ignore[arg-type]


def _schemas(url: str) -> list[str]:
    """The target's schema `other`, if a restore made it."""
    eng = engine(url)
    try:
        with eng.connect() as conn:
            sql = "SELECT nspname FROM pg_namespace WHERE nspname = 'other'"
            return [r[0] for r in conn.execute(text(sql))]
    finally:
        eng.dispose()


def test_a_restore_into_a_database_searching_public_is_refused_before_anything(home):
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        run_sql(url, *_OTHER_SCHEMA, f'ALTER DATABASE "{name}" SET search_path = other')
        config, backup_id = _backup(home, url, to=to)
        asked: list[str] = []
        refused = _restore(config, backup_id, asked, create=True)
        assert refused.status == "failed"
        assert asked == []
        error = str(refused.error)
        assert "'other'" in error and "'public'" in error and "search_path" in error, error
        assert "\n" not in error
        assert "did not come back" not in error
        assert _schemas(to) == []  # nothing restored
        # Once the target searches the backup's schema, the same restore goes ahead.
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = other')
        done = _restore(config, backup_id, asked, create=True)
        assert done.status == "completed", done.error
        assert done.steps[-1].output["restored_tables"] == 1


def test_a_role_setting_and_a_schema_the_restore_makes_count(home):
    """The source searches `other` by its role's setting; a target whose path names
    `other` before `public` is restored into though `other` is not there yet, and one
    whose path names `public` first is refused."""
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        run_sql(
            url, *_OTHER_SCHEMA, f'ALTER ROLE "{role}" IN DATABASE "{name}" SET search_path = other'
        )
        config, backup_id = _backup(home, url, to=to)
        assert _manifest_of(config)["schema"] == "other"
        run_sql(PG_ADMIN, f'CREATE DATABASE "{new}" OWNER "{role}"')
        run_sql(
            PG_ADMIN, f'ALTER ROLE "{role}" IN DATABASE "{new}" SET search_path = public, other'
        )
        asked: list[str] = []
        refused = _restore(config, backup_id, asked)
        assert refused.status == "failed" and asked == []
        assert "'public'" in str(refused.error) and "'other'" in str(refused.error)
        assert _schemas(to) == []
        run_sql(
            PG_ADMIN, f'ALTER ROLE "{role}" IN DATABASE "{new}" SET search_path = "other", public'
        )
        done = _restore(config, backup_id, asked)
        assert done.status == "completed", done.error
        assert done.steps[-1].output["restored_tables"] == 1


def test_a_manifest_without_a_schema_restores_as_before(home):
    with database_of_role() as (role, name, url), another_database(role, url) as (_new, to):
        run_sql(url, *_OTHER_SCHEMA, f'ALTER DATABASE "{name}" SET search_path = other')
        config, backup_id = _backup(home, url, to=to)
        manifest = _manifest_of(config)
        manifest.pop("schema")
        path = Path(commands.list_backups(config, "db")[0]["path"])
        path.with_name(path.name + ".manifest.json").write_text(json.dumps(manifest))
        record_as_on_disk(home, path)
        done = _restore(config, backup_id, [], create=True)
        # No schema to check against: the restore runs, and its measure finds the gap.
        assert done.status == "failed"
        assert "did not come back: o1" in str(done.error)


def _manifest_of(config: object) -> dict:
    path = Path(commands.list_backups(config, "db")[0]["path"])  # type: ignore[arg-type]
    return json.loads(path.with_name(path.name + ".manifest.json").read_text())


def test_a_search_path_splits_as_the_server_splits_it():
    assert path_entries('"$user", public') == ["$user", "public"]
    assert path_entries('Other ,"Mixed, ""Case""",public') == ["other", 'Mixed, "Case"', "public"]
    assert path_entries("") == []
