"""The gate: who a request is from and whether it may go on, decided at its head.

Pure: the gate reads the request, facts about its connection (``Peer``) and
``now``, and returns the decision: who the connection belongs to, a refusal
or the route to run, and the presence changes its admission made. It
announces nothing, closes nothing and writes no connection's field; the
server (``app.Server.admit``) applies the decision. In order:

1. routing: a public route (``/healthz``) answers here, before anything else;
2. over plain HTTP with TLS on: 308 to HTTPS (not for loopback), before any
   password crosses the wire;
3. Fetch Metadata: 403 for what another site embeds or fetches (an ``<img>``
   with cached credentials would otherwise log its victim in); 421 for a
   Host this panel does not go by (DNS rebinding);
4. a scraper's route (``/metrics``): its bearer token, never a person's
   credentials (404 while ``[metrics]`` has none, 401 for a wrong one), and
   nothing more: a scraper is nobody online;
5. authentication and the session (401, saying why when a session ended; 429
   while locked or the hash budget is spent);
6. presence: the user cap (503 with the panel-full page), the connection
   counted as the person's (``attached``: the server then keeps them within
   ``[limits] connections_per_user``);
7. for a state-changing method: 403 for a cross-site or cross-origin request
   (CSRF);
8. the route, or 404/405 for a path or method the table does not know.

The scraper's token is compared as its SHA-256 (``hmac.compare_digest``): a
wrong one costs a hash of a few dozen bytes, never the slow password hash,
so it needs no lockout; it is 128 bits or more, so it cannot be guessed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from server.people.auth import Authenticator, AuthResult, Verdict
from server.people.presence import Change, Presence
from server.people.sessions import Session, User
from server.web.protocol import Request, Response
from server.web.responses import error, panel_full, unauthorized
from server.web.router import Match, NoRoute, Router

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
# A Host header value: a DNS name or IPv4 address, or an IPv6 literal, and a port.
HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")
NO_CHANGES: tuple[Change, ...] = ()


class Peer(Protocol):
    """What the gate knows of a connection (``web.connection.Connection`` is one)."""

    @property
    def id(self) -> int: ...
    @property
    def addr(self) -> str: ...
    @property
    def secure(self) -> bool: ...
    @property
    def loopback(self) -> bool: ...
    @property
    def user(self) -> User | None: ...
    @property
    def local_address(self) -> str: ...


class Decision(NamedTuple):
    user: User | None  # who the connection belongs to now
    outcome: Response | Match[Any]  # a refusal, or the route to run on the whole request
    changes: tuple[Change, ...] = NO_CHANGES  # presence changes to announce, in order
    attached: bool = False  # the connection now counts as ``user``'s (it did not before)
    session: Session | None = None  # the login this request belongs to


class Gate:
    def __init__(
        self,
        router: Router[Any],
        auth: Authenticator,
        presence: Presence,
        wall: Callable[[], float],
    ) -> None:
        self.router = router
        self.auth = auth
        self.presence = presence
        self.wall = wall  # epoch seconds, for the ``since`` of a join
        self.realm = "vigil"
        self.host_names: frozenset[str] = frozenset()
        self.https_port: int | None = None  # None: TLS is off
        self.scraper_token = b""  # SHA-256 of the scraper's bearer token; b"": metrics off

    def configure(
        self,
        realm: str,
        host_names: frozenset[str],
        https_port: int | None,
        scraper_token: bytes = b"",
    ) -> None:
        """At start and on SIGHUP: the realm, what a Host may name, where HTTPS listens, the
        SHA-256 of the scraper's token (``[metrics] token_file``; b"": none)."""
        self.realm, self.host_names, self.https_port = realm, host_names, https_port
        self.scraper_token = scraper_token

    def admit(self, peer: Peer, req: Request, now: float) -> Decision:
        """The decision on the head of ``req`` from ``peer`` (the module header's order)."""
        match = self.router.match(req.method, req.path)
        if isinstance(match, NoRoute):
            if match.public:
                return Decision(peer.user, no_route(match))
        elif match.route.public:
            return Decision(peer.user, match)
        if self.https_port is not None and not (peer.secure or peer.loopback):
            return Decision(peer.user, self._to_https(peer, req, self.https_port))
        refusal = cross_site_read(req) or self._misdirected(req)
        if refusal is not None:
            return Decision(peer.user, refusal)
        if not isinstance(match, NoRoute) and match.route.scraper:
            return Decision(peer.user, self._scraper(req) or match)
        result = self.auth.check(req.headers.get("authorization"), peer.addr, now, self.wall)
        if result.verdict is not Verdict.OK:
            return Decision(peer.user, self._refuse(result))
        user, session = result.user, result.session
        assert user is not None
        changes, attached = NO_CHANGES, False
        if self.presence.user_of(peer.id) != user.name:
            if not self.presence.admits(user.name):
                return Decision(peer.user, self._full(req, now))
            changes = tuple(self.presence.attach(peer.id, user.name, peer.addr, now, self.wall()))
            attached = True
        if req.method not in SAFE_METHODS:
            refusal = cross_site(req, peer.secure)
            if refusal is not None:
                return Decision(user, refusal, changes, attached, session)
        if isinstance(match, NoRoute):
            return Decision(user, no_route(match), changes, attached, session)
        return Decision(user, match, changes, attached, session)

    @staticmethod
    def _to_https(peer: Peer, req: Request, port: int) -> Response:
        """308 to the same path over HTTPS (RFC 9110 §15.4.9: the method is kept).

        The host comes from the Host header only if it is a host name or an
        address (RFC 3986 §3.2.2), never anything that could end the authority.
        """
        host = req.headers.get("host", "")
        if not HOST.fullmatch(host):
            host = peer.local_address
        name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
        location = f"https://{name}{'' if port == 443 else f':{port}'}{req.target}"
        return error(308, f"use HTTPS: {location}", [("Location", location)])

    def _scraper(self, req: Request) -> Response | None:
        """None if ``req`` carries the scraper's bearer token (RFC 6750 §2.1), else the 404
        (no token configured) or 401 to answer."""
        if not self.scraper_token:
            return error(404, "metrics are off: [metrics] token_file names no token")
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self.scraper_token):
            return None
        challenge = f'Bearer realm="{self.realm} metrics"'
        return error(
            401, "the scraper's bearer token is required", [("WWW-Authenticate", challenge)]
        )

    def _refuse(self, result: AuthResult) -> Response:
        verdict, name, retry = result.verdict, result.name, result.retry_after
        if verdict is Verdict.LOCKED:
            log.warning("too many failed logins for %r: locked for %d s", name, retry)
            return error(
                429,
                f"too many failed logins for {name!r}; try again later",
                [("Retry-After", str(retry))],
            )
        if verdict is Verdict.BUSY:
            return error(
                429,
                f"too many login attempts at once; try again in {retry} s",
                [("Retry-After", str(retry))],
            )
        if verdict is Verdict.ENDED:
            return unauthorized(self.realm, f"signed out: {result.why}; log in again")
        if verdict is Verdict.WRONG:
            return unauthorized(self.realm, "wrong user name, password or code")
        return unauthorized(self.realm, "login required")

    def _full(self, req: Request, now: float) -> Response:
        retry = self.presence.retry_after(now)
        html = "text/html" in req.headers.get("accept", "")
        return panel_full(self.presence.max_users, retry, html)

    def _misdirected(self, req: Request) -> Response | None:
        """421 for a Host that names neither an address nor a name this panel goes by:
        a page of another site whose name was re-pointed here (DNS rebinding)."""
        host = req.headers.get("host", "").lower()
        if host.startswith("["):
            return None  # an IPv6 literal (its syntax was checked by h11)
        name = host.partition(":")[0]
        if name in self.host_names or name.replace(".", "").isdigit():
            return None
        return error(421, f"this panel is not served as {name!r} (see [http] allowed_hosts)")


def too_many(user: str, limit: int) -> Response:
    """429 for a person whose busy connections alone reach ``connections_per_user``."""
    return error(
        429,
        f"{user} has {limit} connections busy at once, the most one person may have",
        [("Retry-After", "1"), ("Connection", "close")],
    )


def no_route(match: NoRoute) -> Response:
    return error(match.status, match.message, [("Allow", match.allow)] if match.allow else None)


def cross_site_read(req: Request) -> Response | None:
    """403 before authentication for what another site embeds or fetches: Fetch Metadata's
    resource isolation; only a top-level navigation may come from elsewhere."""
    site = req.headers.get("sec-fetch-site")
    if site is None or site in ("same-origin", "none"):
        return None
    if req.headers.get("sec-fetch-mode") == "navigate" and req.method in ("GET", "HEAD"):
        return None
    return error(403, f"cross-site request refused ({site})")


def cross_site(req: Request, secure: bool) -> Response | None:
    """403 for a state-changing request another site made the browser send (CSRF)."""
    site = req.headers.get("sec-fetch-site")
    origin = req.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        return error(403, f"cross-site request refused ({site})")
    if origin is not None:
        scheme = "https" if secure else "http"
        if origin.lower() != f"{scheme}://{req.headers.get('host', '')}".lower():
            return error(403, f"cross-origin request refused ({origin})")
    return None
