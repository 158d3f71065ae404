"""JSON from someone else (a request body, a task's input, a published config.json, a worker's
reply), its nesting checked before any parser sees it.

CPython's json parser recurses once per level of nesting, bounded only by the interpreter's
recursion limit, which py_ecc (under eth-account) raises to 100000 in every process that signs:
past the thread's C stack a deep document crashes the process (a segfault, not RecursionError).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 256  # loads()' default; real documents nest a handful of levels

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_INNERMOST = re.compile(rb"\[\]|\{\}")


def depth_ok(body: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects at most `limit` deep (brackets inside strings do not
    count; brackets that do not balance: no). Each step is a C-speed regex pass, at most
    `limit` + 2 of them."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return True
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    if re.search(rb"[\[{]{%d}" % (limit + 1), brackets):
        return False
    for _ in range(limit):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return not brackets  # anything left nests deeper (or does not balance: not JSON either way)


def loads(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads, a ValueError for a document nested deeper than `max_depth`."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if not depth_ok(raw, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    return json.loads(raw)
