"""The pure parts of sessions and the second factor: RFC 6238's test vectors, the one-use
rule, the session clock (idle, maximum age), ended headers and the session budget."""

from __future__ import annotations

import base64

import pyotp
import pytest

from server.config import Account
from server.people.auth import Authenticator, Verdict, hash_password
from server.people.sessions import (
    RETYPE,
    Ended,
    Session,
    Sessions,
    UsedSteps,
    User,
    session_key,
    split_code,
    totp_step,
)
from tests.support import basic

# RFC 6238 Appendix B: the SHA-1 seed "12345678901234567890"; its 8-digit codes end in
# the 6-digit ones (the code is the truncated value mod 10^digits).
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
ALICE = User("alice", "operator")


@pytest.mark.parametrize(("t", "code8"), RFC_VECTORS)
def test_rfc6238_vectors(t: int, code8: str) -> None:
    assert pyotp.TOTP(RFC_SECRET, digits=8).at(t) == code8  # the library, against the RFC
    assert totp_step(RFC_SECRET, code8[-6:], t) == t // 30  # our check, at that time
    assert totp_step(RFC_SECRET, code8[-6:], t + 30) == t // 30  # one step late: still
    assert totp_step(RFC_SECRET, code8[-6:], t - 30) == t // 30  # one step early: still
    assert totp_step(RFC_SECRET, code8[-6:], t + 60) is None  # two steps: no


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", " 28708"])
def test_malformed_codes_never_verify(code: str) -> None:
    assert totp_step(RFC_SECRET, code, 59) is None


def test_split_code() -> None:
    assert split_code("correct horse123456") == ("correct horse", "123456")
    assert split_code("123456") is None  # no password before it
    assert split_code("password12345x") is None
    assert split_code("password") is None


def test_one_use_rule() -> None:
    used = UsedSteps()
    assert used.use("alice", 100)
    assert not used.use("alice", 100)  # the same code again
    assert not used.use("alice", 99)  # an older one after it
    assert used.use("bob", 100)  # per person
    assert used.use("alice", 101)


def test_session_clock_idle_and_max_age() -> None:
    sessions = Sessions(idle=60, max_age=300, per_user=8, total=100)
    key = session_key("Basic x")
    sessions.start(key, ALICE, "10.0.0.1", now=0, wall=1e9, totp=False)
    for t in range(50, 300, 50):  # a request every 50 s keeps it from idling ...
        assert isinstance(sessions.get(key, t), Session)
    ended = sessions.get(key, 300)  # ... until its maximum age
    assert isinstance(ended, Ended) and ended.reason == "5 min since you logged in"
    other = session_key("Basic y")
    sessions.start(other, ALICE, "10.0.0.1", now=1000, wall=1e9, totp=False)
    sessions.expire(1059.9)
    assert isinstance(sessions.get(other, 1059.9), Session)  # seen at 1059.9: idle from there
    sessions.expire(1120)
    got = sessions.get(other, 1120)
    assert isinstance(got, Ended) and got.reason == "idle for 1 min"
    assert [(s.user.name, e.reason) for s, e in sessions.drain()] == [
        ("alice", "5 min since you logged in"),
        ("alice", "idle for 1 min"),
    ]
    assert sessions.drain() == []


def test_session_budget_per_person_and_in_all() -> None:
    sessions = Sessions(idle=60, max_age=300, per_user=2, total=3)
    keys = [session_key(f"Basic {i}") for i in range(5)]
    sessions.start(keys[0], ALICE, "a", now=0, wall=0, totp=False)
    sessions.start(keys[1], ALICE, "a", now=1, wall=0, totp=False)
    sessions.get(keys[0], 2)  # used since: keys[1] is alice's least recently used
    sessions.start(keys[2], ALICE, "a", now=3, wall=0, totp=False)
    assert isinstance(sessions.get(keys[1], 4), Ended)
    assert len(sessions.of("alice")) == 2
    bob, carol = User("bob", "viewer"), User("carol", "viewer")
    sessions.start(keys[3], bob, "b", now=5, wall=0, totp=False)
    sessions.start(keys[4], carol, "c", now=6, wall=0, totp=False)  # the 4th: one must go
    assert len(sessions) == 3
    assert isinstance(sessions.get(keys[0], 7), Ended)  # the least recently used anywhere
    reasons = [e.reason for _, e in sessions.drain()]
    assert reasons == ["more than 2 sessions of alice", "more than 3 sessions in all"]


def test_an_ended_password_header_yields_only_to_a_prompt() -> None:
    ended = Ended("alice", "you logged out", totp=False, at=10)
    assert not ended.retyped(10)  # never refused yet: the browser still sends its copy
    ended.refused = 10.0
    assert not ended.retyped(10 + RETYPE - 0.1)  # an automatic resend, at once
    assert ended.retyped(10 + RETYPE)  # typed at the prompt
    coded = Ended("alice", "you logged out", totp=True, at=10, refused=10)
    assert not coded.retyped(1000)  # its code is used: never again


CODED = pyotp.random_base32()
HASH = hash_password("s3cret-pass")


def test_second_factor_login_one_use_and_wrong_codes_count() -> None:
    auth = Authenticator([Account("alice", HASH, "operator", CODED)], failures=3, window=60)
    wall = 1_764_770_000.0
    code = pyotp.TOTP(CODED).at(wall)

    def check(password: str, now: float) -> Verdict:
        return auth.check(basic("alice", password), "10.0.0.1", now, lambda: wall).verdict

    assert check("s3cret-pass", 0) is Verdict.WRONG  # the password alone
    assert check("s3cret-pass" + code, 1) is Verdict.OK
    assert check("s3cret-pass" + code, 2) is Verdict.OK  # the same header: the same session
    session = auth.sessions.of("alice")[0]
    auth.sessions.end([session], "you logged out", 3)
    assert check("s3cret-pass" + code, 4) is Verdict.ENDED  # that session's header: never again
    auth.sessions.forget(session.key)  # even once its end is forgotten, the code is used:
    assert check("s3cret-pass" + code, 10) is Verdict.WRONG  # a failure
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert check("s3cret-pass" + wrong, 11) is Verdict.WRONG  # a wrong code: a failure
    assert check("s3cret-pass" + wrong, 12) is Verdict.LOCKED  # the third failure locks
