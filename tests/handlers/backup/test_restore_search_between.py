"""A schema only the target holds, which its sessions search between the schemas a
PostgreSQL dump holds (the dump holds a and b, searched a, b; the target searches a,
mid, b), would take the bare names the source found in b: a restore there is refused in
one line naming it, before anyone is asked and with nothing restored; a target that
searches it after them is restored into. Every database and role is unique to the test."""

from __future__ import annotations

from aishell import commands
from tests.handlers.backup.test_restore_schema import another_database
from tests.handlers.backup.test_restore_search_order import _backed_up, _restore, _schemas_named
from tests.handlers.backup.test_validate_database_settings import database_of_role
from tests.helpers import run_sql
from tests.services import PG_ADMIN


def test_a_schema_only_the_target_has_searched_between_them_is_refused(home):
    with database_of_role() as (role, name, url), another_database(role, url) as (new, to):
        config, backup_id, _path = _backed_up(home, role, name, url, to)
        run_sql(to, "CREATE SCHEMA mid")
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = a, mid, b')
        asked: list[str] = []
        refused = _restore(config, backup_id, asked)
        assert refused.status == "failed"
        assert asked == []
        error = str(refused.error)
        assert "would search schema 'mid', which the backup does not hold" in error, error
        assert 'search_path to "a", "b"' in error and "\n" not in error
        assert _schemas_named(to, "a", "b") == []  # nothing restored
        # Searched after the dump's schemas, it takes none of their names.
        run_sql(PG_ADMIN, f'ALTER DATABASE "{new}" SET search_path = a, b, mid')
        done = _restore(config, backup_id, asked)
        assert done.status == "completed", done.error
        assert _schemas_named(to, "a", "b", "mid") == ["a", "b", "mid"]
        assert commands.list_backups(config, "db")
