"""What in a PostgreSQL trigger's or routine's body runs SQL its text does not show.

bodywrites.py reads the tables a body writes from its text, the SQL its string literals
hold included. Two kinds of code run SQL that no reading of the text finds, and for
either, what the body writes is not known. That is said as it is for a body aishell may
not read, so the step's estimate, its preview and the question put to a person name it:

- EXECUTE of anything but one string literal (plpgsql's EXECUTE, FOR ... IN EXECUTE,
  RETURN QUERY EXECUTE, OPEN ... FOR EXECUTE; a SQL function's EXECUTE of a prepared
  statement): the statement is text made at run time, by format('DELETE FROM %I', ...),
  from a column's value (EXECUTE NEW.cmd) or by concatenation. So is the query text
  given to a server function that runs it (query_to_xml(q, ...), ts_stat(q),
  ts_rewrite(query, q)): only a SELECT, but one that may call a function that writes;
- a body in a language aishell does not read: PL/Python, PL/Perl, PL/Tcl and the like,
  whose SQL another language's code builds, and C, which is compiled (contrib's refint
  deletes the rows that reference a deleted one). The server's own functions (LANGUAGE
  internal: full-text and redundant-update triggers) write no table of the database's.
  An installed extension's function declared IMMUTABLE or STABLE (PostGIS's, pgcrypto's
  digest) is taken at its maker's word, as code the server's administrator installed;
  one declared VOLATILE (dblink_exec, refint's check_foreign_key) is said.

MySQL and MariaDB refuse dynamic SQL (PREPARE, EXECUTE IMMEDIATE) in a trigger, a stored
function and a procedure a trigger calls; SQLite has none.
"""

from __future__ import annotations

from aishell.dialects import family
from aishell.guard.bodytokens import clause_end, code_tokens, literal_text, readings

# Languages whose bodies are SQL and plpgsql that bodywrites.py reads.
_READ = frozenset({"sql", "plpgsql"})
# The server's built-in functions (LANGUAGE internal), none of which writes a table.
_WRITES_NOTHING = frozenset({"internal"})
# Where an EXECUTE's statement ends: plpgsql's INTO and USING, a FOR loop's LOOP.
_STATEMENT_ENDS = frozenset({";", "INTO", "USING", "LOOP"})
# Words after EXECUTE that make it no statement's: CREATE TRIGGER ... EXECUTE FUNCTION,
# GRANT EXECUTE ON FUNCTION.
_NOT_RUN = frozenset({"FUNCTION", "PROCEDURE", "ON"})
SHOWN = 60
# The server's functions that run the query text they are given: {name: (the text's
# place among the arguments, how many arguments the form that takes text has)}.
# ts_rewrite(tsquery, tsquery, tsquery) takes none.
_RUNS_ITS_TEXT = {
    "query_to_xml": (0, 4),
    "query_to_xmlschema": (0, 4),
    "query_to_xml_and_xmlschema": (0, 4),
    "ts_stat": (0, None),
    "ts_rewrite": (1, 2),
}


def unseen_code(
    body: str, language: str | None, dialect: str, extension_reads: bool = False
) -> str | None:
    """Why the text of the body does not show what it writes (the module's docstring),
    as a phrase after the body's name; None where it does. `extension_reads`: the
    function is an installed extension's, declared IMMUTABLE or STABLE."""
    if family(dialect) != "postgresql":
        return None
    if language is not None and language not in _READ:
        if language in _WRITES_NOTHING or extension_reads:
            return None
        return f"is written in LANGUAGE {language}, whose code aishell does not read"
    built = built_statement(body, dialect)
    if built is None:
        return None
    return f"runs SQL it makes at run time ({built})"


def built_statement(body: str, dialect: str) -> str | None:
    """The first statement the body runs that is not one string literal, as written
    (EXECUTE q, query_to_xml(q, ...), shortened to SHOWN characters), in its code or in
    the code of a literal it runs (EXECUTEd, or a DO block's), in any way its strings
    may end (bodytokens.readings); None if none."""
    for reading in readings(dialect):
        found = _built_in(code_tokens(body, dialect, reading), dialect)
        if found is not None:
            return found
    return None


def _built_in(tokens: list[str], dialect: str) -> str | None:
    """built_statement of one reading of a body's tokens."""
    words = [token.upper() for token in tokens]
    for i, word in enumerate(words):
        if word == "DO":  # DO [LANGUAGE name] 'code' [LANGUAGE name]
            literal = next(filter(None, map(literal_text, tokens[i + 1 : i + 4])), None)
        elif word == "EXECUTE" and words[i + 1 : i + 2] and words[i + 1] not in _NOT_RUN:
            statement = tokens[i + 1 : clause_end(words, i, _STATEMENT_ENDS)]
            literal = _one_literal(statement)
            if literal is None:
                return _shown(tokens[i : i + 1 + len(statement)])
        elif (text := _query_text(tokens, i)) is not None:
            literal = _one_literal(text[0])
            if literal is None:
                return _shown(tokens[i : text[1]])
        else:
            continue
        found = built_statement(literal, dialect) if literal else None
        if found is not None:
            return found
    return None


def _query_text(tokens: list[str], i: int) -> tuple[list[str], int] | None:
    """Where tokens[i] calls a function of _RUNS_ITS_TEXT: the tokens of its query-text
    argument (all its arguments where they are not the form known: fail closed), and
    where the call ends; None where it calls none, or the form that runs no text."""
    name = tokens[i][1:-1] if tokens[i].startswith('"') else tokens[i].lower()
    if name not in _RUNS_ITS_TEXT or tokens[i + 1 : i + 2] != ["("]:
        return None
    place, count = _RUNS_ITS_TEXT[name]
    arguments: list[list[str]] = [[]]
    depth = 0
    for k in range(i + 2, len(tokens)):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(tokens[k], 0)
        if depth < 0:
            break
        if depth == 0 and tokens[k] == ",":
            arguments.append([])
        else:
            arguments[-1].append(tokens[k])
    else:
        k = len(tokens)
    if name == "ts_rewrite" and len(arguments) == 3:
        return None  # ts_rewrite(tsquery, tsquery, tsquery): no query text
    if place >= len(arguments) or count not in (None, len(arguments)):
        return tokens[i + 2 : k], k + 1
    return arguments[place], k + 1


def _shown(tokens: list[str]) -> str:
    """The tokens as one line of at most SHOWN characters, spaced as code is written:
    none around `.` and `::`, inside brackets, before a comma, within an operator."""
    shown = ""
    for token in tokens:
        operator = shown[-1:] in _OPERATOR and token in _OPERATOR
        tight = not shown or shown[-1] in "([.:" or token in ")].,:" or operator
        if token in ("(", "[") and (shown[-1:].isalnum() or shown[-1:] in '"])'):
            tight = True
        shown += ("" if tight else " ") + token
    return shown if len(shown) <= SHOWN else shown[: SHOWN - 3] + "..."


_OPERATOR = frozenset("|&<>=!~+-*/%^")


def _one_literal(statement: list[str]) -> str | None:
    """The text of the tokens where they are one string literal ('text', E'text',
    $$text$$, maybe within parentheses); None where they are anything else."""
    while len(statement) > 2 and statement[0] == "(" and statement[-1] == ")":
        statement = statement[1:-1]
    if len(statement) == 2 and statement[0].upper() == "E":
        statement = statement[1:]
    return literal_text(statement[0]) if len(statement) == 1 else None
