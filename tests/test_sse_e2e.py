"""GET /api/events end to end: read by httpx-sse and curl, and a client that never reads.

A real vigil process: the stream as real clients read it (``retry:``, a
``reset``, increasing ``id:``s), and a client whose kernel buffers fill
because it never reads is cut off once vigil's queue passes
``http.max_sse_buffer``, with memory bounded. Resume, reset and heartbeats,
in-process: tests/test_sse.py.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Generator

import httpx
from httpx_sse import ServerSentEvent, connect_sse

from tests.support import CHATTY, Vigil, basic, require, vm_rss_kib
from tests.wire import Remote, request, sse_events

TIMEOUT = httpx.Timeout(5.0, read=3.0)


def post_chats(vigil: Vigil, user: str, texts: list[str]) -> None:
    """POST each text to /api/chat, pipelined on one keep-alive connection; all must be 200."""
    with Remote(vigil.host, vigil.port, timeout=10) as c:
        c.post_chats(user, texts)


def httpx_sse_stream(
    vigil: Vigil, user: str, headers: dict[str, str] | None = None
) -> Generator[ServerSentEvent, None, None]:
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
    stream = httpx_sse_stream(vigil, "alice")
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
    events = [e for e in sse_events(lines) if e.type != "comment"]
    assert [e.type for e in events][:1] == ["reset"]
    assert any(e.type == "chat" and e.data["text"] == "from curl's point of view" for e in events)
    ids = [e.id for e in events]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))  # type: ignore[type-var]


def test_a_client_that_never_reads_is_cut_off(start_vigil: Callable[..., Vigil]) -> None:
    """vigil's own bound on a stalled stream: ``max_sse_buffer`` bytes, then cut off.

    With the default TCP_USER_TIMEOUT (2 s) the kernel usually ends such a
    connection first (Linux aborts when the peer's window stays closed for the
    user timeout, as ``lost``), before the ~4 MB socket buffer is full; a
    long user timeout here lets the buffer fill so vigil's own limit acts.
    """
    limit = 65536
    vigil = start_vigil(
        sections={
            "http": {"max_sse_buffer": limit},
            "presence": {"user_timeout_ms": 60000},
            **CHATTY,
        }
    )
    big = ["😀" * 500] * 200  # 200 events of ~2 KB each
    post_chats(vigil, "bob", big * 5)  # fill the ring and the chat history first
    before = vm_rss_kib(vigil.proc.pid)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((vigil.host, vigil.port))
    stalled.sendall(request("GET", "/api/events", {"Authorization": basic("vera")}))
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
