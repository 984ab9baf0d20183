"""What the catalog holds of each PostgreSQL table, read in one query for all of them
(or for the ones a step changed): its row estimate, its bytes with its indexes', and its
indexes by name. Checked against the server's own views, one table at a time: a table
without indexes, one with several (a name that needs quoting among them), a partitioned
table and its partition, one never analyzed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from aishell.targets.tables import TableCatalog

TABLES = ("many", "none", "parted", "parted_2020", 'Odd "one', "fresh")


def _made(url: str) -> Any:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for sql in (
            "CREATE TABLE many (id int PRIMARY KEY, v text, w int)",
            "CREATE INDEX many_v ON many (v)",
            'CREATE INDEX "many w, v" ON many (w, v)',
            "INSERT INTO many SELECT g, g::text, g % 7 FROM generate_series(1, 3000) g",
            "CREATE TABLE none (x int)",
            "INSERT INTO none SELECT generate_series(1, 100)",
            "CREATE TABLE parted (id int, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d)",
            "CREATE TABLE parted_2020 PARTITION OF parted "
            "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')",
            "INSERT INTO parted SELECT g, date '2020-03-01' FROM generate_series(1, 500) g",
            'CREATE TABLE "Odd ""one" (id int PRIMARY KEY)',
            # The rows written reach the statistics before ANALYZE counts them: sent
            # after, they would be counted twice (and wake autovacuum's ANALYZE).
            "SELECT pg_stat_force_next_flush()",
            'ANALYZE many, none, parted, "Odd ""one"',
            "CREATE TABLE fresh (id int PRIMARY KEY)",
            "INSERT INTO fresh SELECT generate_series(1, 40)",
        ):
            conn.execute(text(sql))
    return engine


def _truth(conn: Any, table: str) -> dict[str, Any]:
    """The table's facts from pg_indexes and pg_class, looked up by name alone."""
    indexes = sorted(
        conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = :t"
            ),
            {"t": table},
        ).scalars()
    )
    pages = conn.execute(
        text(
            "SELECT sum(relpages) FROM pg_class WHERE relnamespace = "
            "(SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
            "AND relname = ANY(CAST(:names AS text[]))"
        ),
        {"names": [table, *indexes]},
    ).scalar_one()
    estimate, live = conn.execute(
        text(
            "SELECT reltuples, pg_stat_get_live_tuples(oid) FROM pg_class "
            "WHERE oid = CAST(:t AS regclass)"
        ),
        {"t": '"' + table.replace('"', '""') + '"'},
    ).one()
    # Pages as last counted, grown by the rows written since (live rows over counted).
    grown = max(1.0, live / estimate) if estimate > 0 else 1.0
    return {"indexes": indexes, "bytes": round(int(pages) * 8192 * grown), "estimate": estimate}


def test_each_tables_facts_are_the_servers(pg_url: str):
    engine = _made(pg_url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            # The catalog and the test read one view of the statistics: counters another
            # process (autovacuum) moves between the two reads do not change it.
            conn.execute(text("SET stats_fetch_consistency = snapshot"))
            catalog = TableCatalog.read(conn)
            assert set(TABLES) <= set(catalog.tables)
            for table in TABLES:
                truth = _truth(conn, table)
                facts = catalog.tables[table]
                assert facts.indexes == truth["indexes"], table
                assert facts.bytes == truth["bytes"], table
                if truth["estimate"] >= 0:
                    assert facts.rows == int(truth["estimate"]), table
            assert catalog.tables["none"].indexes == []
            assert catalog.tables["many"].indexes == ["many w, v", "many_pkey", "many_v"]
            assert catalog.tables["many"].rows == 3000
            # Never analyzed: the live rows the server counted as they were written.
            assert catalog.tables["fresh"].rows in (0, 40)

            # A step changed two tables: those alone are read again, as the server has
            # them now.
            conn.execute(text("CREATE INDEX none_x ON none (x)"))
            catalog.changed(["none", 'Odd "one'])
            catalog.current(conn, ["none", 'Odd "one'])
            assert catalog.tables["none"].indexes == ["none_x"]
            assert catalog.tables["none"].bytes == _truth(conn, "none")["bytes"]
            assert catalog.tables['Odd "one'].indexes == _truth(conn, 'Odd "one')["indexes"]
    finally:
        engine.dispose()
