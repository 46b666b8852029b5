"""Presence end to end on loopback: clean close vs reset, as another user's stream sees it.

Real TCP and real processes: what the kernel sends when a socket is closed
or a process killed, and how long the server takes to act on it. The
presence rules themselves (a second connection, back within grace),
in-process: tests/test_online.py.

A clean close (FIN) of a user's last connection keeps them online for
``[presence] grace`` (3 s here, so the two cases are told apart); a reset
(SO_LINGER 0, or a killed process with unread data) is ``lost`` at once.
Note what a killed process sends: the kernel closes its sockets with FIN,
unless unread data is still queued, then with RST (RFC 2525 §2.17).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests import wire
from tests.netns import EventWatcher, presence
from tests.support import Vigil, basic

GRACE = 3.0
SECTIONS = {"presence": {"grace": GRACE}}

# A client process that sends one request and never reads the answer.
NO_READ = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
time.sleep(0.3)
print("ready", flush=True)
time.sleep(60)
"""
# A client process that reads its answer, then sits idle.
READ = NO_READ.replace("time.sleep(0.3)", "s.recv(65536)")


def request(user: str) -> str:
    return wire.request("GET", "/api/me", {"Authorization": basic(user)}).decode()


def connect(vigil: Vigil, user: str) -> socket.socket:
    """A keep-alive connection that made one authenticated request (and read it)."""
    s = socket.create_connection((vigil.host, vigil.port), timeout=5)
    s.sendall(request(user).encode())
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    return s


def close_fin(vigil: Vigil, user: str) -> Callable[[], None]:
    return connect(vigil, user).close


def close_rst(vigil: Vigil, user: str) -> Callable[[], None]:
    s = connect(vigil, user)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return s.close


def kill_process(script: str) -> Callable[[Vigil, str], Callable[[], None]]:
    def start(vigil: Vigil, user: str) -> Callable[[], None]:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(vigil.port), request(user)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

        def kill() -> None:
            proc.kill()
            proc.wait()

        return kill

    return start


# (case, how the connection is opened and ended, expected reason, min s, max s)
CASES = [
    ("fin", close_fin, "closed", GRACE - 0.2, GRACE + 1.0),
    ("rst-linger0", close_rst, "lost", 0.0, 0.5),
    ("kill9-unread", kill_process(NO_READ), "lost", 0.0, 0.5),
    ("kill9-all-read", kill_process(READ), "closed", GRACE - 0.2, GRACE + 1.0),
]


@pytest.mark.parametrize(
    ("opener", "reason", "low", "high"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_close_and_reset(
    start_vigil: Callable[..., Vigil],
    opener: Callable[[Vigil, str], Callable[[], None]],
    reason: str,
    low: float,
    high: float,
) -> None:
    vigil = start_vigil(sections=SECTIONS)
    watcher = EventWatcher(vigil.base, basic("alice"))
    try:
        end = opener(vigil, "bob")
        assert watcher.wait_for(presence("join", "bob"), 2) is not None
        started = time.monotonic()
        end()
        leave = watcher.wait_for(presence("leave", "bob"), high + 1)
        assert leave is not None, vigil.log()[-2000:]
        assert leave.data["reason"] == reason
        assert low <= leave.at - started <= high, leave.at - started
    finally:
        watcher.close()
