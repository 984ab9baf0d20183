"""A password beyond ASCII, in a service file or a password file, is the one libpq takes
from it: aishell read those files with Python's idea of a line (split at U+2028, U+0085,
a form feed) and of a blank (a no-break space, an ideographic space, stripped from a
line's end), and in the locale's encoding; so it logged in with another password than
psql, and a backup's programs got that other one too. Each case is held against libpq,
which (the shared server trusting every login) tells which password it took. A socket
folder other than libpq's own matches a password file's line by its path, as in libpq;
a keyword a service gives twice keeps its first value; a URL's `?passfile=` is the
password file, as it is libpq's first; a password that is not UTF-8 is one line naming
where it came from, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aishell.errors import ConfigError
from aishell.targets.engines import open_target
from tests.helpers import use_target

AWKWARD = [
    "pässwörd ends in a no-break space\u00a0",
    "ends in an ideographic space\u3000",
    "line\u2028separator",
    "next\u0085line",
    "form\x0cfeed",
]


def _used(home: Path, url: str, source: str) -> str | None:
    """The password aishell's own session logged in with, and that it came from source."""
    handle = open_target(use_target(home, url), "db")
    try:
        assert handle.login is not None and handle.login.password_from == source
        with handle.connect() as conn:
            return conn.connection.driver_connection.info.password  # type: ignore[union-attr]
    finally:
        handle.close()


@pytest.mark.parametrize("value", AWKWARD)
def test_a_service_files_password_beyond_ascii_is_libpqs(
    value: str, pg_url: str, home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(pg_url)
    service = user_home / ".pg_service.conf"
    service.write_bytes(
        f"[shop]\nhost={url.host}\nport={url.port}\ndbname={url.database}\n"
        f"user={url.username}\npassword={value}  \n".encode()
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    with psycopg.connect(service="shop") as conn:
        libpq = conn.info.password
    assert libpq == value
    assert _used(home, "postgresql+psycopg:///?service=shop", "service shop") == libpq


@pytest.mark.parametrize("value", AWKWARD)
def test_a_password_files_password_beyond_ascii_is_libpqs(
    value: str, pg_url: str, home: Path, user_home: Path
) -> None:
    passfile = user_home / ".pgpass"
    passfile.write_bytes(f"# the DBA's\r\n127.0.0.1:*:*:*:{value}\r\n".encode())
    passfile.chmod(0o600)
    url = make_url(pg_url)
    with psycopg.connect(
        host=url.host, port=url.port, dbname=url.database, user=url.username, passfile=passfile
    ) as conn:
        libpq = conn.info.password
    assert libpq == value
    assert _used(home, pg_url, "~/.pgpass") == libpq


def test_a_keyword_a_service_gives_twice_keeps_its_first_value(
    pg_url: str, home: Path, user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(pg_url)
    service = user_home / ".pg_service.conf"
    service.write_text(
        f"[shop]\nhost={url.host}\nport={url.port}\ndbname={url.database}\n"
        f"user={url.username}\npassword=the-first\npassword=the-second\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(service))
    with psycopg.connect(service="shop") as conn:
        libpq = conn.info.password
    assert libpq == "the-first"
    assert _used(home, "postgresql+psycopg:///?service=shop", "service shop") == libpq


def test_a_socket_folder_of_its_own_matches_its_own_line(
    pg_url: str, home: Path, user_home: Path, tmp_path: Path
) -> None:
    url = make_url(pg_url)
    server = Path("/var/run/postgresql") / f".s.PGSQL.{url.port}"
    assert server.exists(), f"the shared PostgreSQL has no socket at {server}"
    folder = tmp_path / "sockets"
    folder.mkdir()
    (folder / server.name).symlink_to(server)  # the shared server, reached from here
    passfile = user_home / ".pgpass"
    passfile.write_text(f"localhost:*:*:*:for-localhost\n{folder}:*:*:*:for-this-folder\n")
    passfile.chmod(0o600)
    kept = make_url(pg_url).set(host=None, port=None)
    at = kept.update_query_dict({"host": str(folder), "port": str(url.port)})
    with psycopg.connect(
        host=str(folder), port=url.port, dbname=url.database, user=url.username
    ) as conn:
        libpq = conn.info.password
    assert libpq == "for-this-folder"
    assert _used(home, at.render_as_string(False), "~/.pgpass") == libpq


def test_a_password_that_is_not_utf8_is_one_line_that_never_shows_it(
    pg_url: str, home: Path, user_home: Path
) -> None:
    passfile = user_home / ".pgpass"
    passfile.write_bytes(b"127.0.0.1:*:*:*:latin-1 caf\xe9 Kq7\n")
    passfile.chmod(0o600)
    with pytest.raises(ConfigError) as refused:
        open_target(use_target(home, pg_url), "db")
    said = str(refused.value)
    assert said == (
        "Target 'db': the password from ~/.pgpass is not UTF-8 text, which aishell sends "
        "a password as; write it in UTF-8"
    )
    assert "Kq7" not in said and os.linesep not in said


def test_a_urls_passfile_is_the_password_file_the_login_names(
    pg_url: str, home: Path, user_home: Path, tmp_path: Path
) -> None:
    (user_home / ".pgpass").write_text("*:*:*:*:from-the-home\n")
    (user_home / ".pgpass").chmod(0o600)
    passfile = tmp_path / "passwords"
    passfile.write_text("*:*:*:*:from-the-urls-file\n")
    passfile.chmod(0o600)
    url = make_url(pg_url).update_query_dict({"passfile": str(passfile)})
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as conn:
        libpq = conn.info.password
    assert libpq == "from-the-urls-file"
    named = f"URL passfile {passfile}"
    assert _used(home, url.render_as_string(False), named) == libpq
