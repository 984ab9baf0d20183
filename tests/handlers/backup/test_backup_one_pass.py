"""Backups of servers in one pass over the data: the manifest's sha256 is the file's, the
row counts are those of the dump (PostgreSQL: counted in its snapshot while it streams;
MySQL/MariaDB: read from the dump) and equal count(*) of each table (partitions,
inheritance, large objects and odd names included), and a MySQL/MariaDB dump's
checksums do not depend on how the dump splits its rows into statements. Backups made
before, whose checksums sum each row's sha256, still validate."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from aishell import commands
from aishell.handlers.backup.dumps import COUNTED_IN_SNAPSHOT
from aishell.handlers.backup.mysql_dump import (
    IN_ORDER,
    ROW_SUM,
    find_marker,
    read_chunks,
    read_dump,
)
from aishell.handlers.backup.pgarchive import ArchiveUnreadable, read_archive, read_header
from tests.handlers.backup.recorded import record_as_on_disk
from tests.helpers import one_step_plan, use_target
from tests.services import engine


def run(url: str, *statements: str) -> None:
    with engine(url).connect() as conn:
        for statement in statements:
            conn.execute(text(statement))


def backup(config, verify: bool = True) -> tuple[Path, dict]:
    result = commands.run_job(config, "backup", {"type": "full", "verify": verify})
    assert result.status == "completed", result.error
    path = Path(result.steps[1].output["backup_path"])
    return path, json.loads(Path(f"{path}.manifest.json").read_text())


def test_the_manifest_sha256_is_the_sha256_of_the_file(server_config, server_url):
    run(
        server_url,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))",
        *(f"INSERT INTO a VALUES ({i}, 'value {i}')" for i in range(300)),
    )
    path, manifest = backup(server_config, verify=False)
    data = path.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size_bytes"] == len(data)
    [listed] = commands.list_backups(server_config)
    assert listed["sha256"] == manifest["sha256"] and listed["size_bytes"] == len(data)
    assert manifest["tables"] == {"a": 300}


PG_SHAPES = [
    "CREATE TABLE plain (id integer PRIMARY KEY, v text)",
    "INSERT INTO plain SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 5000) g",
    "CREATE TABLE empty (id integer)",
    # Values with line breaks, tabs and backslashes: COPY escapes them on one line.
    "CREATE TABLE texts (v text)",
    "INSERT INTO texts VALUES (E'two\\nlines'), (E'tab\\there'), (E'back\\\\slash'), (NULL), ('')",
    # Inheritance, one child in another schema: count(*) of the parent counts theirs.
    "CREATE TABLE parent (id integer, v text)",
    "CREATE TABLE child (extra integer) INHERITS (parent)",
    "CREATE SCHEMA other",
    "CREATE TABLE other.grandchild () INHERITS (child)",
    "INSERT INTO parent VALUES (1, 'a'), (2, 'b')",
    "INSERT INTO child VALUES (3, 'c', 1)",
    "INSERT INTO other.grandchild VALUES (4, 'd', 2), (5, 'e', 3)",
    # A partitioned table holds its partitions' rows.
    "CREATE TABLE measures (id integer, k integer) PARTITION BY RANGE (k)",
    "CREATE TABLE measures_low PARTITION OF measures FOR VALUES FROM (0) TO (10)",
    "CREATE TABLE measures_high PARTITION OF measures FOR VALUES FROM (10) TO (100)",
    "INSERT INTO measures SELECT g, g % 100 FROM generate_series(1, 777) g",
    'CREATE TABLE "odd ""name""\nwith a line break" (id integer)',
    'INSERT INTO "odd ""name""\nwith a line break" VALUES (1), (2)',
    "SELECT lo_from_bytea(0, 'a large object between the tables')",
]


def test_postgresql_counts_come_from_the_snapshot_and_equal_count_star(home, pg_url):
    run(pg_url, *PG_SHAPES)
    config = use_target(home, pg_url)
    _path, manifest = backup(config)
    assert manifest["counted"] == COUNTED_IN_SNAPSHOT
    # The archive names the pg_dump that wrote it.
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=True)
    assert manifest["tool"] == version.stdout.strip()
    with engine(pg_url).connect() as conn:
        names = conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'"
            )
        ).scalars()
        expected = {
            name: conn.execute(
                text(f'SELECT count(*) FROM "{name.replace(chr(34), 2 * chr(34))}"')
            ).scalar_one()
            for name in names
        }
    assert manifest["tables"] == expected
    assert expected["parent"] == 5 and expected["measures"] == 777 and expected["empty"] == 0
    # Small tables have a checksum, read in the same snapshot.
    assert set(manifest["checksums"]) == set(expected)


def pg_archive(url: str, *options: str) -> bytes:
    database = url.rsplit("/", 1)[1]
    done = subprocess.run(
        ["pg_dump", "-Fc", *options, "-h", "127.0.0.1", "-U", "postgres", database],
        capture_output=True,
        check=True,
    )
    return done.stdout


def test_the_archive_reader_counts_compressed_and_plain_archives_and_refuses_others(pg_url):
    run(pg_url, *PG_SHAPES)
    with engine(pg_url).connect() as conn:
        oids = dict(
            conn.execute(
                text("SELECT oid::int, relname FROM pg_class WHERE relname IN ('plain', 'child')")
            ).all()
        )
    for options in ((), ("-Z0",)):
        archive = pg_archive(pg_url, *options)
        for size in (1, 4096, len(archive)):
            rows = read_archive(
                iter([archive[i : i + size] for i in range(0, len(archive), size)])
            ).rows
            assert {oids[o]: n for o, n in rows.items() if o in oids} == {"plain": 5000, "child": 1}
    archive = pg_archive(pg_url)
    for damaged in (archive[: len(archive) // 2], b"not an archive at all", b""):
        with pytest.raises(ArchiveUnreadable):
            read_archive(iter([damaged]))
    # The header alone names the pg_dump, in any chunks, and reads no further than it.
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True, check=True)
    for size in (1, 4096, len(archive)):
        chunks = iter([archive[i : i + size] for i in range(0, len(archive), size)])
        header = read_header(chunks)
        assert header.pg_dump == version.stdout.strip() and header.rows == {}
        if size == 1:  # the table data is left to its reader
            assert len(list(chunks)) > 5000
    for damaged in (b"not an archive at all", b""):
        with pytest.raises(ArchiveUnreadable):
            read_header(iter([damaged]))
    # A byte changed in a table's compressed rows.
    flipped = bytearray(pg_archive(pg_url, "--table=plain"))
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(ArchiveUnreadable):
        read_archive(iter([bytes(flipped)]))


# --- MySQL/MariaDB checksums ------------------------------------------------------------------

ROWS = [b"(1,'a'),", b"(2,'semi;colon'),", b"(3,'paren),(inside'),", b"(4,NULL);"]


def dump_text(statements: list[list[bytes]], one_line: bool) -> bytes:
    """A dump of table t whose rows are split into the given statements; each row on a
    line of its own (mariadb-dump) or all on the statement's line (mysqldump)."""
    out = [b"--\n-- Table structure for table `t`\n--\n\nCREATE TABLE `t` (\n) ;\n"]
    for rows in statements:
        body = [r.rstrip(b",;") for r in rows]
        if one_line:
            out.append(b"INSERT INTO `t` VALUES " + b",".join(body) + b";\n")
        else:
            out.append(b"INSERT INTO `t` VALUES\n" + b",\n".join(body) + b";\n")
    out.append(b"-- Dump completed on 2026-01-01\n")
    return b"".join(out)


def test_mysql_checksums_do_not_depend_on_how_the_dump_splits_rows():
    whole = [ROWS]
    split = [ROWS[:1], ROWS[1:3], ROWS[3:]]
    results = set()
    for statements in (whole, split):
        for one_line in (True, False):
            data = dump_text(statements, one_line)
            for size in (1, 3, len(data)):
                dump = read_chunks([data[i : i + size] for i in range(0, len(data), size)])
                assert dump.counts() == {"t": 4} and dump.complete
                results.add(dump.checksums()["t"])
    assert len(results) == 1
    # Another row, or the same rows in another order, is another checksum.
    other = dump_text([[ROWS[1], ROWS[0], *ROWS[2:]]], False)
    assert read_chunks([other]).checksums()["t"] not in results
    # The checksums of earlier backups, a sum over rows, are read the same either way.
    sums = {
        read_chunks([dump_text(s, o)], ROW_SUM).checksums()["t"]
        for s in (whole, split)
        for o in (True, False)
    }
    assert len(sums) == 1 and sums.isdisjoint(results)


def test_a_mysql_backup_with_the_earlier_checksums_still_validates(home, mysql_url):
    run(
        mysql_url,
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v VARCHAR(40))",
        *(f"INSERT INTO a VALUES ({i}, 'value {i}')" for i in range(50)),
    )
    config = use_target(home, mysql_url)
    path, manifest = backup(config, verify=False)
    assert manifest["checksum_method"] == IN_ORDER
    manifest_path = Path(f"{path}.manifest.json")
    # As a backup made before the method was named: checksums summed over rows.
    del manifest["checksum_method"]
    manifest["checksums"] = read_dump(path, ROW_SUM).checksums()
    manifest_path.write_text(json.dumps(manifest))
    record_as_on_disk(home, path)
    plan = one_step_plan("backup", "db", "mysql", "validate_backup", {"backup_path": str(path)})
    checked = commands.apply_plan(config, plan)
    assert checked.status == "completed", checked.steps[0].error
    assert checked.steps[0].output["checksums_compared"] == 1
    # And such a checksum still catches other contents.
    manifest["checksums"]["a"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    record_as_on_disk(home, path)
    checked = commands.apply_plan(config, plan)
    assert checked.status == "failed"
    assert "a: restored contents differ from the backup's checksum" in checked.steps[0].error


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64).map(lambda b: b.replace(b"x", b";")), st.integers(0, 70))
def test_the_statement_end_search_finds_what_bytes_find_finds(buffer, start):
    """The search by the marker's first byte agrees with bytes.find, semicolons or not."""
    for marker in (b";\n", b";", b"\n;\n"):
        assert find_marker(buffer, marker, start) == buffer.find(marker, start)


values = st.lists(
    st.text(alphabet=";\n'(),ab", max_size=12).map(
        lambda s: "'" + s.replace("\\", "").replace("'", "\\'").replace("\n", "\\n") + "'"
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(values, st.integers(1, 50))
def test_a_dump_full_of_semicolons_reads_the_same_in_any_chunks(strings, size):
    """Rows whose strings hold semicolons, parentheses and escaped line breaks: the count
    and checksum are the rows', however the stream is cut."""
    rows = [f"({i},{s})".encode() for i, s in enumerate(strings)]
    data = dump_text([rows], False)
    dump = read_chunks([data[i : i + size] for i in range(0, len(data), size)])
    expected = hashlib.sha256(b"".join(r + b",\n" for r in rows)).hexdigest()
    assert dump.counts() == {"t": len(rows)} and dump.checksums() == {"t": expected}
