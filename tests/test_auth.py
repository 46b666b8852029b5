"""Passwords, Basic parsing, the credential cache, lockout and the allow-list."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from server.base.addresses import AllowList, display_address
from server.config import Account
from server.people.auth import (
    Authenticator,
    User,
    Verdict,
    hash_password,
    parse_basic,
    verify_password,
)
from server.people.users import weakness
from tests.support import basic

HASH = hash_password("s3cret")


def WALL() -> float:  # epoch seconds of a new login: what a wall clock would say
    return 1_764_770_000.0


ALICE = Account("alice", HASH, "operator")
BOB = Account("bob", HASH, "viewer")


def test_hash_is_salted_and_verifies() -> None:
    assert HASH.startswith("scrypt$") and hash_password("s3cret") != HASH
    assert verify_password("s3cret", HASH)
    assert not verify_password("s3cret ", HASH)


@pytest.mark.parametrize("stored", ["", "scrypt$1$2", "scrypt$x$8$1$AAAA$AAAA", "md5$1$1$1$a$b"])
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything", stored)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("alice", "pw"), ("alice", "pw")),
        (basic("alice", "p:w"), ("alice", "p:w")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", "b")),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"nocolon").decode(), None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        ("Bearer abc", None),
        ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
        ("Basic", None),
    ],
)
def test_parse_basic(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_basic(value) == expected


def test_check_outcomes() -> None:
    auth = Authenticator([ALICE, BOB])
    assert auth.check(None, "1.2.3.4", 0, WALL).verdict is Verdict.MISSING
    assert auth.check("Basic !!!", "1.2.3.4", 0, WALL).verdict is Verdict.MISSING
    assert auth.check(basic("alice", "wrong"), "1.2.3.4", 0, WALL).verdict is Verdict.WRONG
    assert auth.check(basic("nobody", "s3cret"), "1.2.3.4", 0, WALL).verdict is Verdict.WRONG
    ok = auth.check(basic("bob", "s3cret"), "1.2.3.4", 0, WALL)
    assert ok.verdict is Verdict.OK and ok.user == User("bob", "viewer")


def test_verified_credentials_are_cached() -> None:
    auth = Authenticator([ALICE])
    auth.check(basic("alice", "s3cret"), "a", 0, WALL)
    auth.users = {}  # the cache answers without the user table or scrypt
    respelled = "basic  " + basic("alice", "s3cret").split()[1]  # another header: a new session
    assert auth.check(respelled, "a", 0, WALL).verdict is Verdict.OK
    assert len(auth.sessions) == 2


def test_lockout_per_address_and_name_then_expiry() -> None:
    auth = Authenticator([ALICE, BOB], failures=5, window=60)
    for i in range(4):
        assert auth.check(basic("alice", "bad"), "10.0.0.1", i, WALL).verdict is Verdict.WRONG
    locked = auth.check(basic("alice", "bad"), "10.0.0.1", 4, WALL)
    assert locked.verdict is Verdict.LOCKED and locked.retry_after == 60
    right = auth.check(basic("alice", "s3cret"), "10.0.0.1", 10, WALL)
    assert right.verdict is Verdict.LOCKED and right.retry_after == 54
    assert auth.check(basic("bob", "s3cret"), "10.0.0.1", 10, WALL).verdict is Verdict.OK
    assert auth.check(basic("alice", "s3cret"), "10.0.0.2", 10, WALL).verdict is Verdict.OK
    assert auth.check(basic("alice", "s3cret"), "10.0.0.1", 64.5, WALL).verdict is Verdict.OK


def test_failures_outside_the_window_do_not_add_up() -> None:
    auth = Authenticator([ALICE], failures=3, window=10)
    for t in (0, 11, 22, 33):
        assert auth.check(basic("alice", "bad"), "a", t, WALL).verdict is Verdict.WRONG
    auth.prune(100)
    assert not auth._failures


@pytest.mark.parametrize(
    ("addr", "allowed"),
    [
        ("127.0.0.1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("192.168.1.1", False),
        ("2001:db8::1", False),
        ("not-an-ip", False),
    ],
)
def test_allow_list(addr: str, allowed: bool) -> None:
    nets = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "::1/128", "fe80::/10")]
    assert AllowList(nets).allows(addr) is allowed


def test_display_address_unmaps_ipv4() -> None:
    assert display_address("::ffff:10.0.0.7") == "10.0.0.7"
    assert display_address("::1") == "::1"


@pytest.mark.parametrize("password", ["ecila-pw\x00", "ecila-pw\x00\x00\x00", "ecila\x07-pw"])
def test_control_characters_are_never_a_password(password: str) -> None:
    """scrypt keys an HMAC with the password, which pads it with zeros: "pw\\0" was "pw"
    (found by the fuzzer). RFC 7617 §2 forbids control characters anyway."""
    header = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert parse_basic(header) is None
    assert weakness("alice", "a long enough\x00password") is not None
