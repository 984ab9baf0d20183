"""A target's readiness is read by its dialect's name, on each engine: the size of its
database (for the room its backups need) and the client programs its backups run."""

from __future__ import annotations

from aishell import commands
from aishell.commands.readiness import PROGRAMS, target_readiness


def test_a_server_target_reports_its_size_and_its_programs(server_config, server_url):
    found = target_readiness(server_config, "db")
    dialect = "postgresql" if server_url.startswith("postgresql") else "mysql"
    assert found["reachable"] and found["dialect"] == dialect
    # Measured (None when the measure failed); an empty MariaDB database is 0 bytes.
    assert isinstance(found["backups"]["database_bytes"], int)
    needed = [program["needed_for"] for program in found["programs"]]
    assert needed == [needed_for for _, needed_for in PROGRAMS[dialect]]


def test_a_sqlite_target_needs_no_program(config, demo_db):
    found = target_readiness(config, "demo")
    assert found["dialect"] == "sqlite" and found["programs"] == []
    assert found["backups"]["database_bytes"] == demo_db.stat().st_size
    assert commands.list_runs(config) == []  # a look, nothing run
