"""The tables the code a write sets off writes in its turn.

A write runs the triggers of its event on its table (and on PostgreSQL the rules), and
they the routines they call; what their bodies write is a write of the step's too, and
sets off that table's triggers, keys and code in turn (writereach.py follows it). No
catalog records what a body writes, so it is read from the body's text:

- a table counts as written by a body where its name stands where a statement names
  the table it writes: after INSERT [INTO], REPLACE [INTO], MERGE INTO, TRUNCATE
  [TABLE], after UPDATE (and after each JOIN or comma before its SET: MySQL's
  multi-table UPDATE, which writes only the tables whose columns its SET assigns, or
  every one where an assignment names no table), after DELETE FROM (each of its comma
  list before USING; in
  MySQL's `DELETE t1, t2 FROM ...` every table the statement names up to its WHERE);
  an INSERT with ON DUPLICATE KEY UPDATE or DO UPDATE also updates, a REPLACE (and
  SQLite's INSERT OR REPLACE) also deletes, a MERGE does all three;
- a string literal of the body is read as a body too (dynamic SQL: EXECUTE 'DELETE
  FROM audit ...'), but for a message the body raises (PostgreSQL's RAISE format and
  USING MESSAGE, DETAIL, HINT; MySQL's SIGNAL ... SET MESSAGE_TEXT; SQLite's RAISE(ABORT,
  '...')), and for a value of an INSERT's VALUES list (`VALUES (1, 'DELETE FROM
  audit')`, stored as data), which that statement does not run; PostgreSQL's
  dollar-quoted literals ($$...$$) are literals too (bodytokens.py). A statement a body
  makes at run time (EXECUTE format(...)), and a body in a language other than SQL and
  PL/pgSQL, are not read: bodyunknowns.py says what it writes is not known;
- comments are not read (MySQL's `#` ones too), but MySQL's executable comments
  (/*! ... */, /*M! ... */) are code; where a comment or string ends is the server's
  rule (bodytokens.py);
- the routines a body runs are those whose names are a word of it (PostgreSQL) or
  appear in it (MariaDB: a routine of the body's own database, or of one whose name
  the body holds too, as a call names it), as bodysources.py and handlers/purge/
  reach.py read them, followed in turn;
- a verb after ON, OF, OR, BEFORE, AFTER or KEY is not a statement's (ON DELETE
  CASCADE, a trigger's own header); after DO it is (a PostgreSQL rule's action, the
  first statement of a MariaDB loop) but for ON CONFLICT's DO UPDATE SET; after FOR it
  is (a PL/pgSQL cursor's INSERT, UPDATE or DELETE ... RETURNING, which opening the
  cursor runs) but for SELECT ... FOR UPDATE and a policy's FOR DELETE USING;
- PostgreSQL's `ONLY (t)` names t as `ONLY t` does.

A name is taken as the body writes it (unquoted PostgreSQL names folded), and where it
names no table nothing follows from it. A body aishell may not read (a MariaDB routine
whose definition the role cannot see) is said to write tables not known.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import NamedTuple

from sqlalchemy.engine import Connection

from aishell.dialects import family
from aishell.guard.bodysources import bodies
from aishell.guard.bodytokens import clause_end, code_tokens, literal_text, readings
from aishell.guard.bodyunknowns import unseen_code
from aishell.guard.writtentables import Write


class BodyWrites(NamedTuple):
    """What the code a write sets off writes: (what writes it, the write); a sentence
    for each body that could not be read; and one for each whose text does not show
    what it runs (bodyunknowns.py), with its function's (schema, name), which a
    target's trusted_functions may vouch for."""

    writes: list[tuple[str, Write]]
    unread: list[str]
    unseen: list[tuple[str, tuple[str, str] | None]]


def body_writes(conn: Connection, write: Write) -> BodyWrites:
    """The tables the triggers (and PostgreSQL rules) of the write's event on its table
    write, and those the routines they call write, as their bodies say (the module's
    docstring); one catalog query."""
    dialect = family(conn.dialect.name)
    found: list[tuple[str, Write]] = []
    unread: list[str] = []
    unseen: list[tuple[str, tuple[str, str] | None]] = []
    for body in bodies(conn, write, dialect):
        if body.text is None:
            unread.append(
                f"{body.who} has a body aishell may not read: what it writes is not known"
            )
            continue
        said = unseen_code(body.text, body.language, dialect, body.extension_reads)
        if said is not None:
            code = f"{body.who}: its function {body.function}" if body.function else body.who
            unseen.append((f"{code} {said}: what it writes is not known", body.schema_and_name))
        found.extend(
            (body.who, then)
            for then in dict.fromkeys(written_by_body(body.text, dialect, body.sql_mode))
        )
    return BodyWrites(list(dict.fromkeys(found)), unread, list(dict.fromkeys(unseen)))


# A message's place in PostgreSQL's RAISE (its level, its USING items) and MySQL's
# SIGNAL ... SET items.
_LEVELS = frozenset({"DEBUG", "LOG", "INFO", "NOTICE", "WARNING", "EXCEPTION"})
_MESSAGE_ITEMS = frozenset({"MESSAGE", "DETAIL", "HINT", "MESSAGE_TEXT"})
# Words before a verb that make it no statement's. DO and FOR are read apart: a
# PostgreSQL rule's action follows DO (`ON DELETE TO t DO INSERT INTO log ...`, as
# pg_get_ruledef writes every DO ALSO rule), as MariaDB's loops' first statements do,
# and so does ON CONFLICT's UPDATE (_on_conflict); a PL/pgSQL cursor's query follows
# FOR (`OPEN c FOR DELETE FROM t RETURNING *`), and so do a row lock and a policy's
# command (_for_clause).
_NOT_A_STATEMENT = frozenset({"ON", "OF", "OR", "BEFORE", "AFTER", "KEY"})
# What may follow a SELECT's FOR UPDATE: its options, the end of the query, and what
# follows a query in a PL/pgSQL or MariaDB body.
_AFTER_ROW_LOCK = frozenset(
    {"OF", "NOWAIT", "SKIP", "WAIT", "FOR", "LIMIT", "OFFSET", "FETCH", "INTO", "LOCK"}
    | {"UNION", "EXCEPT", "INTERSECT", "LOOP", "THEN", "ELSE", "END", ";", ")", ","}
)
# Words between a verb and its table that say how, not what.
_MODIFIERS = frozenset(
    {"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "QUICK", "ONLY", "INTO", "TABLE"}
)
_LATER_NOT_NAMES = frozenset(
    {"SELECT", "VALUES", "DEFAULT", "SET", "LATERAL", "AS", "ON", "WHERE", "USING", "FROM"}
    | {"JOIN", "INNER", "LEFT", "RIGHT", "OUTER", "CROSS", "NATURAL", "STRAIGHT_JOIN"}
)
# Words after an INSERT's table that are no alias of it.
_INSERT_CLAUSES = frozenset({"VALUES", "VALUE", "OVERRIDING", "SELECT", "DEFAULT", "SET"})
# Where a DELETE's or UPDATE's list of tables ends.
_DELETE_ENDS = frozenset({"WHERE", "RETURNING", "ORDER", "LIMIT", ";"})
_UPDATE_ENDS = frozenset({"SET", ";"})
_SET_ENDS = frozenset({"WHERE", "ORDER", "LIMIT", "FROM", "RETURNING", ";"})
# Words after a joined table's name that are no alias of it.
_NOT_ALIASES = _LATER_NOT_NAMES | {"SET", "ON", "USING", "PARTITION", "FORCE", "IGNORE"}
# Words after which a table is named, in a multi-table DELETE or UPDATE.
_TABLE_FOLLOWS = frozenset({"FROM", "JOIN", "STRAIGHT_JOIN", ",", "USING", "UPDATE", "DELETE"})


def written_by_body(body: str, dialect: str, sql_mode: str = "") -> Iterator[Write]:
    """Each table the body writes, by the rule of the module's docstring (its string
    literals read as bodies too, but for a message a body only raises); `sql_mode`: a
    MySQL body's. A body is read each way its strings may end (bodytokens.readings):
    MariaDB's information_schema shows a MySQL body as the server rewrote it (the string
    'a\\\\' as 'a\\'), and a PostgreSQL function's own SET may turn
    standard_conforming_strings off; a table either reading finds written counts."""
    for reading in readings(dialect, sql_mode):
        yield from _written(code_tokens(body, dialect, reading), dialect, sql_mode)


def _written(tokens: list[str], dialect: str, sql_mode: str) -> Iterator[Write]:
    """The writes of one reading of a body's tokens."""
    tokens = _only_unwrapped(tokens)
    words = [t.upper() if _plain(t) else t for t in tokens]
    verbs = [i for i, word in enumerate(words) if _a_verb(words, i)]
    stored = {n for i in verbs for n in _stored_values(words, i)}
    for n, token in enumerate(tokens):
        literal = literal_text(token)
        if literal and n not in stored and not _a_message(tokens, n):
            yield from written_by_body(literal, dialect, sql_mode)
    for i in verbs:
        word = words[i]
        cascade = word == "TRUNCATE" and "CASCADE" in words[i : clause_end(words, i, {";"})]
        for event, at in _targets(words, i):
            named = _name(tokens, at, dialect)
            if named is not None:
                yield Write(event, *named, cascade=cascade)


def _only_unwrapped(tokens: list[str]) -> list[str]:
    """The tokens with PostgreSQL's `ONLY (t)` (or `ONLY (s.t)`) written `ONLY t`, as
    every other statement names its table."""
    out: list[str] = []
    k = 0
    while k < len(tokens):
        if out and out[-1].upper() == "ONLY" and tokens[k] == "(":
            end = next((n for n in range(k + 1, len(tokens)) if tokens[n] in ("(", ")")), None)
            if end is not None and tokens[end] == ")":
                out.extend(tokens[k + 1 : end])
                k = end + 1
                continue
        out.append(tokens[k])
        k += 1
    return out


def _a_verb(words: list[str], i: int) -> bool:
    """Whether words[i] is the verb of a statement that writes (not `ON DELETE`)."""
    if words[i] not in ("INSERT", "REPLACE", "MERGE", "TRUNCATE", "UPDATE", "DELETE"):
        return False
    if i and words[i - 1] == "DO":
        return not _on_conflict(words, i)
    if i and words[i - 1] == "FOR":
        return not _for_clause(words, i)
    return not i or words[i - 1] not in _NOT_A_STATEMENT


def _on_conflict(words: list[str], i: int) -> bool:
    """Whether words[i], after DO, is an INSERT's ON CONFLICT DO UPDATE SET, which
    updates the rows of the INSERT's own table (_targets): CONFLICT said since the last
    statement's end, and SET next. Anything else after DO (a rule's action) is a
    statement of its own."""
    if words[i] != "UPDATE" or words[i + 1 : i + 2] != ["SET"]:
        return False
    start = next((k for k in range(i - 1, -1, -1) if words[k] == ";"), -1)
    return "CONFLICT" in words[start + 1 : i]


def _for_clause(words: list[str], i: int) -> bool:
    """Whether words[i], after FOR, is a clause's and no statement: a SELECT's FOR UPDATE
    (followed by what may follow a row lock, or nothing), a policy's FOR INSERT (or
    UPDATE, DELETE) followed by USING, WITH CHECK or TO. Anything else after FOR is a
    cursor's query (`OPEN c FOR UPDATE t SET ... RETURNING *`), a write."""
    after = words[i + 1] if i + 1 < len(words) else None
    if after in ("USING", "WITH", "TO"):
        return True
    return words[i] == "UPDATE" and (after is None or after in _AFTER_ROW_LOCK)


def _stored_values(words: list[str], i: int) -> Iterator[int]:
    """The literals that the statement whose verb is words[i] stores as data: each whole
    value of a row of a plain INSERT's or REPLACE's VALUES list (`INSERT INTO log VALUES
    (1, 'DELETE FROM audit')`), which the statement does not run. None for any other
    statement, nor where something may run a value: a call around it (`VALUES
    (run_it('...'))`), RETURNING, ON CONFLICT or ON DUPLICATE KEY after the rows, or
    anything but the table (a schema, an alias, its partitions), a column list, INTO and
    such between the verb and VALUES (`INSERT ... SELECT ... UNION VALUES`). What the
    statement sets off on the table it stores into is followed as any write's is."""
    if words[i] not in ("INSERT", "REPLACE"):
        return
    k = _past_table(words, _past_modifiers(words, i + 1))
    if k is None or k >= len(words) or words[k] not in ("VALUES", "VALUE"):
        return
    values: list[int] = []
    k += 1
    while True:  # rows, `( ... )` each, a comma between two
        closing = clause_end(words, k, set()) if words[k : k + 1] == ["("] else len(words)
        if closing >= len(words) or ";" in words[k:closing]:  # no row of a plain INSERT
            return
        values.extend(_whole_values(words, k, closing))
        k = closing + 1
        if words[k : k + 1] != [","]:
            break
        k += 1
    if k >= len(words) or words[k] == ";":  # nothing but rows up to the statement's end
        yield from values


def _past_table(words: list[str], j: int) -> int | None:
    """The index after an INSERT's table (a name, maybe qualified), its PARTITION list,
    its alias, its column list and OVERRIDING ... VALUE; None where words[j] names no
    table."""
    if j >= len(words) or not _named_word(words[j]) or words[j] in _LATER_NOT_NAMES:
        return None
    while j + 2 < len(words) and words[j + 1] == "." and _named_word(words[j + 2]):
        j += 2
    j += 1
    if j < len(words) and words[j] == "PARTITION" and words[j + 1 : j + 2] == ["("]:
        j = clause_end(words, j + 1, set()) + 1
    if j < len(words) and words[j] == "AS":
        j += 1
    if j < len(words) and _named_word(words[j]) and words[j] not in _INSERT_CLAUSES:
        j += 1  # the alias
    if j < len(words) and words[j] == "(":
        j = clause_end(words, j, set()) + 1
    if words[j : j + 1] == ["OVERRIDING"] and words[j + 2 : j + 3] == ["VALUE"]:
        j += 3
    return j


def _whole_values(words: list[str], opened: int, closing: int) -> Iterator[int]:
    """The literals that are a whole value of the row between words[opened] ("(") and
    words[closing] (")"): `'x'` in `(1, 'x')`, not in `(f('x'))` or `('x' || y)`."""
    depth = 0
    for n in range(opened + 1, closing):
        depth += {"(": 1, ")": -1}.get(words[n], 0)
        whole = words[n - 1] in ("(", ",") and words[n + 1] in (",", ")")
        if depth == 0 and whole and literal_text(words[n]) is not None:
            yield n


def _a_message(tokens: list[str], n: int) -> bool:
    """Whether the literal tokens[n] is a message a body raises, which no server runs as
    SQL: PostgreSQL's RAISE format (and its USING MESSAGE, DETAIL, HINT), MySQL's SIGNAL
    ... SET MESSAGE_TEXT, SQLite's RAISE(ABORT, '...'). A literal anywhere else (an
    argument of a call, a value assigned) may be run as dynamic SQL, and is read."""
    before = [t.upper() for t in tokens[max(0, n - 4) : n]]
    if before[-1:] == ["RAISE"] or (before[-2:-1] == ["RAISE"] and before[-1] in _LEVELS):
        return True
    if before[-4:] == ["RAISE", "(", *before[-2:]] and before[-1] == ",":
        return before[-2] in ("ABORT", "FAIL", "ROLLBACK")
    if len(before) < 2 or before[-1] not in ("=", ":=") or before[-2] not in _MESSAGE_ITEMS:
        return False
    depth = 0
    for token in reversed(tokens[:n]):
        word = token.upper()
        depth += {")": 1, "(": -1}.get(word, 0)
        if word == ";" or depth < 0:
            return False
        if depth == 0 and word in ("RAISE", "SIGNAL", "RESIGNAL"):
            return True
    return False


def _targets(words: list[str], i: int) -> Iterator[tuple[str, int]]:
    """(event, index of a table's name) of the statement whose verb is words[i]."""
    verb, j = words[i], _past_modifiers(words, i + 1)
    statement = words[i : clause_end(words, i, {";"})]
    if verb in ("INSERT", "REPLACE"):
        replaces = verb == "REPLACE" or "REPLACE" in words[i + 1 : j]
        upserts = "DUPLICATE" in statement or any(
            a == "DO" and b == "UPDATE" for a, b in pairwise(statement)
        )
        yield "INSERT", j
        if replaces:
            yield "DELETE", j
        if upserts:
            yield "UPDATE", j
    elif verb == "MERGE":
        for event in ("INSERT", "UPDATE", "DELETE"):
            yield event, j
    elif verb == "TRUNCATE":
        yield from (("TRUNCATE", k) for k in _listed(words, j, {";"}))
    elif verb == "UPDATE":
        end = clause_end(words, i, _UPDATE_ENDS)
        joined = list(_following(words, j + 1, end, {"JOIN", "STRAIGHT_JOIN", ","}))
        if not joined:
            yield "UPDATE", j
            return
        # MySQL's multi-table UPDATE writes only the tables its SET assigns.
        assigned = _assigned_tables(words, end)
        for k in (j, *joined):
            if assigned is None or _called(words, k) & assigned:
                yield "UPDATE", k
    elif j < len(words) and words[j] == "FROM":
        first = _past_modifiers(words, j + 1)
        ends = _DELETE_ENDS | {"USING", "JOIN"}
        yield from (("DELETE", k) for k in _listed(words, first, ends))
    else:  # MySQL's DELETE t1, t2 FROM t1 JOIN t2 ...: each table it names
        end = clause_end(words, i, _DELETE_ENDS)
        yield from (("DELETE", k) for k in _following(words, i, end, _TABLE_FOLLOWS))


def _assigned_tables(words: list[str], at: int) -> set[str] | None:
    """The tables (names or aliases, upper-cased) whose columns the SET clause at
    words[at] assigns in a multi-table UPDATE: only those are written (MySQL). None
    where an assignment names no table, or its target cannot be read: any is."""
    if at >= len(words) or words[at] != "SET":
        return None
    tables: set[str] = set()
    starts = [at + 1, *_following(words, at + 1, clause_end(words, at, _SET_ENDS), {","})]
    for k in starts:
        # table.column = or schema.table.column =
        target = next((words[k:e] for e in (k + 3, k + 5) if words[e : e + 1] == ["="]), [])
        if not target or any(w != "." for w in target[1::2]) or not _named_word(target[-3]):
            return None
        tables.add(_unquoted(target[-3]))
    return tables


def _called(words: list[str], k: int) -> set[str]:
    """The names a joined table at words[k] goes by (upper-cased): its own (the last
    part of a qualified name) and the alias after it, if any."""
    while k + 2 < len(words) and words[k + 1] == ".":
        k += 2
    names = {_unquoted(words[k])}
    alias = k + 1
    if alias < len(words) and words[alias] == "AS":
        alias += 1
    if alias < len(words) and words[alias] not in _NOT_ALIASES and _named_word(words[alias]):
        names.add(_unquoted(words[alias]))
    return names


def _named_word(word: str) -> bool:
    return _plain(word) or word[:1] in ('"', "`", "[")


def _unquoted(word: str) -> str:
    quote = word[:1]
    if quote in ('"', "`") and len(word) > 1:
        word = word[1:-1].replace(quote * 2, quote)
    elif quote == "[" and len(word) > 1:  # SQLite's [name]
        word = word[1:-1]
    return word.upper()


def _past_modifiers(words: list[str], j: int) -> int:
    while j < len(words) and (words[j] in _MODIFIERS or words[j] == "OR"):
        j += 2 if words[j] == "OR" else 1  # SQLite's OR REPLACE, OR IGNORE
    return j


def _listed(words: list[str], j: int, ends: set[str] | frozenset[str]) -> Iterator[int]:
    """The names of a comma list that starts at j (each maybe aliased)."""
    yield j
    yield from _following(words, j + 1, clause_end(words, j - 1, ends), {","})


def _following(
    words: list[str], start: int, end: int, after: set[str] | frozenset[str]
) -> Iterator[int]:
    """Each name between start and end that follows one of `after` (past ONLY)."""
    depth = 0
    for k in range(start, end):
        depth += {"(": 1, ")": -1}.get(words[k], 0)
        if depth == 0 and words[k] in after:
            yield _past_modifiers(words, k + 1)


def _plain(token: str) -> bool:
    return bool(token) and (token[0].isalpha() or token[0] == "_")


def _name(tokens: list[str], at: int, dialect: str) -> tuple[str | None, str] | None:
    """(schema, table) of the name at tokens[at] (maybe qualified); None for no name."""
    parts: list[str] = []
    k = at
    while k < len(tokens) and len(parts) < 3:
        part = _part(tokens[k], dialect)
        if part is None or (not parts and tokens[k].upper() in _LATER_NOT_NAMES):
            break
        parts.append(part)
        if k + 2 < len(tokens) and tokens[k + 1] == ".":
            k += 2
            continue
        break
    if not parts:
        return None
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


def _part(token: str, dialect: str) -> str | None:
    quote = token[:1]
    if quote in ('"', "`") and len(token) > 2 and token.endswith(quote):
        return token[1:-1].replace(quote * 2, quote)
    if quote == "[" and len(token) > 2 and token.endswith("]") and dialect == "sqlite":
        return token[1:-1]
    if not _plain(token):
        return None
    if dialect == "postgresql":
        return token.translate(_ASCII_LOWER)
    return token


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
