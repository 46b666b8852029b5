"""The gate as a pure function: a request, facts about its connection and ``now`` in,
a decision out; no socket, no server (``server.web.gate``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.config import Account
from server.people.auth import Authenticator, User, hash_password
from server.people.presence import Change, Presence
from server.web import api
from server.web.gate import Decision, Gate
from server.web.protocol import Request, Response
from server.web.router import Match
from tests.support import basic

HASH = hash_password("pw-alice-1")
ALICE = User("alice", "operator")


@dataclass
class Peer:
    id: int = 1
    addr: str = "192.0.2.7"
    secure: bool = False
    loopback: bool = False
    user: User | None = None
    local_address: str = "192.0.2.1"


def gate(max_users: int = 10, https_port: int | None = None) -> Gate:
    auth = Authenticator([Account("alice", HASH, "operator"), Account("bob", HASH, "viewer")])
    g = Gate(api.ROUTER, auth, Presence(max_users, grace=2.0), wall=lambda: 1_800_000_000.0)
    g.configure("vigil", frozenset({"panel.example"}), https_port)
    return g


def get(path: str, user: str | None = "alice", **headers: str) -> Request:
    fields = {"host": "panel.example"} | {k.replace("_", "-"): v for k, v in headers.items()}
    if user is not None:
        fields["authorization"] = basic(user, "pw-alice-1")
    return Request("GET", path, fields, b"")


def status(decision: Decision) -> int:
    assert isinstance(decision.outcome, Response), decision
    return decision.outcome.status


def test_a_first_request_joins_and_a_second_changes_nothing() -> None:
    g = gate()
    first = g.admit(Peer(), get("/api/me"), now=5.0)
    assert isinstance(first.outcome, Match) and first.user == ALICE
    assert first.changes == (Change("join", "alice", "192.0.2.7"),) and first.attached
    again = g.admit(Peer(user=ALICE), get("/api/me"), now=6.0)
    assert isinstance(again.outcome, Match) and again.changes == () and not again.attached


def test_public_routes_answer_before_anything_else() -> None:
    decision = gate(https_port=8443).admit(Peer(), get("/healthz", user=None), now=1.0)
    assert isinstance(decision.outcome, Match) and decision.outcome.route.public
    assert decision.user is None and decision.changes == ()


def test_plain_http_from_elsewhere_is_sent_to_https_before_any_password() -> None:
    decision = gate(https_port=8443).admit(Peer(), get("/api/me?x=1"), now=1.0)
    assert status(decision) == 308 and decision.changes == ()
    assert ("Location", "https://panel.example:8443/api/me?x=1") in decision.outcome.headers
    loopback = gate(https_port=8443).admit(Peer(loopback=True), get("/api/me"), now=1.0)
    assert isinstance(loopback.outcome, Match)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (get("/api/me", user=None), 401),
        (get("/api/me", host="evil.example"), 421),
        (get("/api/me", sec_fetch_site="cross-site", sec_fetch_mode="no-cors"), 403),
        (Request("POST", "/api/chat", {"host": "panel.example", "origin": "http://x"}, b""), 401),
        (get("/api/nothing"), 404),
    ],
)
def test_refusals(request_: Request, expected: int) -> None:
    assert status(gate().admit(Peer(), request_, now=1.0)) == expected


def test_a_cross_origin_post_is_refused_after_the_person_counts_as_online() -> None:
    post = get("/api/chat", origin="http://elsewhere.example")
    post.method = "POST"
    decision = gate().admit(Peer(), post, now=1.0)
    assert status(decision) == 403 and decision.user == ALICE and decision.attached


def test_the_user_cap_refuses_a_new_person_and_changes_nothing() -> None:
    g = gate(max_users=1)
    assert g.admit(Peer(id=1), get("/api/me"), now=1.0).attached
    full = g.admit(Peer(id=2), get("/api/me", user="bob"), now=1.0)
    assert status(full) == 503 and full.changes == () and g.presence.user_of(2) is None
