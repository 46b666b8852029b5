"""vigil in this process: the real server and connections, no port, no subprocess.

Like microdot's TestClient, but the bytes are real: each ``Client`` is one
end of a loopback TCP connection whose other end the server adopts as if it
had accepted it (from any address the test names; the listener that pairs
them is never the server's), so requests go through the
real parser, gate, handlers, error boundary and end-of-pass writes. The
loop runs one pass at a time (``App.pump``) on a clock the test moves
(``App.advance``), so grace periods and timeouts take no real time.

    app = App(tmp_path)
    c = app.client()
    assert c.get("/api/me").json() == {"user": "alice", "role": "operator"}
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from support import basic, write_config
from wire import Reader, Resp, request

from server import config as configmod
from server.app import Server
from server.loop import Loop
from server.sockopts import configure_accepted


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class App:
    def __init__(
        self,
        directory: Path,
        sections: dict[str, dict[str, Any]] | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.loop = Loop("select", clock=self.clock)
        self.server = Server(configmod.load(write_config(directory, sections, users)), self.loop)
        self.server.start_services()
        self.clients: list[Client] = []
        # TCP, as in production (keepalive, TCP_INFO), from a listener only this process knows
        self._pairing = socket.create_server(("127.0.0.1", 0))

    def client(self, addr: str = "127.0.0.1") -> Client:
        """A new connection, as if accepted from ``addr``."""
        mine = socket.create_connection(self._pairing.getsockname())
        theirs, _ = self._pairing.accept()
        configure_accepted(theirs, self.server.config.presence)
        mine.setblocking(False)
        conn = self.server.adopt(theirs, addr)
        client = Client(self, mine, conn.id)
        self.clients.append(client)
        return client

    def pump(self, passes: int = 5) -> None:
        """Run a few loop passes (what is ready, due timers, end-of-pass writes)."""
        for _ in range(passes):
            self.loop.run_once(0)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move the clock by ``seconds``, running due timers on the way."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now = min(end, self.clock.now + step)
            self.loop.run_once(0)

    def close(self) -> None:
        for client in self.clients:
            client.sock.close()
        self._pairing.close()
        self.server.close()
        self.loop.close()


class Client:
    """One connection to the in-process server."""

    def __init__(self, app: App, sock: socket.socket, conn_id: int) -> None:
        self.app = app
        self.sock = sock
        self.id = conn_id
        self.reader = Reader(sock, self._pump)
        self._idle_passes = 0

    def _pump(self) -> bool:
        self.app.loop.run_once(0)
        self._idle_passes += 1
        return self._idle_passes < 50

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_only: bool = False) -> Resp:
        self._idle_passes = 0
        return self.reader.response(head_only)

    def request(
        self,
        method: str,
        target: str,
        user: str | None = "alice",
        headers: dict[str, str | None] | None = None,
        body: bytes = b"",
        json_body: Any = None,
    ) -> Resp:
        hdrs: dict[str, str | None] = {"Authorization": basic(user) if user else None}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        self.send(request(method, target, {**hdrs, **(headers or {})}, body))
        return self.response(head_only=method == "HEAD")

    def get(self, target: str, user: str | None = "alice", **kw: Any) -> Resp:
        return self.request("GET", target, user, **kw)

    def post(self, target: str, json_body: Any, user: str | None = "alice", **kw: Any) -> Resp:
        return self.request("POST", target, user, json_body=json_body, **kw)

    @property
    def open(self) -> bool:
        """Does the server still hold this connection?"""
        return self.id in self.app.server.conns

    def closed(self) -> bool:
        self._idle_passes = 0
        return self.reader.closed()
