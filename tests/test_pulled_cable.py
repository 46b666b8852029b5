"""A pulled cable, for real: the client sits in a network namespace behind a veth pair.

No FIN and no RST ever reaches the server; only keepalive (idle connection),
TCP_USER_TIMEOUT (a stream with unacknowledged data) and the TCP_INFO sweep
can tell. Another user's event stream (host side) must see ``leave … lost``
and ``/api/users`` must drop the client within 5 s, a streaming one (the
case keepalive cannot catch) within 3 s; the exact figures are the
benchmark's (bench/section_presence.py).

vigil listens on the host's end of the veth (10.213.0.1), so every client
here, the host's own included, is not loopback and must use HTTPS: all of
them trust the certificate vigil made on first run, with its names checked
(it is made after the veth exists, so it names 10.213.0.1).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.netns import Client, EventWatcher, Namespace, presence, serving_sections
from tests.support import CHATTY, Chatter, Vigil, basic, https_client
from tests.wire import Remote

BOUND = 5.0  # seconds from the pull to the leave (loose on purpose)
STREAM_BOUND = 3.0  # the same for an event stream (TCP_USER_TIMEOUT 2 s): the target


def sections(**presence_cfg: object) -> dict[str, dict[str, object]]:
    presence = {"keepidle": 1, "keepintvl": 1, "keepcnt": 2, "grace": 2, **presence_cfg}
    return {**serving_sections(), "presence": presence, **CHATTY}  # alice chats 5 a second


def watch(vigil: Vigil) -> EventWatcher:
    """alice's event stream, over HTTPS from the host."""
    return EventWatcher(vigil.https, basic("alice"), cafile=vigil.cert)


def online(vigil: Vigil) -> list[str]:
    return Remote.of(vigil, keep_alive=False, secure=True).online()


def expect_lost(vigil: Vigil, watcher: EventWatcher, user: str, pulled: float) -> float:
    """Wait for ``leave user lost``; return the seconds since the pull."""
    leave = watcher.wait_for(presence("leave", user), BOUND)
    assert leave is not None, f"no leave of {user} within {BOUND} s:\n{vigil.log()[-2000:]}"
    assert leave.data["reason"] == "lost", leave.data
    assert user not in [u["user"] for u in leave.data["online"]]
    assert user not in online(vigil)
    elapsed = leave.at - pulled
    assert elapsed < BOUND
    return elapsed


def wait_streaming(client: Client, events: int, timeout: float) -> None:
    """Until the namespace client has printed ``events`` events."""
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < events:
        line = client.line(max(0.0, deadline - time.monotonic()))
        assert line is not None, f"the namespace client got only {seen} events"
        seen += line.startswith("event ")


CASES = [("idle", "link"), ("idle", "nft"), ("sse", "link"), ("sse", "nft")]


@pytest.mark.parametrize(("mode", "how"), CASES, ids=[f"{m}-{h}" for m, h in CASES])
def test_pulled_cable_is_a_loss(
    ns: Namespace, start_vigil: Callable[..., Vigil], mode: str, how: str
) -> None:
    vigil = start_vigil(sections=sections())
    watcher = watch(vigil)
    chatter = None
    try:
        client = ns.client(vigil.https, basic("bob"), mode, cafile=vigil.cert)
        joined = watcher.wait_for(presence("join", "bob"), 2)
        assert joined is not None and joined.data["addr"] == "10.213.0.2"
        if mode == "sse":
            chatter = Chatter(https_client(vigil, "alice"))
            wait_streaming(client, 5, 3)  # events flow and are acknowledged
        else:
            time.sleep(1.5)  # idle past keepidle: keepalive probes are being answered
        pulled = ns.pull(how)
        elapsed = expect_lost(vigil, watcher, "bob", pulled)
        print(f"{mode}-{how}: lost after {elapsed:.2f} s")
        if mode == "sse":
            assert elapsed <= STREAM_BOUND, f"an HTTPS event stream: lost after {elapsed:.2f} s"
        if chatter is not None:
            assert not chatter.errors
    finally:
        if chatter is not None:
            chatter.stop()
        watcher.close()


def test_pulled_cable_frees_a_slot_for_the_eleventh(
    ns: Namespace, start_vigil: Callable[..., Vigil]
) -> None:
    vigil = start_vigil(sections=sections())
    watcher = watch(vigil)  # 1 of 10
    locals_ = [https_client(vigil, f"user{i:02d}") for i in range(1, 9)]  # 2..9 of 10
    try:
        for c in locals_:
            assert c.get("/api/me").status_code == 200
        ns.client(vigil.https, basic("user09"), "idle", cafile=vigil.cert)  # 10 of 10
        assert len(online(vigil)) == 10
        with https_client(vigil, "user10") as eleventh:
            full = eleventh.get("/api/me")
            assert full.status_code == 503 and "Retry-After" in full.headers
        pulled = ns.pull("link")
        expect_lost(vigil, watcher, "user09", pulled)
        with https_client(vigil, "user10") as eleventh:
            r = eleventh.get("/api/me")
        assert r.status_code == 200, r.text
        assert time.monotonic() - pulled < BOUND
        assert "user10" in online(vigil)
    finally:
        for c in locals_:
            c.close()
        watcher.close()


def test_configured_user_timeout_is_used(ns: Namespace, start_vigil: Callable[..., Vigil]) -> None:
    """``user_timeout_ms = 1000`` instead of the derived 2000 ms: a stream fails in ~1 s."""
    vigil = start_vigil(sections=sections(user_timeout_ms=1000))
    watcher = watch(vigil)
    chatter = Chatter(https_client(vigil, "alice"))
    try:
        client = ns.client(vigil.https, basic("bob"), "sse", cafile=vigil.cert)
        wait_streaming(client, 3, 3)
        pulled = ns.pull("link")
        assert expect_lost(vigil, watcher, "bob", pulled) < 1.75  # the default takes >= 1.8 s
    finally:
        chatter.stop()
        watcher.close()
