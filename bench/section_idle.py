"""Section ``idle``: what 500 idle keep-alive connections cost vigil's loop.

Each backend (select, epoll) is measured on authenticated ``/api/me`` at 50
connections, first alone, then while this process holds 500 more
connections open, each after one authenticated request (so vigil has
accepted, authenticated and counted them, and keeps watching them).
select() scans every watched fd on each pass; epoll does not.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping

from bench.harness import Bench, BenchError, loss_check, progress, section
from bench.vigil import Vigil

IDLE = 500
CONNS = 50
PATH = "/api/me"
LOSS_LIMIT = 25.0  # percent, select backend


class IdleConnections:
    """``count`` keep-alive connections that each made one request and now sit idle."""

    def __init__(self, port: int, count: int, headers: Mapping[str, str]) -> None:
        self._port = port
        self._count = count
        self._headers = dict(headers)
        self._conns: list[http.client.HTTPConnection] = []

    def __enter__(self) -> IdleConnections:
        progress(f"opening {self._count} idle connections")
        try:
            for n in range(1, self._count + 1):
                self._conns.append(self._open(n))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _open(self, n: int) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
        try:
            conn.request("GET", PATH, headers=self._headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise BenchError(f"idle connection {n}: {e}") from None
        if resp.status != 200 or resp.will_close:
            conn.close()
            closing = ", Connection: close" if resp.will_close else ""
            raise BenchError(f"idle connection {n}: status {resp.status}{closing}")
        return conn

    def __exit__(self, *exc: object) -> None:
        for conn in self._conns:
            conn.close()
        self._conns.clear()

    def still_open(self) -> int:
        """How many of the connections the server has not closed."""
        count = 0
        for conn in self._conns:
            assert conn.sock is not None
            conn.sock.settimeout(0)  # with a timeout, recv() waits for data despite DONTWAIT
            try:
                closed = conn.sock.recv(1, socket.MSG_PEEK) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            count += not closed
        return count


@section("idle", f"{IDLE} idle keep-alive connections: select() vs epoll")
def idle(bench: Bench) -> None:
    table = bench.table(f"wrk -t1, {CONNS} conns, GET {PATH}, with and without {IDLE} idle conns")
    vigil = Vigil.setup(bench)
    for backend in ("select", "epoll"):
        name = f"vigil {backend}"
        with vigil.start(name, backend=backend) as server:
            alone = bench.measure(server, PATH, CONNS, vigil.auth)
            with IdleConnections(server.port, IDLE, vigil.auth) as conns:
                loaded = bench.measure(server, PATH, CONNS, vigil.auth, f"{name} + {IDLE} idle")
                still_open = conns.still_open()
        table.rows += [alone.row(), loaded.row()]
        check = loss_check(f"{backend}: loss with {IDLE} idle conns", loaded, alone, LOSS_LIMIT)
        if backend == "select":
            bench.report.checks.append(check)
        else:
            bench.report.notes.append(
                f"epoll loses {check.value:.1f} % of req/s ({check.by_cpu:.1f} % by CPU µs/req) "
                f"with {IDLE} idle connections."
            )
        if still_open < IDLE:
            bench.report.notes.append(
                f"{backend}: vigil closed {IDLE - still_open} of the {IDLE} idle connections "
                f"during the run; the figure is not for {IDLE} idle connections."
            )
