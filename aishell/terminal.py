"""Text for a person's terminal: names, params and messages made safe to show.

A table may be named `t\\x1b[2J` or hold a bidi override; shown raw, such a name clears
the screen, rewrites the line an approval prompt stands on, or reverses what a person
reads. Everything shown to a person goes through printable() first.

And a stream may lack a character aishell writes (an ISO-8859-1 or ASCII locale): the
console entry point makes stdout and stderr write it anyway (writes_any_text), in
ASCII or escaped, so that no command fails at a line of its output.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re

# Unicode bidi controls: embeddings, overrides, isolates and marks (they reorder text).
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# C0 controls, DEL, C1 controls, bidi controls; the line separators U+2028/U+2029 too.
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}\u2028\u2029]")
_UNSAFE_KEEPING_NEWLINES = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI}\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, newlines: bool = False) -> str:
    """The text with every control character shown as a visible escape (`\\x1b`,
    `\\u202e`); with newlines=True line breaks stay (SQL, lists of reasons)."""
    pattern = _UNSAFE_KEEPING_NEWLINES if newlines else _UNSAFE
    return pattern.sub(_escape, str(text))


# What each mark aishell prints becomes on a stream whose encoding lacks it (an
# ISO-8859-1 or ASCII locale, PYTHONIOENCODING=latin-1, a cron job's output file): ASCII
# of the same meaning. Any other character it lacks (a table's name in Cyrillic, a file
# name's undecodable byte) is shown as its escape (`\u0436`, `\udce9`): two names never
# look alike, and a write never fails.
ASCII_MARKS = {
    "\u2713": "+",  # ✓ succeeded
    "\u2717": "x",  # ✗ failed
    "\u00b7": ".",  # · previewed
    "\u2026": "...",  # … deferred, a shortened text
    "\u2014": "-",
    "\u2013": "-",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2022": "*",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u00d7": "x",
}
FALLBACK = "aishell.fallback"


def _fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    lacking = error.object[error.start : error.end]
    return "".join(ASCII_MARKS.get(char) or _escaped(char) for char in lacking), error.end


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


codecs.register_error(FALLBACK, _fallback)


def writes_any_text(stream: object) -> None:
    """The stream (stdout, stderr) made to write every text, whatever its encoding: what
    the encoding lacks is written as ASCII_MARKS gives it, else escaped. Only the errors
    change: what the encoding has is written as before (UTF-8 stays UTF-8)."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is not None:
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            reconfigure(errors=FALLBACK)
