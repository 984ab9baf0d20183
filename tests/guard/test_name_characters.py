"""The characters of an unquoted name, as the lexers that place literals read them.

The classes are spelt as the ASCII they leave out (cheap to compile); they must still
hold exactly ASCII letters, digits, _ and $, and every character past ASCII. The
sample covers every ASCII character, where the two spellings could differ, and the
edges of the ranges past it.
"""

from __future__ import annotations

from aishell.guard import lex
from aishell.handlers.backup.inert import tokens

PAST_ASCII = [0x80, 0x85, 0xA0, 0xFF, 0x100, 0x660, 0xD7FF, 0xD800, 0xDFFF, 0xFFFF, 0x10000]
SAMPLE = [chr(c) for c in [*range(0x80), *PAST_ASCII, 0x10FFFF]]


def in_a_name(c: str, first: bool = False) -> bool:
    if not c.isascii():
        return True
    return c.isalpha() or c == "_" or (not first and (c.isdigit() or c == "$"))


def misread(read: dict[str, bool], first: bool = False) -> list[str]:
    return [f"U+{ord(c):04X}" for c, found in read.items() if found is not in_a_name(c, first)]


def test_the_guards_lexer_reads_a_name_character_as_the_server_does() -> None:
    assert misread({c: bool(lex._IDENTIFIER_CHAR.fullmatch(c)) for c in SAMPLE}) == []
    # $tag$: the tag's first character is not a digit or $, and a $ ends it.
    tag_first = {c: lex._DOLLAR_TAG.fullmatch(f"${c}$") is not None for c in SAMPLE}
    assert misread(tag_first, first=True) == []
    tag_after = {c: lex._DOLLAR_TAG.fullmatch(f"$a{c}$") is not None for c in SAMPLE if c != "$"}
    assert misread(tag_after) == []


def test_the_toc_reader_keeps_a_name_whole() -> None:
    # The reader takes blanks and numbers before names: a Unicode space or digit is read
    # as one of those, whatever the name's classes say.
    sample = [c for c in SAMPLE if not c.isspace() and not c.isdigit()]
    whole = {c: [t.value for t in tokens(f"a{c}b")] == [f"a{c}b".lower()] for c in sample}
    assert misread(whole) == []
    starts = {c: [t.kind for t in tokens(f"{c}1")] == ["ident"] for c in sample}
    assert misread(starts, first=True) == []
