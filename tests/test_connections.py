"""End-to-end: connection pressure and per-request latency.

1,100 half-open connections (each sent part of a request head and then
nothing) would push a select() server past FD_SETSIZE (1024) and kill it.
vigil keeps at most ``http.max_connections`` open by shedding the oldest
unauthenticated ones, so people who are logged in keep working.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable

import pytest

from tests.support import Vigil, enough_fds
from tests.wire import Remote

FLOOD = 1100
MAX_CONNECTIONS = 768


@pytest.fixture(autouse=True)
def fds() -> None:
    enough_fds(FLOOD + 400)


def ask(c: Remote) -> float:
    """alice's GET /api/me on ``c``; check the answer (and nothing after it); the seconds taken."""
    started = time.monotonic()
    resp = c.me()
    assert resp.status == 200 and resp.json()["user"] == "alice"
    assert c.reader.buf == b"", "unexpected bytes after the response"
    return time.monotonic() - started


def ask_new_connection(vigil: Vigil) -> float:
    started = time.monotonic()
    ask(Remote.of(vigil, keep_alive=False))
    return time.monotonic() - started


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed ``sock`` (EOF, RST, or a 408 before the close)."""
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_half_open_flood_does_not_lock_out_logged_in_people(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil(
        sections={"http": {"max_connections": MAX_CONNECTIONS, "header_timeout": 30}}
    )
    pid = vigil.proc.pid
    keepalive = Remote.of(vigil)
    ask(keepalive)
    baseline = fd_count(pid)

    flood: list[socket.socket] = []
    latencies: list[float] = []
    peak_fds = 0
    try:
        for i in range(FLOOD):
            sock = socket.create_connection((vigil.host, vigil.port), timeout=5)
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: vigil.test\r\nUser-Agent: slo")
            flood.append(sock)
            if i % 50 == 49:
                latencies.append(ask(keepalive))
                latencies.append(ask_new_connection(vigil))
                peak_fds = max(peak_fds, fd_count(pid))
        time.sleep(0.5)  # let the server accept (and shed) the rest of the backlog
        for _ in range(20):
            latencies.append(ask(keepalive))
            latencies.append(ask_new_connection(vigil))
            peak_fds = max(peak_fds, fd_count(pid))
        assert vigil.proc.poll() is None, "vigil died"

        closed = sum(closed_by_server(s) for s in flood)
        still_open = FLOOD - closed
        print(
            f"closed {closed}, peak fds {peak_fds} (baseline {baseline}), "
            f"slowest {max(latencies) * 1000:.1f} ms"
        )
        assert still_open <= MAX_CONNECTIONS, f"{still_open} half-open connections held"
        assert closed >= FLOOD - MAX_CONNECTIONS
        assert peak_fds < 1024
        assert peak_fds <= baseline + MAX_CONNECTIONS + 8
        assert max(latencies) < 1.0, f"slowest authenticated request: {max(latencies):.3f} s"
        assert statistics.median(latencies) < 0.1
    finally:
        for sock in flood:
            sock.close()
    # the flood is gone: everything is as before
    time.sleep(0.3)
    assert ask_new_connection(vigil) < 1.0
    ask(keepalive)
    keepalive.close()
    assert vigil.proc.poll() is None
    assert "Traceback" not in vigil.log()


@pytest.mark.parametrize("target", ["/api/me", "/index.html"])
def test_keep_alive_requests_are_not_delayed_by_nagle(vigil: Vigil, target: str) -> None:
    """Nagle plus delayed ACK would add ~40 ms per request on one connection."""
    with Remote.of(vigil) as c:
        c.connect().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert c.get(target).status == 200  # warm: credentials verified and cached
        times = []
        started = time.monotonic()
        for _ in range(100):
            t = time.monotonic()
            assert c.get(target).status == 200
            times.append(time.monotonic() - t)
        total = time.monotonic() - started
    assert total < 2.0, f"100 keep-alive requests took {total:.2f} s"
    assert statistics.median(times) < 0.03  # Nagle + delayed ACK: ~40 ms each
