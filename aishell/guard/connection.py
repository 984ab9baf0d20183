"""The guarded connection: a step's statements reach the database only through it.

Each statement is classified as it is sent (after substitution, as the driver gets it).
Reads pass; a write passes only when it is an instance of a statement shape the step
was checked and approved with; anything else is refused before it reaches the server,
and the refusal is recorded with the run's statements. A read that calls a function
that may write (guardcalls.py), or reads a view or table whose reading may (guardhidden.py),
counts as a write of high risk, which no step approved at a lower risk may send; where
an operator, cast or type may write, reads on a read-write session are sent read-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect

from aishell.dialects import family
from aishell.errors import SessionTampered, StatementRefused
from aishell.guard.calls import (
    called_functions,
    called_said,
    shown,
    user_written_calls,
    writing_calls,
)
from aishell.guard.hidden import HiddenWriters, hidden_writers
from aishell.guard.lex import placed_bind
from aishell.guard.memory import GuardMemory
from aishell.guard.statements import (
    READS,
    Classification,
    Shape,
    classify,
    compile_shape,
    driver_to_text,
)
from aishell.risk import RiskLevel
from aishell.targets.access import (
    ACCESS_KEY,
    SESSION_ACCESS,
    session_changed,
    written_session_changed,
)


def _read_write_again(dialect: Dialect, cursor: Any) -> str | None:
    """Whether a session set read-only is read-write now, asked of the server in one
    round trip (MariaDB's name for the variable, or MySQL's since 5.7.20; SQLite's
    query_only); None while it is read-only still."""
    if family(dialect.name) == "mysql":
        name = "tx_read_only" if getattr(dialect, "is_mariadb", False) else "transaction_read_only"
        cursor.execute(f"SELECT @@session.{name}")
        said = f"@@session.{name} is now 0: the session is read-write again"
    else:
        cursor.execute("PRAGMA query_only")
        said = "query_only is now off"
    row = cursor.fetchone()
    return None if row is not None and str(row[0]) == "1" else said


@dataclass
class Guard:
    """What one step may send: reads, and writes of the approved shapes (None when the
    step only reads)."""

    shapes: Shapes | None = None
    writes: bool = False
    # The risk the step was approved at (its tool's): a write only the server's catalog
    # shows (a function, a view that writes) is high, and passes no step approved lower,
    # even by a shape of its own: the parser took that shape for a read.
    risk: RiskLevel = RiskLevel.SAFE
    label: str = "this step"
    refused: list[str] = field(default_factory=list)
    memory: GuardMemory = field(default_factory=GuardMemory)
    # Whether the step's writes run code of the database's own (its estimate named some):
    # code that may change the session's settings, which its end then asks.
    runs_code: bool = False
    # The step's connection, whose info says whether the session is read-only (as
    # session_access keeps it; read afresh, as a reconnect brings a new session); None
    # when unknown, and then no read is sent read-only by the guard.
    connection: Connection | None = None
    # Whether this guard made the session read-only, for a read (see guardhidden.py).
    _made_read_only: bool = field(default=False, init=False)
    # Whether the statement being sent is a read in a read-only savepoint of the guard's.
    _in_savepoint: bool = field(default=False, init=False)

    def check(self, statement: str, cursor: Any, dialect: str, paramstyle: str) -> str | None:
        """None when the statement may be sent; otherwise why not."""
        return self.verdict(statement, cursor, dialect, paramstyle)[0]

    def verdict(
        self, statement: str, cursor: Any, dialect: str, paramstyle: str
    ) -> tuple[str | None, Classification]:
        """(None when the statement may be sent, otherwise why not; what it does)."""
        # A read that failed in its savepoint left it to the tool's rollback.
        self._in_savepoint = False
        if self._made_read_only and not _idle(cursor, dialect):
            # Read-only for an earlier read, the session would make the transaction this
            # statement is in, or begins (a catalog lookup would begin it too), read-only,
            # and the step's writes after it with it.
            self._read_write_again(cursor, dialect)
        if statement in self.memory.reads:
            return self._read(statement, cursor, dialect, paramstyle)
        placed = placed_bind(statement, dialect, paramstyle)
        if placed is not None:
            # Whatever the step may do: the server would run the value as SQL.
            reason = (
                f"its parameter {placed} stands inside a string or a comment, where no value "
                "is bound (PyMySQL would write the value there as SQL text)"
            )
            return reason, Classification(True, RiskLevel.CRITICAL, reason)
        sql = driver_to_text(statement, paramstyle)
        found = classify(sql, dialect)
        if found.misread and self.writes:
            # Its shape and approval were the parser's reading, not what the server runs.
            unread = f"the server would not run it as the parser read it ({found.reason})"
            found = Classification(True, RiskLevel.CRITICAL, unread, misread=True)
            return f"{self.label} may not send it: {unread}", found
        if not found.writes and dialect in ("postgresql", "mysql"):
            writing = self._writing_calls(sql, dialect, cursor)
            if writing:
                kind = (
                    "volatile or user-defined"
                    if dialect == "postgresql"
                    else "a stored or loadable function"
                )
                reason = (
                    f"it calls {', '.join(writing)}, {kind} and not known to only read "
                    "(one the site knows only reads can be listed in the target's "
                    "trusted_functions)"
                )
                found = Classification(True, RiskLevel.HIGH, reason)
                return self._let_through(self._refuse_write(statement, reason, found.risk)), found
        if not found.writes:
            self.memory.reads.add(statement)
            return self._read(statement, cursor, dialect, paramstyle)
        if self.writes and dialect in ("postgresql", "mysql") and cursor is not None:
            runs = self._code_a_write_runs(sql, dialect, cursor)
            if runs is not None:
                found = Classification(True, RiskLevel.HIGH, f"{found.reason}; {runs}")
                why = self._let_through(self._refuse_write(statement, found.reason, found.risk))
                if why is None:
                    self._read_write_again(cursor, dialect)
                return why, found
        why = self._refuse_write(statement, found.reason)
        if why is None:
            self.memory.wrote(sql, dialect)
            self._read_write_again(cursor, dialect)
        return why, found

    def _let_through(self, why: str | None) -> str | None:
        """A write that runs a user's code, let through: that code may change any
        definition, so what the catalog said is asked again."""
        if why is None:
            self.memory.forget()
        return why

    def raise_if_refused(self) -> None:
        """Even when the tool caught a refusal, the step does not pass."""
        if self.refused:
            raise StatementRefused(f"{self.label}: statement refused: {self.refused[0]}")

    def _refuse_write(
        self, statement: str, reason: str, risk: RiskLevel | None = None
    ) -> str | None:
        """Why a write may not be sent; None when it may. `risk`: a write the catalog
        shows, which the parser (and so the step's approval) took for a read."""
        if not self.writes:
            return f"{self.label} only reads, and this statement writes ({reason})"
        if risk is not None and risk.rank > self.risk.rank:
            return (
                f"it writes ({reason}): a {risk} risk, above the {self.risk} {self.label} "
                f"was approved at (tag the tool {risk} to approve it)"
            )
        words = " ".join(statement.split())
        if self.shapes is not None and self.shapes.allows(statement, words):
            return None
        return f"it writes ({reason}) and is none of the statements {self.label} was approved with"

    def _read(
        self, statement: str, cursor: Any, dialect: str, paramstyle: str
    ) -> tuple[str | None, Classification]:
        """A read on a read-write session: what may make it write without naming a
        function (guardhidden.py). On a read-only session the database refuses it."""
        conn = self.connection
        if conn is None or dialect not in ("postgresql", "mysql"):
            return None, READS
        hidden = self._hidden(cursor, dialect)
        if not hidden:
            return None, READS
        sql = driver_to_text(statement, paramstyle)
        named = hidden.named_in(sql, dialect, lambda: session_database(cursor))
        symbol = hidden.operator_in(sql, dialect)
        cast = hidden.type_in(sql, dialect)
        if named is not None:
            # Even in a read-only session: what a view runs may reach beyond it (end
            # another session, open one elsewhere) or switch it back to read-write.
            reason = f"it reads {named}: {hidden.relations[named]}"
        elif symbol is not None:
            reason = f"it uses the operator {symbol}: {hidden.operators[symbol]}"
        elif cast is not None:
            reason = f"it names the type {cast}: {hidden.types[cast]}"
        elif hidden.anywhere and hidden.elsewhere:
            reason = (
                f"the {hidden.anywhere[0]} runs a function that may write in any read, and "
                f"through the extension {hidden.elsewhere} in a session of its own, which no "
                "read-only session stops (list the function in the target's "
                "trusted_functions if it only reads)"
            )
        elif conn.info.get(ACCESS_KEY):
            return None, READS  # the database refuses what it would write
        elif not hidden.anywhere:
            return None, READS
        elif _idle(cursor, dialect):
            self._set_read_only(cursor, dialect, True)
            return None, READS
        elif not _server_side(cursor):
            self._begin_read_only_savepoint(cursor)
            return None, READS
        else:
            reason = (
                f"it is read through a server-side cursor inside a transaction of a read-write "
                f"session, where the {hidden.anywhere[0]} runs a function that may write"
            )
        found = Classification(True, RiskLevel.HIGH, reason)
        return self._refuse_write(statement, reason, found.risk), found

    def sent(self, cursor: Any) -> None:
        """After a statement the guard passed ran: a read sent in a read-only savepoint
        (its rows already fetched) leaves the transaction as it found it; a step that
        only reads finds its session as it was, or fails."""
        if self._in_savepoint:
            self._in_savepoint = False
            _on_second_cursor(cursor, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE {_SAVEPOINT}")
        conn = self.connection
        if self.writes or conn is None or not conn.info.get(ACCESS_KEY):
            return
        # Code of a user's may run in a read: a function the site trusts, or one behind
        # an operator, cast or type. Without any, what the server reports with each
        # answer is enough.
        hidden = self.memory.hidden
        thorough = bool(self.memory.trusted or (hidden is not None and hidden.anywhere))
        changed = session_changed(conn, cursor, thorough)
        if changed is not None:
            # Not trusted again: the next step sets its session afresh.
            conn.info[ACCESS_KEY] = None
            self.refused.append(changed)
            raise SessionTampered(
                f"{self.label}: the step changed its own read-only session ({changed}); "
                "a function it ran switched it, and the step is failed"
            )

    def ended(self, ask: bool = True) -> None:
        """At the step's end: a step that only reads finds its session read-only still.
        Code of the tool's own may have reached under the guard (the DBAPI connection)
        and switched it. PostgreSQL reports the setting with every answer, so it is
        known without a round trip; MariaDB (@@session.tx_read_only) and SQLite (PRAGMA
        query_only) are asked, with `ask`: one round trip at the end of a step that only
        reads (a step that writes costs none: its session is read-write anyway; what a
        step's preparation switched is found at the end of its run). A PostgreSQL step
        that writes finds its session's reported settings as they began (a trigger's
        set_config('TimeZone', ...)), so that the step that changed them is the one
        failed, not the next that reads; those it does not report (extra_float_digits,
        lc_monetary, search_path, role) are asked, in one round trip, after a step whose
        writes may have run code of a user's."""
        conn = self.connection
        if self.writes and conn is not None and conn.dialect.name == "postgresql":
            self._reported_kept(conn)
            return
        if self.writes or conn is None or not (ask or conn.dialect.name == "postgresql"):
            return
        if conn.closed or conn.invalidated or not conn.info.get(ACCESS_KEY):
            return
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:
            return
        cursor = dbapi.cursor()
        try:
            if conn.dialect.name == "postgresql":
                changed = session_changed(conn, cursor, thorough=False)
            else:
                changed = _read_write_again(conn.dialect, cursor)
        finally:
            cursor.close()
        if changed is not None:
            conn.info[ACCESS_KEY] = None
            self.refused.append(changed)
            raise SessionTampered(
                f"{self.label}: the step's read-only session was switched under the guard "
                f"({changed}); what it sent that way was neither checked nor recorded, and "
                "the step is failed"
            )

    def _reported_kept(self, conn: Connection) -> None:
        """A step that writes: its session's settings as the session began; those the
        server does not report, where the step may have run code of a user's, as a read
        is checked (a function the site trusts, code behind an operator, cast or type)."""
        hidden = self.memory.hidden
        ran = self.runs_code or self.memory.trusted or (hidden is not None and hidden.anywhere)
        changed = written_session_changed(conn, bool(ran))
        if changed is not None:
            self.refused.append(changed)
            raise SessionTampered(
                f"{self.label}: the step changed its session ({changed}), which the steps "
                "after it would run in; the step is failed"
            )

    def _begin_read_only_savepoint(self, cursor: Any) -> None:
        """Inside a transaction (or beginning one) the session's default no longer
        applies, and a transaction, once read-only, cannot be made read-write again. A
        savepoint's SET LOCAL can, undone when the savepoint is rolled back to."""
        _on_second_cursor(cursor, f"SAVEPOINT {_SAVEPOINT}; SET LOCAL transaction_read_only = on")
        self._in_savepoint = True

    def _read_write_again(self, cursor: Any, dialect: str) -> None:
        """An approved write after this guard made the session read-only for a read."""
        conn = self.connection
        if self._made_read_only and conn is not None and conn.info.get(ACCESS_KEY):
            self._set_read_only(cursor, dialect, False)

    def _set_read_only(self, cursor: Any, dialect: str, read_only: bool) -> None:
        assert self.connection is not None
        on, off = SESSION_ACCESS[dialect]
        _on_second_cursor(cursor, on if read_only else off)
        if not read_only and dialect == "postgresql" and not cursor.connection.autocommit:
            # Without autocommit, that SET began the transaction the write will run in,
            # read-only by the default it replaced.
            _on_second_cursor(cursor, "SET transaction_read_only = off")
        # session_access finds the session as it is, and sets it for the next step.
        self.connection.info[ACCESS_KEY] = read_only
        self._made_read_only = read_only

    def _hidden(self, cursor: Any, dialect: str) -> HiddenWriters:
        """What runs code a statement does not name (guardhidden.py), once per run."""
        if self.memory.hidden is None:
            self.memory.hidden = hidden_writers(dialect, cursor, self.memory.trusted)
        return self.memory.hidden

    def _code_a_write_runs(self, sql: str, dialect: str, cursor: Any) -> str | None:
        """What a write runs that no statement shows (so the step must be high risk),
        said; None when nothing: a user's function it calls (`... WHERE id = f()`), or
        one a view it names runs (the view it writes through, one a subquery reads)."""
        memory = self.memory
        called = user_written_calls([sql], dialect, cursor, memory.trusted, memory.user_written)
        if called:
            return (
                f"it calls {called_said(called)}, a user-defined function that may write (one "
                "the site knows only reads can be listed in the target's trusted_functions)"
            )
        code = self._hidden(cursor, dialect).running_code
        named = code.named_in(sql, dialect, lambda: session_database(cursor))
        return None if named is None else f"it reads {named}: {code.relations[named]}"

    def _writing_calls(self, sql: str, dialect: str, cursor: Any) -> list[str]:
        calls = called_functions(sql, dialect)
        volatile = self.memory.volatile
        unknown = [c for c in calls if c not in volatile]
        if unknown:
            writing = writing_calls(unknown, dialect, cursor, self.memory.trusted)
            volatile.update({c: writing.get(c) for c in unknown})
        return [f"{shown(c)}(){note}" for c in calls if (note := volatile[c]) is not None]


_SAVEPOINT = "aishell_read_only"


def _on_second_cursor(cursor: Any, sql: str) -> None:
    """Sent on the statement's connection, not through the guard (nor its cursor, whose
    rows the tool may not have read yet)."""
    switch = cursor.connection.cursor()
    try:
        switch.execute(sql)
    finally:
        switch.close()


def _server_side(cursor: Any) -> bool:
    """A named cursor reads as the tool fetches: a savepoint rolled back to would close it."""
    import psycopg  # only a PostgreSQL target gets here

    return isinstance(cursor, psycopg.ServerCursor)


def _idle(cursor: Any, dialect: str) -> bool:
    """The statement is a transaction of its own, under the session's default access:
    the connection autocommits and has no transaction open. (Without autocommit, the
    read would begin the transaction its later writes run in.)"""
    if dialect != "postgresql":
        return False
    import psycopg  # only a PostgreSQL target gets here

    dbapi = cursor.connection
    return bool(
        dbapi.autocommit and dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    )


def shapes_for(
    templates: Iterable[str],
    rendered: Iterable[str],
    conn: Connection,
    known: Mapping[str, str],
    each_of: Mapping[str, Sequence[str]] | None = None,
) -> Shapes:
    """The statements a step may write: what it rendered, exactly, and its tool's declared
    templates with the step's own identifiers filled in. A step over many tables fills
    a template's {table} with each of them in turn (`each_of`: placeholder -> its quoted
    names), so that no template lets it write to a table it does not list."""
    sources: list[tuple[str, dict[str, str] | None]] = [(sql, None) for sql in rendered]
    lists = {k: v for k, v in (each_of or {}).items() if k not in known}
    for sql in templates:
        used = [k for k in lists if "{" + k + "}" in sql]
        if not used:
            sources.append((sql, dict(known)))
            continue
        name = used[0]  # a template names one listed kind of object
        sources += [(sql, {**known, name: each}) for each in lists[name]]
    return Shapes(sources, conn.dialect)


class Shapes:
    """A step's shapes in order, each compiled the first time a write is held against it:
    the write a step sends is most often the first, the statement it rendered, and a step
    per table would otherwise compile every shape of its tool for every table. Final SQL
    compiled so far is looked up by its words, so that a step over n tables holds its n
    writes against them in time linear in n, not quadratic."""

    def __init__(self, sources: list[tuple[str, dict[str, str] | None]], dialect: Dialect):
        self._sources, self._dialect = sources, dialect
        self._compiled: list[Shape] = []
        self._exact: set[str] = set()
        self._patterns: list[Shape] = []

    def allows(self, statement: str, words: str) -> bool:
        """Whether `statement` (its words joined by one space) has one of the shapes."""
        if words in self._exact or any(s.matches(statement, words) for s in self._patterns):
            return True
        while len(self._compiled) < len(self._sources):
            if self._compile_next().matches(statement, words):
                return True
        return False

    def _compile_next(self) -> Shape:
        sql, known = self._sources[len(self._compiled)]
        # A rendered statement is final SQL; a template has {name} and :name.
        shape = compile_shape(sql, self._dialect, known, literal=known is None)
        self._compiled.append(shape)
        if shape.exact is not None and shape.pattern is None:
            self._exact.add(shape.exact)
        else:
            self._patterns.append(shape)
        return shape


def session_database(cursor: Any) -> str | None:
    """The database a MariaDB session is in now (a USE moves it), on a second cursor."""
    lookup = cursor.connection.cursor()
    try:
        lookup.execute("SELECT DATABASE()")
        found = lookup.fetchone()
    finally:
        lookup.close()
    return str(found[0]) if found and found[0] is not None else None


@contextmanager
def guarded(conn: Connection, guard: Guard) -> Iterator[None]:
    """Every statement sent on `conn` meanwhile checked by `guard` (a refusal raises
    StatementRefused, and is raised again at the end if the code swallowed it)."""
    dialect, paramstyle = conn.dialect.name, conn.dialect.paramstyle
    guard.connection = conn

    def before(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        why = guard.check(statement, cursor, dialect, paramstyle)
        if why is not None:
            guard.refused.append(why)
            raise StatementRefused(f"{guard.label}: statement refused: {why}")

    def after(_c: Any, cursor: Any, *_: Any) -> None:
        guard.sent(cursor)

    event.listen(conn, "before_cursor_execute", before)
    event.listen(conn, "after_cursor_execute", after)
    try:
        yield
    finally:
        event.remove(conn, "before_cursor_execute", before)
        event.remove(conn, "after_cursor_execute", after)
    guard.raise_if_refused()
