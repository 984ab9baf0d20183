"""The embedded demo database: realistic tables, fragmented indexes, free pages.

Rows go in in random key order (as a busy application writes them), so secondary
indexes split and scatter; a purge of old logs and a dropped staging table leave
free pages. Maintenance then has real work to do.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aishell.errors import UsageError
from aishell.files import file_in_the_way, fsync_dir, make_private_dirs, make_private_file
from aishell.sqltext import quote_plain_identifier

# Written into the header of every demo database (PRAGMA application_id, "aish"):
# `aishell demo` replaces only a file that carries it, never someone's own database.
DEMO_APPLICATION_ID = 0x61697368

SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX idx_users_country ON users (country);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    price_cents INTEGER NOT NULL
);
CREATE INDEX idx_products_category ON products (category);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    product_id INTEGER NOT NULL REFERENCES products (id),
    quantity INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX idx_orders_user ON orders (user_id);
CREATE INDEX idx_orders_created ON orders (created_at);
CREATE INDEX idx_orders_status ON orders (status, created_at);
CREATE TABLE app_logs (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    level TEXT NOT NULL,
    service TEXT NOT NULL,
    message TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX idx_app_logs_created ON app_logs (created_at);
CREATE INDEX idx_app_logs_level ON app_logs (level, service);
"""

COUNTRIES = ("DE", "FR", "US", "GB", "NL", "SE", "PL", "ES", "IT", "JP", "BR", "IN")
CATEGORIES = ("books", "garden", "kitchen", "toys", "tools", "music", "sports", "office")
STATUSES = ("new", "paid", "shipped", "delivered", "cancelled", "refunded")
SERVICES = ("api", "billing", "auth", "search", "worker", "gateway")
LEVELS = ("DEBUG",) * 5 + ("INFO",) * 8 + ("WARN",) * 2 + ("ERROR",)
MESSAGES = (
    "request completed in {n} ms",
    "cache miss for key user:{n}",
    "retrying upstream call, attempt {n}",
    "payment authorised for order {n}",
    "slow query took {n} ms",
    "session {n} expired",
    "rate limit reached for client {n}",
)
LOG_DAYS = 180


def create_demo(
    path: Path,
    *,
    log_rows: int = 200_000,
    users: int = 5_000,
    orders: int = 60_000,
    seed: int = 42,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Create (or replace) the demo database at path; returns the row count per table.

    An existing file is replaced only if it is empty or a demo database made here.
    """
    check_replaceable(path)
    rng = random.Random(seed)
    # Naive, in UTC: its isoformat(" ") is the stored text, at a third of strftime's cost.
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    make_private_dirs(path.parent)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    conn = sqlite3.connect(make_private_file(partial))
    try:
        conn.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
        # A file no one reads until it is whole and renamed: no journal, no sync per
        # commit; it is synced once, before the rename.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(SCHEMA)
        tell = progress or (lambda _label, _n: None)

        _fill_shop(conn, rng, now, users, orders, tell)
        conn.executemany(
            "INSERT INTO app_logs VALUES (?, ?, ?, ?, ?, ?)",
            _log_rows(rng, now, log_rows, tell),
        )
        # A purge of cancelled orders and of the oldest block of logs, and a staging
        # table dropped after an import (a tenth of the logs' rows: 8 MB for the
        # default demo), leave pages on the free list.
        conn.execute("DELETE FROM orders WHERE status = 'cancelled'")
        conn.execute("DELETE FROM app_logs WHERE id <= ?", (log_rows // 10,))
        conn.execute("CREATE TABLE import_staging (id INTEGER PRIMARY KEY, payload TEXT)")
        conn.executemany(
            "INSERT INTO import_staging (payload) VALUES (?)",
            (("x" * 400,) for _ in range(max(1, log_rows // 10))),
        )
        conn.commit()
        conn.execute("DROP TABLE import_staging")
        conn.commit()
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {quote_plain_identifier(table)}").fetchone()[
                0
            ]
            for table in ("users", "products", "orders", "app_logs")
        }
    finally:
        conn.close()
    _put_in_place(partial, path)
    return counts


def _put_in_place(partial: Path, path: Path) -> None:
    """The whole file made durable, then renamed to `path` (the rename durable too)."""
    fd = os.open(partial, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    check_replaceable(path)  # again: the file may have appeared while rows were made
    os.replace(partial, path)
    fsync_dir(path.parent)


def is_demo_database(path: Path) -> bool:
    """Whether the file is a SQLite database whose header marks it as an aishell demo."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
    except OSError:
        return False
    # The SQLite header: its magic string, and the application id at offset 68.
    return (
        len(header) == 100
        and header.startswith(b"SQLite format 3\x00")
        and int.from_bytes(header[68:72], "big") == DEMO_APPLICATION_ID
    )


def check_replaceable(path: Path) -> None:
    """Refuse to replace anything but nothing, an empty file, or a demo database; and a
    path no file can be made at, under a regular file."""
    blocking = file_in_the_way(path)
    if blocking is not None:
        raise UsageError(
            f"The demo database {path} cannot be made: {blocking} is a file, not a folder; "
            "move it away, or give the target a url in a folder"
        )
    if not path.exists() and not path.is_symlink():
        return
    if path.is_file() and path.stat().st_size == 0:
        return
    if path.is_file() and is_demo_database(path):
        return
    raise UsageError(
        f"{path} is not an aishell demo database; choose another --target or remove the "
        "file yourself"
    )


def _fill_shop(
    conn: sqlite3.Connection,
    rng: random.Random,
    now: datetime,
    users: int,
    orders: int,
    tell: Callable[[str, int], None],
) -> None:
    """Users, products and orders; the same seed makes the same rows."""
    user_ids = list(range(1, users + 1))
    rng.shuffle(user_ids)
    conn.executemany(
        "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
        (
            (
                uid,
                f"user{uid}.{rng.randrange(10**6)}@example.com",
                f"User {uid}",
                rng.choice(COUNTRIES),
                _ts(now - timedelta(days=rng.randrange(720))),
            )
            for uid in user_ids
        ),
    )
    tell("users", users)
    conn.executemany(
        "INSERT INTO products VALUES (?, ?, ?, ?, ?)",
        (
            (
                pid,
                f"SKU-{rng.randrange(10**8):08d}-{pid}",
                f"Product {pid}",
                rng.choice(CATEGORIES),
                rng.randrange(199, 99_999),
            )
            for pid in range(1, 1_001)
        ),
    )
    tell("products", 1_000)
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                oid,
                rng.randrange(1, users + 1),
                rng.randrange(1, 1_001),
                rng.randrange(1, 6),
                rng.choice(STATUSES),
                _ts(now - timedelta(seconds=rng.randrange(365 * 86_400))),
            )
            for oid in range(1, orders + 1)
        ),
    )
    tell("orders", orders)


def _log_rows(
    rng: random.Random, now: datetime, count: int, tell: Callable[[str, int], None]
) -> Iterator[tuple[object, ...]]:
    span = LOG_DAYS * 86_400
    # Ids ascend with time, as an application appends logs; a retention purge of the
    # oldest ids then frees whole pages.
    offsets = sorted((rng.randrange(span) for _ in range(count)), reverse=True)
    for i, offset in enumerate(offsets, start=1):
        yield (
            i,
            _ts(now - timedelta(seconds=offset)),
            rng.choice(LEVELS),
            rng.choice(SERVICES),
            rng.choice(MESSAGES).format(n=rng.randrange(10_000)),
            f"{rng.getrandbits(64):016x}" if rng.random() < 0.7 else None,
        )
        if i % 50_000 == 0:
            tell("app_logs", i)
    tell("app_logs", count)


def _ts(moment: datetime) -> str:
    """YYYY-MM-DD HH:MM:SS: SQLite's datetime() text, which the demo's queries compare."""
    return moment.isoformat(" ")
