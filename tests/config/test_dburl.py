"""The light reading of a database URL (config/dburl.py) is SQLAlchemy's: the same
backend, the same text shown with the password hidden, the same refusals; and the text a
cache keeps of a URL has no password in it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote_plus

import pytest
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from aishell.config.dburl import HIDDEN, is_secret_key, parse_url, resolve_url, without_password

URLS = [
    "sqlite:///demo.db",
    "sqlite:////var/lib/aishell/state.db",
    "sqlite:///:memory:",
    "sqlite://",
    "sqlite:///a b%20c+d.db?timeout=5",
    "sqlite+pysqlite:///x.db?mode=ro&uri=true",
    "postgresql://app@db1/shop",
    "postgresql://app:s3cret@db1/shop",
    "postgresql+psycopg://app:p%40ss%3Aw0rd@db1:5433/shop?sslmode=require&application_name=a",
    "postgresql://app:pa:ss@db1/shop",
    "postgresql://app:pa/ss@db1/shop",
    "postgresql://app:@db1/shop",
    "postgresql://:only@db1/shop",
    "postgresql://us%20er:pw@[::1]:5432/shop",
    "postgresql://app:pw@[fe80::1%25eth0]/shop",
    "postgresql:///shop?host=/var/run/postgresql",
    "postgresql://db1/shop?options=-c%20search_path%3Dx&options=second",
    "postgresql://app:secret@db1/shop?password=in-the-query",
    "mysql+pymysql://root@127.0.0.1:3306/orders?charset=utf8mb4",
    "mysql://root:p%23w@localhost/orders",
    "mariadb://u:v@h/d?ssl_ca=/etc/ca.pem",
    "postgresql://app:pw@db1:99999/shop",
    "postgresql://db1/sh%C3%B6p",
    "postgresql://app:p@ss@db1/shop",
    "postgresql://app:pw@db1/shop?flag",
    "postgresql://app:pw@db1/shop?empty=&x=1",
    "weird_dialect+drv://u:p@h/d",
]
REFUSED = ["not a url", "postgresql:/db1/shop", "://x", "postgresql://db1:abc/shop"]


@pytest.mark.parametrize("url", URLS)
def test_a_url_reads_and_shows_as_sqlalchemy_makes_it(url: str) -> None:
    theirs = make_url(url)
    ours = parse_url(url)
    assert ours is not None
    assert ours.backend == theirs.get_backend_name()
    shown = _masked(theirs).render_as_string(hide_password=True)
    assert ours.shown() == shown.replace(quote_plus(HIDDEN), HIDDEN)
    assert (ours.username, ours.host, ours.port) == (theirs.username, theirs.host, theirs.port)
    assert ours.database == theirs.database
    assert (ours.password is None) == (theirs.password is None)


@pytest.mark.parametrize("url", REFUSED)
def test_what_sqlalchemy_refuses_does_not_parse(url: str) -> None:
    with pytest.raises((ArgumentError, ValueError)):
        make_url(url)
    assert parse_url(url) is None


@pytest.mark.parametrize("url", URLS)
def test_the_text_kept_of_a_url_has_no_password_and_shows_the_same(url: str) -> None:
    kept = without_password(url)
    password = make_url(url).password
    if password and len(password) > 3:  # a short one may be any URL's letter
        assert str(password) not in kept
    theirs = make_url(kept)
    assert theirs.password in (None, HIDDEN)
    assert theirs.render_as_string(hide_password=True) == _masked(make_url(url)).render_as_string()
    assert _masked(make_url(url))._replace(password=None) == theirs._replace(password=None)
    assert all(v == HIDDEN for k, v in theirs.query.items() if is_secret_key(k))


def _masked(url: URL) -> URL:
    """The URL as shown and kept: a password in its query (libpq's ?password=) as ***."""
    return url.update_query_dict({k: HIDDEN for k in url.query if is_secret_key(k)})


def test_a_relative_sqlite_path_is_under_the_home(tmp_path: Path) -> None:
    assert resolve_url("sqlite:///demo.db", tmp_path) == f"sqlite:///{tmp_path / 'demo.db'}"
    assert resolve_url("sqlite:////abs.db", tmp_path) == "sqlite:////abs.db"
    assert resolve_url("postgresql+psycopg://h/d", tmp_path) == "postgresql+psycopg://h/d"
