"""GET /api/events end to end: read by httpx-sse and curl, resumed, reset, cut off, kept alive.

Each stream starts with ``retry:`` and, when there is nothing to resume, a
``reset`` carrying the current state; every event has an increasing ``id:``.
``Last-Event-ID`` inside the ring buffer (1,000 events) resumes exactly;
older, newer or not a number → ``reset``. A client that never reads is cut
off once its buffer passes ``http.max_sse_buffer`` and memory stays bounded.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from httpx_sse import ServerSentEvent, connect_sse
from netns import EventWatcher, parse_events
from support import Vigil, basic, require

TIMEOUT = httpx.Timeout(5.0, read=3.0)


def post_chats(vigil: Vigil, user: str, texts: list[str]) -> None:
    """POST each text to /api/chat, pipelined on one keep-alive connection; all must be 200."""
    auth = basic(user)
    with socket.create_connection((vigil.host, vigil.port), timeout=10) as s:
        pending = b""
        for text in texts:
            body = json.dumps({"text": text}).encode()
            pending += (
                f"POST /api/chat HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        s.sendall(pending)
        got = b""
        while got.count(b"HTTP/1.1 ") < len(texts):
            data = s.recv(1 << 20)
            assert data, "vigil closed the connection"
            got += data
    assert got.count(b"HTTP/1.1 200 ") == len(texts), got[:300]


def hold(vigil: Vigil, user: str) -> httpx.Client:
    """A keep-alive connection that keeps ``user`` online (no presence events meanwhile)."""
    client = httpx.Client(base_url=vigil.base, headers={"Authorization": basic(user)})
    assert client.get("/api/me").status_code == 200
    return client


def sse_events(
    vigil: Vigil, user: str, headers: dict[str, str] | None = None
) -> Iterator[ServerSentEvent]:
    """The events of one stream read by httpx-sse, until the caller stops iterating."""
    with (
        httpx.Client(base_url=vigil.base, timeout=TIMEOUT) as client,
        connect_sse(
            client, "GET", "/api/events", headers={"Authorization": basic(user), **(headers or {})}
        ) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["cache-control"] == "no-store"
        yield from source.iter_sse()


def test_httpx_sse_reads_retry_reset_and_increasing_ids(vigil: Vigil) -> None:
    stream = sse_events(vigil, "alice")
    first = next(stream)
    assert first.retry == 1000 and first.data == ""
    reset = next(stream)
    assert reset.event == "reset"
    assert {"online", "devices"} <= set(reset.json())
    post_chats(vigil, "bob", ["one", "two", "three"])
    ids = [int(reset.id)]
    chats = []
    for event in stream:
        ids.append(int(event.id))
        if event.event == "chat":
            chats.append(event.json()["text"])
            if len(chats) == 3:
                break
    stream.close()
    assert chats == ["one", "two", "three"]
    assert ids == sorted(set(ids)), ids  # strictly increasing


def test_curl_reads_the_stream(vigil: Vigil) -> None:
    require(shutil.which("curl") is not None, "curl is not installed")
    proc = subprocess.Popen(
        [
            "curl",
            "-sS",
            "-N",
            "--max-time",
            "2",
            "-H",
            f"Authorization: {basic('alice')}",
            f"{vigil.base}/api/events",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    post_chats(vigil, "bob", ["from curl's point of view"])
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 28, out  # curl's "operation timed out": the stream stayed open
    lines = out.splitlines()
    assert lines[0] == "retry: 1000"
    events = [e for e in parse_events(iter(lines)) if e.type != "comment"]
    assert [e.type for e in events][:1] == ["reset"]
    assert any(e.type == "chat" and e.data["text"] == "from curl's point of view" for e in events)
    ids = [e.id for e in events]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))  # type: ignore[type-var]


def test_resume_with_last_event_id_misses_and_repeats_nothing(vigil: Vigil) -> None:
    holders = [hold(vigil, "alice"), hold(vigil, "bob")]  # no presence events from here on
    stream = sse_events(vigil, "alice")
    next(stream)
    last = int(next(stream).id)  # the reset
    post_chats(vigil, "bob", ["before"])
    event = next(e for e in stream if e.event == "chat")
    assert event.json()["text"] == "before"
    last = int(event.id)
    stream.close()
    missed = [f"missed {i}" for i in range(7)]
    post_chats(vigil, "bob", missed)
    stream = sse_events(vigil, "alice", {"Last-Event-ID": str(last)})
    assert next(stream).retry == 1000
    got = [next(stream) for _ in missed]
    assert [(e.event, e.json()["text"]) for e in got] == [("chat", t) for t in missed]
    assert [int(e.id) for e in got] == list(range(last + 1, last + 1 + len(missed)))
    post_chats(vigil, "bob", ["after"])
    after = next(stream)  # nothing repeated, nothing in between
    assert (after.event, after.json()["text"], int(after.id)) == (
        "chat",
        "after",
        last + len(missed) + 1,
    )
    stream.close()
    for h in holders:
        h.close()


def test_reset_when_the_id_is_not_in_the_ring(vigil: Vigil) -> None:
    holders = [hold(vigil, "alice"), hold(vigil, "bob")]  # no presence events from here on
    stream = sse_events(vigil, "alice")
    next(stream)
    oldest = int(next(stream).id)
    stream.close()
    post_chats(vigil, "bob", [f"chat {i}" for i in range(1100)])
    stream = sse_events(vigil, "alice")
    next(stream)
    newest = int(next(stream).id)
    stream.close()
    assert newest >= oldest + 1100
    # (Last-Event-ID from the newest id, events expected before the live one: None = reset)
    table: list[tuple[Callable[[int], str], int | None]] = [
        (lambda _: str(oldest), None),  # 1,100+ events ago: older than the ring buffer
        (lambda _: "0", None),
        (lambda _: "not-a-number", None),
        (lambda n: str(n + 1000), None),  # from the future: not one of ours
        (lambda n: str(n - 1000), 1000),  # the oldest id the ring can still resume from
        (lambda n: str(n - 1001), None),
        (lambda n: str(n - 5), 5),
        (lambda n: str(n), 0),
    ]
    for last_id_of, backlog in table:
        last_id = last_id_of(newest)
        stream = sse_events(vigil, "alice", {"Last-Event-ID": last_id})
        assert next(stream).retry == 1000
        if backlog is None:
            reset = next(stream)
            assert reset.event == "reset", last_id
            assert int(reset.id) == newest and "online" in reset.json()
        else:
            got = [int(next(stream).id) for _ in range(backlog)]
            assert got == list(range(int(last_id) + 1, newest + 1)), last_id
        post_chats(vigil, "bob", ["live"])
        live = next(stream)
        assert (live.event, live.json()["text"]) == ("chat", "live"), last_id
        newest = int(live.id)
        stream.close()
    for h in holders:
        h.close()


def vm_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1))


def test_a_client_that_never_reads_is_cut_off(start_vigil: Callable[..., Vigil]) -> None:
    """vigil's own bound on a stalled stream: ``max_sse_buffer`` bytes, then cut off.

    With the default TCP_USER_TIMEOUT (2 s) the kernel usually ends such a
    connection first (Linux aborts when the peer's window stays closed for the
    user timeout, as ``lost``), before the ~4 MB socket buffer is full; a
    long user timeout here lets the buffer fill so vigil's own limit acts.
    """
    limit = 65536
    vigil = start_vigil(
        sections={"http": {"max_sse_buffer": limit}, "presence": {"user_timeout_ms": 60000}}
    )
    big = ["😀" * 500] * 200  # 200 events of ~2 KB each
    post_chats(vigil, "bob", big * 5)  # fill the ring and the chat history first
    before = vm_rss_kib(vigil.proc.pid)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((vigil.host, vigil.port))
    stalled.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: t\r\nAuthorization: {basic('vera')}\r\n\r\n".encode()
    )
    time.sleep(0.2)
    sent = 0
    while "cut off" not in vigil.log() and sent < 20 * 200:
        post_chats(vigil, "bob", big)
        sent += len(big)
    assert "cut off" in vigil.log(), f"still not cut off after {sent} events of ~2 KB"
    post_chats(vigil, "bob", big * 2)  # nothing piles up after the cut
    grown = vm_rss_kib(vigil.proc.pid) - before
    stalled.close()
    line = next(x for x in vigil.log().splitlines() if "cut off" in x)
    queued = int(re.search(r"(\d+) bytes queued", line).group(1))  # type: ignore[union-attr]
    assert limit < queued <= limit + 4096, line
    assert grown < 8 * 1024, f"RSS grew by {grown} KiB"
    r = httpx.get(f"{vigil.base}/healthz")
    assert r.status_code == 200


def test_heartbeat_comments(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(sections={"http": {"sse_heartbeat": 1}})
    watcher = EventWatcher(vigil.base, basic("alice"))
    try:
        started = time.monotonic()
        beats = [watcher.wait_for(lambda e: e.type == "comment", 2.5) for _ in range(2)]
        assert all(b is not None and b.data == "heartbeat" for b in beats)
        assert time.monotonic() - started < 3.5
    finally:
        watcher.close()
