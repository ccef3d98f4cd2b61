"""The small grammars of the command line, with length and depth limits: every text opmap parses from an option.

* ``-k`` / ``-m`` selections: pytest's grammar, ``expr := or; or := and ('or' and)*; and := not ('and' not)*;
  not := 'not' not | '(' expr ')' | NAME``, parsed by recursive descent (never ``eval``), at most
  :data:`MAX_DEPTH` nested ``not``/parentheses and :data:`MAX_TEXT` characters;
* counts and dims (``--bound``, ``--shape``, ``--point``, ``--input-shape``, ``--dynamic``): ASCII digits only (no
  ``1_000``, no other scripts' digits, no signs or spaces), each at most :data:`MAX_DIM`, at most :data:`MAX_RANK` dims.

Every refusal is one :class:`~opmap.errors.OpmapError` line that quotes the text (cut to 80 characters).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from opmap.errors import OpmapError

MAX_TEXT = 4096  # characters in one option's value
MAX_DEPTH = 64  # nested not / parentheses in a -k / -m expression
MAX_RANK = 16  # dims of one shape (TensorRT's own limit is 8)
MAX_DIM = 2**31 - 1  # TensorRT dims are int32
MAX_COUNT = 2**63 - 1

_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = ("and", "or", "not", "(", ")")


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bounded(text: str, flag: str) -> str:
    if not isinstance(text, str):
        raise OpmapError(f"bad {flag}: expected text, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise OpmapError(f"bad {flag} {shown(text)}: {len(text):,} characters (at most {MAX_TEXT:,})")
    return text


def natural(text: str, flag: str, spec: str | None = None, *, low: int = 0, high: int = MAX_COUNT) -> int:
    """A whole number in ASCII digits, ``low <= n <= high``; else one line naming ``flag`` and ``spec``."""
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise OpmapError(f"bad {flag} {shown(spec if spec is not None else text)}: {shown(text, 24)} is not a whole number "
                         f"from {low} to {high:,}")
    return int(text)


def dims(text: str, flag: str, spec: str, *, low: int = 0) -> list[int]:
    """``1x3x224x224``: 1 to :data:`MAX_RANK` numbers separated by ``x``, each ``low`` .. :data:`MAX_DIM`."""
    parts = text.split("x")
    if len(parts) > MAX_RANK:
        raise OpmapError(f"bad {flag} {shown(spec)}: {len(parts)} dims (at most {MAX_RANK})")
    return [natural(p, flag, spec, low=low, high=MAX_DIM) for p in parts]


# -- -k / -m -------------------------------------------------------------------------------------------------------------

Node = Any  # a name (str), or ("not", node), ("and", [nodes]), ("or", [nodes])


def parse_selection(expr: str, flag: str) -> Node | None:
    """The parse tree of a ``-k`` / ``-m`` expression (None: an empty one, which selects everything)."""
    bounded(expr, flag)
    tokens = _TOKEN.findall(expr)
    if not tokens:
        return None
    at = 0

    def fail(why: str) -> OpmapError:
        return OpmapError(f"bad {flag} expression {shown(expr)}: {why}; use names with and / or / not and parentheses")

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> str:
        nonlocal at
        at += 1
        return tokens[at - 1]

    def chain(op: str, part: Callable[[int], Node], depth: int) -> Node:  # part (op part)*
        items = [part(depth)]
        while peek() == op:
            take()
            items.append(part(depth))
        return items[0] if len(items) == 1 else (op, items)

    def either(depth: int) -> Node:
        return chain("or", both, depth)

    def both(depth: int) -> Node:
        return chain("and", negation, depth)

    def negation(depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise fail(f"nested deeper than {MAX_DEPTH}")
        token = peek()
        if token is None:
            raise fail("it ends where a name was expected")
        if token == "not":
            take()
            return ("not", negation(depth + 1))
        if token == "(":
            take()
            inner = either(depth + 1)
            if peek() != ")":
                raise fail("a '(' is not closed")
            take()
            return inner
        if token in _OPERATORS:
            raise fail(f"{token!r} where a name was expected")
        return take()

    tree = either(0)
    if at != len(tokens):
        raise fail(f"unexpected {shown(tokens[at], 24)} after a complete expression")
    return tree


def evaluate(tree: Node | None, matches: Callable[[str], bool]) -> bool:
    if tree is None:
        return True
    if isinstance(tree, str):
        return bool(matches(tree))
    op, arg = tree
    if op == "not":
        return not evaluate(arg, matches)
    if op == "and":
        return all(evaluate(x, matches) for x in arg)
    return any(evaluate(x, matches) for x in arg)
