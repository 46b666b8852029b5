"""What a handler returns: a whole response, a stream, or an answer that comes later.

Handlers never touch a socket or a connection; ``server.web.connection`` turns
each outcome into bytes and state, inside its one error boundary:

- ``Response`` (``server.web.protocol``): sent at once.
- ``Stream``: the head is sent, then ``open(push)`` is called once with a
  function that appends a piece of the body; it returns the function that
  detaches the stream again, which the connection calls when it closes.
- ``Deferred``: the connection parks (pipelined requests wait), calls
  ``start(done)`` once; whoever finishes the work calls ``done(value)``,
  perhaps at once, perhaps seconds later from another callback. The
  connection then calls ``finish(value)`` to build the response, inside the
  boundary: if ``finish`` raises, the client gets a 500, never a hang.
  ``finish`` runs even if the client has gone (it may write the audit log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from server.web.protocol import Headers, Response

T = TypeVar("T")

Push = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class Stream:
    headers: Headers
    open: Callable[[Push], Callable[[], None]]


@dataclass(frozen=True, slots=True)
class Deferred(Generic[T]):
    start: Callable[[Callable[[T], None]], None]
    finish: Callable[[T], Response]


Outcome = Response | Stream | Deferred[Any]
