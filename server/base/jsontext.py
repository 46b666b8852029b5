"""JSON text in and out: one strict encoder and one strict decoder for everything vigil speaks.

Out: compact UTF-8 text, no spaces, for responses, events and the audit log.
``json.dumps`` with arguments builds a new ``JSONEncoder`` on every call;
this one is built once, which is a few µs of every JSON response. It
refuses ``NaN`` and ``Infinity`` (``ValueError``): they are not JSON (RFC
8259 §6), and one of them in the audit log once made every panel's
``JSON.parse`` fail.

In (``loads``): what a client, a device or the broker sends. Refused with
``ValueError`` (one message a person can read): text that is not UTF-8 JSON,
``NaN``/``Infinity``, nesting deeper than ``MAX_DEPTH`` (the stdlib parser
recurses, so 1,000 levels would otherwise be a ``RecursionError``), and
lone surrogates (``"\\ud800"``), which no UTF-8 encoder can write back.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, repeat
from typing import Any

MAX_DEPTH = 32

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decode = json.JSONDecoder(parse_constant=_no_constant).decode


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # opener +1, closer -1 (after - 1)


def depth(text: str) -> int:
    """The deepest nesting of brackets outside strings of JSON ``text``, at C speed (no
    Python loop; linear only for JSON: in other text a string may never end)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # it cannot be deeper than it has openers
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii").translate(_STEP)
    return max(accumulate(map(int.__sub__, brackets, repeat(1))), default=0)


def loads(data: bytes | str) -> Any:
    """The value of JSON ``data``; ``ValueError`` with a reason if it is not strict JSON."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    too_deep = f"nested deeper than {MAX_DEPTH} levels"
    try:
        value = _decode(text)  # JSONDecodeError is a ValueError
    except RecursionError:
        raise ValueError(too_deep) from None
    # Only now: in JSON every string ends, so the scan's string pattern is linear.
    if depth(text) > MAX_DEPTH:
        raise ValueError(too_deep)
    try:
        dumps(value).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800"
        raise ValueError("a string is not valid Unicode") from None
    return value
