"""A plan whose shared step finds one of its tables held by another session says, in
that step's SQL, that the table is left out and who holds it, as the run will skip it:
a plan has no output to point to. The line stays one line whatever the holder's
statement holds."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from aishell import commands
from aishell.config.models import load_config
from tests.executor.test_shared_steps import with_lock_wait
from tests.helpers import use_target
from tests.services import engine

TABLES = ["free_0", "held_1", "free_2"]


def test_a_plan_names_who_holds_a_table_its_shared_step_leaves_out(
    home: Path, server_url: str
) -> None:
    admin = engine(server_url)
    with admin.connect() as conn:
        for t in TABLES:
            conn.execute(text(f"CREATE TABLE {t} (id int PRIMARY KEY, note varchar(20))"))
            # Enough pages that MariaDB's measure reads the table's rows, not only the
            # catalog (which a metadata lock does not hold).
            rows = "generate_series(1, 5000)" if conn.dialect.name == "postgresql" else "seq"
            source = f"SELECT {rows}, 'row'" + ("" if "gen" in rows else " FROM seq_1_to_5000")
            conn.execute(text(f"INSERT INTO {t} {source}"))
            # Its size as the catalog gives it, not as InnoDB's background count has it yet.
            conn.execute(text(f"ANALYZE {'' if 'gen' in rows else 'TABLE '}{t}"))
    use_target(home, server_url)
    with_lock_wait(home, 200)  # MariaDB's: 1 s, rounded up
    config = load_config(home=home)
    holder = admin.connect()
    try:
        if holder.dialect.name == "postgresql":
            holder = holder.execution_options(isolation_level="READ COMMITTED")
            holder.execute(text("LOCK TABLE held_1\nIN ACCESS EXCLUSIVE MODE"))
            named = f"pid {holder.execute(text('SELECT pg_backend_pid()')).scalar()}"
        else:
            holder.execute(text("LOCK TABLES held_1 WRITE"))
            named = f"connection {holder.execute(text('SELECT CONNECTION_ID()')).scalar()}"
        preview = commands.plan_job(config, "maintenance", {"type": "full", "tables": TABLES})
    finally:
        if holder.dialect.name == "postgresql":
            holder.rollback()
        else:
            holder.execute(text("UNLOCK TABLES"))
        holder.close()
        admin.dispose()
    shared = [s for s in preview.steps if s.tool == "optimize_table"]
    assert shared
    for step in shared:
        [line] = [sql for sql in step.sql if "held_1" in sql]
        assert line.startswith("-- ") and "\n" not in line, line
        assert "not measured, so left out" in line and named in line, line
        assert "see the output" not in line
        # The tables not held are measured as ever.
        assert not any("left out" in sql for sql in step.sql if "held_1" not in sql)
