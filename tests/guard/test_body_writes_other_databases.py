"""On MariaDB a trigger's body runs the routines of its own database whose names it
holds, and those of another database only where it names that database too: a routine
of an unrelated database whose name happens to stand in the body (another application's
`audit` procedure) is no code the purge runs, and its coming and going while the purge
runs does not stop it; a call qualified with another database's name is still found."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from aishell.guard.writereach import write_reach
from aishell.handlers.purge.reach import read_reach
from tests.guard.test_guard import execute
from tests.services import scratch_mysql


def _reach(url: str) -> tuple[set[tuple[str, str]], set[str]]:
    """The tables the DELETE's bodies write, and the routines the batch's reach names."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            reach = write_reach(conn, ["DELETE FROM logs WHERE id = 1"])
            batch = read_reach(conn, "`logs`", "logs")
    finally:
        engine.dispose()
    assert reach is not None
    routines = {str(name) for kind, name, *_ in batch.found if kind == "routine"}
    return {(w.event, w.table) for w in reach.by_bodies}, routines


def test_a_routine_of_another_database_is_run_only_where_the_body_names_it() -> None:
    with scratch_mysql() as url, scratch_mysql() as other_url:
        other = make_url(other_url).database
        execute(
            other_url,
            "CREATE TABLE ledger (id integer)",
            "CREATE PROCEDURE audit() DELETE FROM ledger",
            "CREATE PROCEDURE noted() INSERT INTO ledger VALUES (1)",
        )
        execute(
            url,
            "CREATE TABLE logs (id integer PRIMARY KEY)",
            "CREATE TABLE audit (id integer)",
            "CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW "
            "INSERT INTO audit VALUES (OLD.id)",
        )
        written, routines = _reach(url)
        assert written == {("INSERT", "audit")}
        assert routines == set()

        execute(
            url,
            "DROP TRIGGER logs_gone",
            f"CREATE TRIGGER logs_gone AFTER DELETE ON logs FOR EACH ROW CALL `{other}`.noted()",
        )
        written, routines = _reach(url)
        assert ("INSERT", "ledger") in written
        assert any(f"{other}.noted" in r for r in routines), routines
