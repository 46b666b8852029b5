"""End-to-end: the allow-list, checked per address at accept.

127.0.0.2 is a second loopback address on Linux: binding the client to it
shows that the allow-list is checked per address, on the real accept path
of a vigil process. Lockout, roles and cross-site requests, in-process:
tests/test_access.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.support import Vigil, basic
from tests.wire import Remote, request


def _refused(vigil: Vigil, source: str) -> bool:
    """True if a connection from ``source`` is closed without any answer."""
    sock = socket.socket()
    sock.settimeout(3)
    sock.bind((source, 0))
    sock.connect((vigil.host, vigil.port))
    try:
        sock.sendall(request("GET", "/healthz", {"Authorization": None}))
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        data = b""
    finally:
        sock.close()
    if data:
        assert data.startswith(b"HTTP/1.1 200"), data
    return not data


def test_allow_list_closes_other_addresses_at_once(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(sections={"auth": {"allow": ["10.0.0.0/8", "127.0.0.2/32"]}})
    started = time.monotonic()
    assert _refused(vigil, "127.0.0.1")
    assert time.monotonic() - started < 1
    assert not _refused(vigil, "127.0.0.2")
    with httpx.Client(base_url=vigil.base, timeout=5) as c, pytest.raises(httpx.TransportError):
        c.get("/api/me", headers={"Authorization": basic("alice")})  # a real client, refused
    with Remote(vigil.host, vigil.port, source="127.0.0.2") as c:
        assert c.me().json() == {"user": "alice", "role": "operator"}
    assert vigil.proc.poll() is None
    refusals = [line for line in vigil.log().splitlines() if "allow" in line]
    assert any("127.0.0.1" in line for line in refusals), vigil.log()
    assert not any("127.0.0.2" in line for line in refusals)


def test_allow_list_excluding_loopback_refuses_everyone_here(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil(sections={"auth": {"allow": ["10.0.0.0/8"]}})
    for source in ("127.0.0.1", "127.0.0.2"):
        assert _refused(vigil, source)
    assert vigil.proc.poll() is None
