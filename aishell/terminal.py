"""Text for a person's terminal: names, params and messages made safe to show.

A table may be named `t\\x1b[2J` or hold a bidi override; shown raw, such a name clears
the screen, rewrites the line an approval prompt stands on, or reverses what a person
reads. Everything shown to a person goes through printable() first.
"""

from __future__ import annotations

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
