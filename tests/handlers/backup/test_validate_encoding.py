"""A PostgreSQL database whose encoding or locale is not the server's default validates:
the scratch database the validation restores into is made with the source's encoding,
collation and character classes (from template0), so the restored schema and rows are
compared like for like. The databases the tests name are unique to them and dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aishell import commands
from tests.helpers import run_sql, use_target
from tests.services import PG_ADMIN, admin_engine


@contextmanager
def database_in(encoding: str, locale: str) -> Iterator[str]:
    """A new database with this encoding and locale; its URL; dropped afterwards."""
    name = f"aishell_enc_{uuid.uuid4().hex[:10]}"
    admin = admin_engine(PG_ADMIN, "PostgreSQL")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING '{encoding}' "
                    f"LC_COLLATE '{locale}' LC_CTYPE '{locale}'"
                )
            )
        try:
            yield str(make_url(PG_ADMIN).set(database=name).render_as_string(False))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.mark.parametrize(("encoding", "locale"), [("LATIN1", "C"), ("WIN1252", "C")])
def test_a_database_in_another_encoding_or_locale_validates(home, encoding, locale):
    with database_in(encoding, locale) as url:
        run_sql(
            url,
            "CREATE TABLE names (id integer PRIMARY KEY, name text)",
            "CREATE INDEX names_by_name ON names (name)",
            "INSERT INTO names VALUES (1, 'Ångström'), (2, 'zebra'), (3, 'Zürich')",
        )
        config = use_target(home, url)
        done = commands.run_job(config, "backup", {"type": "full"})
        assert done.status == "completed", done.error
        validated = done.steps[-1].output
        assert validated["ok"] is True and validated["tables_compared"] == 1
