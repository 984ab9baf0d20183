"""A password file is read as libpq reads it: aishell's own session and the programs it
starts log in with the password psql would take from the same line. Each case is held
against libpq itself, which (the shared server trusting every login) tells which
password it took from the file through the connection it opened."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aishell.targets.engines import open_target
from tests.helpers import use_target


def _line(secret: str) -> list[str]:
    """Lines a DBA writes, with the password's colons escaped or not."""
    return [
        f"127.0.0.1:*:*:*:{secret}",  # unescaped: libpq's password ends at its colon
        f"127.0.0.1:*:*:*:{secret.replace(':', chr(92) + ':')}",  # escaped: all of it
        f"127.0.0.1:*:*:*:{secret}:",  # a trailing colon
    ]


@pytest.mark.parametrize("at", range(3))
def test_aishell_logs_in_with_the_password_libpq_takes_from_the_file(
    at: int, pg_url: str, home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"p@ss:w/o%rd#{uuid.uuid4().hex[:8]}"
    passfile = user_home / ".pgpass"
    passfile.write_text(f"# the DBA's\n{_line(secret)[at]}\n")
    passfile.chmod(0o600)
    url = make_url(pg_url)
    # What libpq itself takes from the file, as psql would.
    with psycopg.connect(
        host=url.host,
        port=url.port,
        dbname=url.database,
        user=url.username,
        passfile=str(passfile),
    ) as conn:
        libpq = conn.info.password
    assert libpq  # the line matched

    handle = open_target(use_target(home, pg_url), "db")
    try:
        assert handle.login is not None and handle.login.password_from == "~/.pgpass"
        with handle.connect() as conn:
            used = conn.connection.driver_connection.info.password  # type: ignore[union-attr]
    finally:
        handle.close()
    assert used == libpq


@pytest.mark.parametrize("value", [" lead#x", "  two spaces first", "tab\tinside"])
def test_a_service_files_password_is_the_one_libpq_takes(
    value: str, pg_url: str, home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(pg_url)
    service = user_home / ".pg_service.conf"
    service.write_text(
        f"[shop]\nhost={url.host}\nport={url.port}\ndbname={url.database}\n"
        f"user={url.username}\npassword={value}  \n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    with psycopg.connect(service="shop") as conn:
        libpq = conn.info.password
    assert libpq == value  # the line's trailing blanks trimmed, the value's first kept

    handle = open_target(use_target(home, "postgresql+psycopg:///?service=shop"), "db")
    try:
        assert handle.login is not None and handle.login.password_from == "service shop"
        with handle.connect() as conn:
            used = conn.connection.driver_connection.info.password  # type: ignore[union-attr]
    finally:
        handle.close()
    assert used == libpq
