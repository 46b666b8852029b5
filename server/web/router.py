"""One routing table: path patterns with parameters, methods, 404 and 405 + Allow.

A pattern is a path whose segments are literal or ``{name}`` (one segment,
non-empty, no ``/``): ``/api/devices/{id}/commands``. ``Router.match``
returns a ``Match`` (the route's handler and the parameters) or a
``NoRoute`` with the status to answer:

- 501 for a method this server does not know at all (RFC 9110 §15.6.2),
  answered before authentication like a public route;
- 405 + ``Allow`` when the path matches but the method does not (RFC 9110
  §15.5.6); ``Allow`` is computed from the table, HEAD wherever GET is;
- 404 for a path under a ``prefix`` given as ``missing`` (the API: "no such
  endpoint") when nothing matches; any other path goes to the ``fallback``
  route (static files), if there is one.

HEAD is answered by the GET handler (the protocol layer drops the body).
Literal paths are found with one dict lookup; patterns are tried in order.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

H = TypeVar("H")
# RFC 9110 §9 and PATCH (RFC 5789): known, so 405 where a route does not take them.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


@dataclass(frozen=True, slots=True)
class Route(Generic[H]):
    pattern: str
    methods: Mapping[str, H]
    public: bool = False  # answered before authentication (/healthz)
    scraper: bool = False  # a scraper's bearer token, not a person's credentials (/metrics)
    allow: str = field(init=False)

    def __post_init__(self) -> None:
        names = set(self.methods) | ({"HEAD"} if "GET" in self.methods else set())
        object.__setattr__(self, "allow", ", ".join(sorted(names)))


@dataclass(frozen=True, slots=True)
class Match(Generic[H]):
    route: Route[H]
    handler: H
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class NoRoute:
    status: int  # 404, 405 or 501
    message: str
    allow: str = ""  # for 405
    public: bool = False  # answered before authentication (501; 405 on a public route)


def _segments(pattern: str) -> tuple[str, ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with /")
    return tuple(pattern.split("/")[1:])


class Router(Generic[H]):
    def __init__(
        self,
        routes: list[Route[H]],
        fallback: Route[H] | None = None,
        missing: str = "/api/",
    ) -> None:
        self._literal: dict[str, Route[H]] = {}
        self._patterns: list[tuple[tuple[str, ...], Route[H]]] = []
        for route in routes:
            segs = _segments(route.pattern)
            if any(s.startswith("{") for s in segs):
                self._patterns.append((segs, route))
            else:
                self._literal[route.pattern] = route
        self._fallback = fallback
        self._missing = missing
        self.routes = tuple(routes)

    def _find(self, path: str) -> tuple[Route[H], dict[str, str]] | None:
        route = self._literal.get(path)
        if route is not None:
            return route, {}
        parts = path.split("/")[1:]
        for segs, route in self._patterns:
            if len(segs) != len(parts):
                continue
            params: dict[str, str] = {}
            for seg, part in zip(segs, parts, strict=True):
                if seg.startswith("{"):
                    if not part:
                        break
                    params[seg[1:-1]] = part
                elif seg != part:
                    break
            else:
                return route, params
        return None

    def match(self, method: str, path: str) -> Match[H] | NoRoute:
        if method not in KNOWN_METHODS:
            return NoRoute(501, f"method {method} is not implemented", public=True)
        found = self._find(path)
        if found is None:
            if path.startswith(self._missing) or self._fallback is None:
                return NoRoute(404, f"no such API endpoint: {path}")
            found = (self._fallback, {})
        route, params = found
        handler = route.methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            return NoRoute(405, "method not allowed", route.allow, route.public)
        return Match(route, handler, params)
