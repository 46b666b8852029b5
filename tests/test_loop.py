"""The loop: timers in order, cancelled timers dropped, readiness, signals as flags."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from server.base.loop import READ, Loop
from server.base.sockopts import TCP_ESTABLISHED, configure_accepted, tcp_state, user_timeout_ms
from server.config import PresenceConfig


@pytest.fixture(params=["select", "epoll"])
def loop(request: pytest.FixtureRequest) -> Loop:
    return Loop(request.param)


def test_timers_run_in_order_and_cancel(loop: Loop) -> None:
    ran: list[str] = []
    loop.call_later(0.02, lambda: ran.append("b"))
    loop.call_later(0.01, lambda: ran.append("a"))
    loop.call_later(0.015, lambda: ran.append("x")).cancel()
    loop.call_later(0.03, loop.stop)
    loop.run()
    assert ran == ["a", "b"]


def test_readiness_and_failing_callbacks_do_not_stop_the_loop(loop: Loop) -> None:
    a, b = socket.socketpair()
    got: list[bytes] = []

    def on_read(_mask: int) -> None:
        got.append(a.recv(10))
        raise RuntimeError("boom")  # logged, the loop goes on

    loop.register(a, READ, on_read)
    b.send(b"hi")
    loop.call_later(0.05, loop.stop)
    loop.run()
    assert got == [b"hi"]


def test_signal_callbacks_run_in_the_loop(loop: Loop) -> None:
    ran: list[int] = []
    loop.on_signal(signal.SIGUSR1, lambda: (ran.append(1), loop.stop()))
    loop.call_later(0.01, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    loop.call_later(2, loop.stop)
    loop.run()
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    loop.close()
    assert ran == [1]


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown loop backend"):
        Loop("poll")


def test_accepted_sockets_get_liveness_options() -> None:
    cfg = PresenceConfig(keepidle=1, keepintvl=1, keepcnt=2, grace=2, user_timeout_ms=0)
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        configure_accepted(conn, cfg)
        opt = conn.getsockopt
        assert opt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert opt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert opt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
        assert opt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 1
        assert opt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2
        assert opt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2000 == user_timeout_ms(cfg)
        assert tcp_state(conn) == TCP_ESTABLISHED
        client.close()
        conn.close()
