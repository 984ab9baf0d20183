"""MariaDB and MySQL: a returned connection's isolation level set back (the pool's reset
of a read-only connection), which goes past the statements' error hook."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine

from aishell.targets.limits import Limits, TargetSilent, pymysql_timed_out


def name_isolation_silence(engine: Engine, limits: Limits) -> None:
    """PyMySQL's read timeout in setting a returned connection's isolation level back
    (the pool's reset of a read-only connection, past handle_error) ends in the one line
    that names the limit, as a statement's does, not in the driver's own error."""
    dialect = engine.dialect
    reset_level = dialect.reset_isolation_level

    def run(dbapi_conn: Any) -> None:
        try:
            reset_level(dbapi_conn)
        except Exception as exc:
            if not pymysql_timed_out(exc):
                raise
            said = limits.silence(getattr(dbapi_conn, "_read_timeout", None) or limits.read_timeout)
            if limits.on_silence is not None:
                raise limits.on_silence(said) from None
            raise TargetSilent(said, None, None, exc) from None

    dialect.reset_isolation_level = run  # type: ignore[method-assign,assignment]
