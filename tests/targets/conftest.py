"""The targets' tests' fixtures: a MariaDB login of a test's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.services import MYSQL_ADMIN, engine


@pytest.fixture
def mysql_user(mysql_url: str) -> Iterator[tuple[str, str, str]]:
    """A MariaDB user of its own with a password (quotes, a hash, a backslash in it),
    with every right on the scratch database and on validation's scratch copies;
    yields (user, password, the target's URL without a password)."""
    user = f"aishell_l{uuid.uuid4().hex[:8]}"
    password = f"pw '{uuid.uuid4().hex[:6]}\" #x\\y"
    database = make_url(mysql_url).database
    admin = engine(MYSQL_ADMIN)
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
        conn.execute(text(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'"))
        conn.execute(text(f"GRANT ALL ON `aishell\\_verify\\_%`.* TO '{user}'@'%'"))
    try:
        url = make_url(mysql_url).set(username=user, password=None)
        yield user, password, url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()
