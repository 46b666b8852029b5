"""Socket options, set in one place (boa sets them at accept time too).

Every accepted TCP socket gets TCP_NODELAY (one response is one ``send``,
and Nagle + delayed ACK would otherwise add ~40 ms per keep-alive request)
and the liveness options that let presence notice a pulled cable:

- SO_KEEPALIVE with TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT: an idle
  connection whose peer vanished fails after about idle + intvl * cnt s.
- TCP_USER_TIMEOUT: keepalive probes are never sent while data is
  unacknowledged, so a stream to a pulled cable (SSE) needs this to fail.
  Derived, unless configured, as ``keepintvl * keepcnt`` seconds (2 s by
  default): the kernel clamps the retransmission timer to it, so a stream
  that last sent up to one event interval before the pull fails about 2 s
  after the first unacknowledged byte, inside the 3 s target, while 5 %
  random loss (four losses in a row needed) does not trip it.

``tcp_state`` reads the first byte of TCP_INFO (``tcpi_state``) for the
sweep that drops sockets no longer ESTABLISHED (the original remedy).
"""

from __future__ import annotations

import socket
from typing import Protocol

TCP_ESTABLISHED = 1
TCP_CLOSE_WAIT = 8  # the peer sent FIN: a clean close, not a loss


class Keepalive(Protocol):
    """How soon a silent peer counts as lost (``[presence]``, ``config.PresenceConfig``)."""

    @property
    def keepidle(self) -> int: ...
    @property
    def keepintvl(self) -> int: ...
    @property
    def keepcnt(self) -> int: ...
    @property
    def user_timeout_ms(self) -> int: ...


def user_timeout_ms(cfg: Keepalive) -> int:
    """The TCP_USER_TIMEOUT in ms: configured, or keepintvl * keepcnt seconds."""
    return cfg.user_timeout_ms or cfg.keepintvl * cfg.keepcnt * 1000


def configure_accepted(sock: socket.socket, cfg: Keepalive) -> None:
    """Make ``sock`` non-blocking and set NODELAY, keepalive and user timeout."""
    sock.setblocking(False)
    if sock.family == socket.AF_UNIX:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, cfg.keepidle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, cfg.keepintvl)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cfg.keepcnt)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms(cfg))


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of ``sock`` (1 = ESTABLISHED), or 0 if unknown."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return 0


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (``::``, ``::1``), else AF_INET."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen(host: str, port: int, backlog: int = 511) -> socket.socket:
    """A non-blocking listening TCP socket on ``host``:``port`` (IPv4 or IPv6)."""
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
