"""Step conditions: a small language over earlier steps' outputs, never Python.

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand]
    operand    := reference | number | string | true | false | null
                | "[" [operand ("," operand)* [","]] "]" | "len" "(" condition ")"
                | "(" condition ")"

A reference is `${step_N.output.path}` or `${steps.<id>.output.path}`; strings are
quoted with ' or " (a backslash escapes \\, ' and "). Types are strict: == and != take
two values of one type (or null on either side), < <= > >= two numbers or two strings,
`in` a list, a string (substring) or an object (its keys) on its right, len() a
string, a list or an object; anything else is a ConditionError, at plan time where
the tools' `returns` say the types, else when the step runs. `and`, `or` and `not`
read each side as non-empty (null, false, 0, "", [] and {} are empty), so a condition
that is one bare reference means what it always has: run when that value is non-empty.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aishell.errors import PlanError
from aishell.plan.references import Reference, find_references

# Bounds that keep parsing cheap and recursion far from Python's limit, whatever the
# text: a plan file or a model's draft is untrusted.
MAX_LENGTH = 1000
MAX_DEPTH = 32

WORDS = ("and", "or", "not", "in", "len", "true", "false", "null")
_TOKEN = re.compile(
    r"""(?P<space>\s+)
    |(?P<ref>\$\{[^{}]*\})
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)""",
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"'}
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_COMPARISONS = ("==", "!=", *_ORDERING, "in", "not in")


class ConditionError(PlanError):
    """A condition that does not parse, or whose values are of types it cannot compare."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int


@dataclass(frozen=True)
class Ref:
    ref: Reference


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class ListOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Length:
    arg: Node


@dataclass(frozen=True)
class Not:
    arg: Node


@dataclass(frozen=True)
class Logic:
    op: str  # "and" or "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


Node = Ref | Literal | ListOf | Length | Not | Logic | Compare
# What a reference may hold, as the kinds of kind(): None where nothing says.
KindsOf = Callable[[Reference], frozenset[str] | None]


@dataclass(frozen=True)
class Condition:
    """A parsed condition: its text, its tree and the references it reads."""

    text: str
    tree: Node
    references: tuple[Reference, ...]

    @property
    def bare(self) -> bool:
        """One reference alone: the step runs when its value is non-empty."""
        return isinstance(self.tree, Ref)

    def holds(self, values: Mapping[str, Any], where: str) -> bool:
        """Whether the step runs, given each reference's value by its text."""
        try:
            return _filled(_evaluate(self.tree, values))
        except _Mismatch as exc:
            raise ConditionError(f"{where}: condition {self.text!r}: {exc}") from None

    def type_problems(self, kinds_of: KindsOf) -> list[str]:
        """What is sure to be a type error, given what each reference may hold."""
        try:
            _kinds(self.tree, kinds_of)
        except _Mismatch as exc:
            return [f"condition {self.text!r}: {exc}"]
        return []


class _Mismatch(Exception):
    """Values of types an operator does not take; said with the condition around it."""


def parse_condition(text: str) -> Condition:
    """The condition's tree; a ConditionError (one line, naming the place) if it has none."""
    if not isinstance(text, str):
        raise ConditionError(f"a condition is text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"condition is {len(text)} characters long; at most {MAX_LENGTH}")
    tokens = _tokens(text)
    parser = _Parser(text, tokens)
    tree = parser.condition()
    parser.expect_end()
    return Condition(text=text, tree=tree, references=tuple(parser.references))


def kind(value: Any) -> str:
    """A value's type in the language: null, boolean, number, string, list or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list | tuple) else "object"


def _tokens(text: str) -> list[_Token]:
    tokens = []
    at = 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise ConditionError(f"condition {text!r}: unexpected {text[at]!r} at column {at + 1}")
        assert match.lastgroup is not None
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup, match.group(), at + 1))
        at = match.end()
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over the tokens, one method per rule of the grammar."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self.text, self.tokens, self.at, self.depth = text, tokens, 0, 0
        self.references: list[Reference] = []

    def fail(self, why: str, token: _Token | None = None) -> ConditionError:
        token = token or self.tokens[self.at]
        found = f"{token.text!r}" if token.kind != "end" else "the end"
        return ConditionError(
            f"condition {self.text!r}: {why} at column {token.column}, found {found}"
        )

    def peek(self, *texts: str) -> bool:
        token = self.tokens[self.at]
        return token.kind in ("word", "op") and token.text in texts

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def expect(self, text: str) -> None:
        if not self.peek(text):
            raise self.fail(f"expected {text!r}")
        self.at += 1

    def expect_end(self) -> None:
        if self.tokens[self.at].kind != "end":
            raise self.fail("expected and, or, or the end")

    def condition(self) -> Node:
        return self.either()

    def nested(self, rule: Callable[[], Node]) -> Node:
        """A rule inside parentheses, brackets or after `not`, at most MAX_DEPTH deep."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} deep")
        node = rule()
        self.depth -= 1
        return node

    def either(self) -> Node:
        node = self.both()
        while self.peek("or"):
            self.at += 1
            node = Logic("or", node, self.both())
        return node

    def both(self) -> Node:
        node = self.negation()
        while self.peek("and"):
            self.at += 1
            node = Logic("and", node, self.negation())
        return node

    def negation(self) -> Node:
        if self.peek("not"):
            self.at += 1
            return Not(self.nested(self.negation))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        op = self.comparison_operator()
        if op is None:
            return left
        node = Compare(op, left, self.operand())
        if self.comparison_operator(look=True) is not None:
            raise self.fail("comparisons do not chain; join them with 'and'")
        return node

    def comparison_operator(self, look: bool = False) -> str | None:
        token, after = self.tokens[self.at], self.tokens[min(self.at + 1, len(self.tokens) - 1)]
        if self.peek("not") and after.kind == "word" and after.text == "in":
            op, width = "not in", 2
        elif self.peek(*_COMPARISONS):
            op, width = token.text, 1
        else:
            return None
        if not look:
            self.at += width
        return op

    def operand(self) -> Node:
        token = self.take()
        if token.kind == "ref":
            return self.reference(token)
        if token.kind == "number":
            return Literal(_number(token.text, self, token))
        if token.kind == "string":
            return Literal(_unquote(token.text, self, token))
        if token.kind == "word" and token.text in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[token.text])
        if token.kind == "word" and token.text == "len":
            self.expect("(")
            node: Node = Length(self.nested(self.condition))
            self.expect(")")
            return node
        if token.kind == "op" and token.text in ("(", "["):
            node = self.nested(self.condition if token.text == "(" else self.listing)
            self.expect(")" if token.text == "(" else "]")
            return node
        self.at -= 1
        if token.kind == "word" and token.text not in WORDS:
            raise self.fail(f"unknown word (words are: {', '.join(WORDS)})")
        raise self.fail("expected a value (a ${...} reference, number, string, list)")

    def listing(self) -> Node:
        items: list[Node] = []
        while not self.peek("]"):
            items.append(self.operand())
            if not self.peek(","):
                break
            self.at += 1
        return ListOf(tuple(items))

    def reference(self, token: _Token) -> Node:
        found = find_references(token.text)
        if len(found) != 1 or found[0].text != token.text:
            raise self.fail(
                "not a reference (write ${step_N.output.key} or ${steps.<id>.output.key})",
                token,
            )
        self.references.append(found[0])
        return Ref(found[0])


def _number(text: str, parser: _Parser, token: _Token) -> int | float:
    value: int | float = float(text) if "." in text else int(text)
    if not math.isfinite(value):
        raise parser.fail("a number too large", token)
    return value


def _unquote(text: str, parser: _Parser, token: _Token) -> str:
    chars = []
    body = iter(text[1:-1])
    for char in body:
        if char == "\\":
            escaped = next(body)
            if escaped not in _ESCAPES:
                raise parser.fail(f"unknown escape \\{escaped} in a string", token)
            char = _ESCAPES[escaped]
        chars.append(char)
    return "".join(chars)


def _filled(value: Any) -> bool:
    """Non-empty: what a bare reference has always meant."""
    return bool(value)


def _evaluate(node: Node, values: Mapping[str, Any]) -> Any:
    if isinstance(node, Ref):
        return values[node.ref.text]
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, ListOf):
        return [_evaluate(item, values) for item in node.items]
    if isinstance(node, Length):
        found = _evaluate(node.arg, values)
        _check_length(kind(found))
        return len(found)
    if isinstance(node, Not):
        return not _filled(_evaluate(node.arg, values))
    if isinstance(node, Logic):
        left = _filled(_evaluate(node.left, values))
        if left == (node.op == "or"):  # decided by its left side
            return left
        return _filled(_evaluate(node.right, values))
    return _compare(node.op, _evaluate(node.left, values), _evaluate(node.right, values))


def _compare(op: str, left: Any, right: Any) -> bool:
    problem = _comparison_problem(op, kind(left), kind(right))
    if problem:
        raise _Mismatch(f"{problem} ({_shown(left)} {op} {_shown(right)})")
    if op in ("in", "not in"):
        if isinstance(right, list):
            found = any(kind(item) == kind(left) and item == left for item in right)
        else:
            found = left in right
        return found == (op == "in")
    if op in ("==", "!="):
        return (kind(left) == kind(right) and left == right) == (op == "==")
    return _ORDERING[op](left, right)


def _comparison_problem(op: str, left: str, right: str) -> str | None:
    """Why `op` does not take values of these kinds, or None when it does."""
    if op in ("==", "!="):
        if left == right or "null" in (left, right):
            return None
        return f"{op} compares {_a(left)} with {_a(right)}"
    if op in _ORDERING:
        if left == right and left in ("number", "string"):
            return None
        return f"{op} orders two numbers or two strings, not {_a(left)} and {_a(right)}"
    if right == "list" or (right in ("string", "object") and left == "string"):
        return None
    if right in ("string", "object"):
        return f"{op!r} {_a(right)} looks for a string, not {_a(left)}"
    return f"{op!r} looks in a list, a string or an object, not {_a(right)}"


def _check_length(found: str) -> None:
    if found not in ("string", "list", "object"):
        raise _Mismatch(f"len() counts a string, a list or an object, not {_a(found)}")


_ANY = frozenset({"null", "boolean", "number", "string", "list", "object"})


def _kinds(node: Node, kinds_of: KindsOf) -> frozenset[str]:
    """What node may hold; raises _Mismatch where no kind it may hold would do."""
    if isinstance(node, Ref):
        return kinds_of(node.ref) or _ANY
    if isinstance(node, Literal):
        return frozenset({kind(node.value)})
    if isinstance(node, ListOf):
        for item in node.items:
            _kinds(item, kinds_of)
        return frozenset({"list"})
    if isinstance(node, Length):
        inner = _kinds(node.arg, kinds_of)
        if not inner & {"string", "list", "object"}:
            _check_length(min(inner))
        return frozenset({"number"})
    if isinstance(node, Not | Logic):
        for part in (node.arg,) if isinstance(node, Not) else (node.left, node.right):
            _kinds(part, kinds_of)
        return frozenset({"boolean"})
    left, right = _kinds(node.left, kinds_of), _kinds(node.right, kinds_of)
    problems = [_comparison_problem(node.op, a, b) for a in sorted(left) for b in sorted(right)]
    if all(problems):
        raise _Mismatch(problems[0])
    return frozenset({"boolean"})


def _a(name: str) -> str:
    return {"null": "null", "object": "an object"}.get(name, f"a {name}")


def _shown(value: Any, width: int = 40) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
