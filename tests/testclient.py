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
    assert c.me().json() == {"user": "alice", "role": "operator"}
    stream = app.client()
    stream.get("/api/events")          # the head; then, after anything happens:
    [e.type for e in stream.events()]  # ["reset", ...]

Requests are ``wire.Client``'s (``request``, ``get``, ``post``, ``me``,
``online``, ``post_chats``), as over a real socket (``wire.Remote``).

Devices: ``app.device("lamp-1")`` is a ``FakeDevice`` that meets the real
control channel at its message level (a proven hello, results, telemetry,
a lost association), since this process has no SCTP; tests/sctp runs the
real agent over kernel SCTP.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from server import config as configmod
from server.app import Server
from server.base.loop import Loop
from server.base.sockopts import configure_accepted
from server.link.entities import Entity
from tests.fakedevice import LAMP, FakeDevice
from tests.support import audit_records, write_config
from tests.wire import Client as WireClient
from tests.wire import Event, Reader, Resp, SSEParser


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
        self.directory = directory
        self.clock = FakeClock()
        self.loop = Loop("select", clock=self.clock)
        self.server = Server(configmod.load(write_config(directory, sections, users)), self.loop)
        self.server.start_services()
        self.clients: list[Client] = []
        # TCP, as in production (keepalive, TCP_INFO), from a listener only this process knows
        self._pairing = socket.create_server(("127.0.0.1", 0))
        self._closed = False

    def client(self, addr: str = "127.0.0.1") -> Client:
        """A new connection, as if accepted from ``addr``."""
        mine = socket.create_connection(self._pairing.getsockname())
        theirs, _ = self._pairing.accept()
        configure_accepted(theirs, self.server.config.presence)
        mine.setblocking(False)
        conn = self.server.acceptor.adopt(theirs, addr)
        client = Client(self, mine, conn.id)
        self.clients.append(client)
        return client

    def device(
        self, device_id: str, described: tuple[Entity, ...] = LAMP, answers: bool = True
    ) -> FakeDevice:
        """A device online now (see the module header and ``FakeDevice``): the reference
        agent's lamp unless ``described`` says what it is made of."""
        return FakeDevice(self, device_id, described, answers)

    def records(self, kind: str) -> list[dict[str, Any]]:
        """The audit records of ``kind`` kept in memory, oldest first."""
        return [r for r in reversed(audit_records(self.server.audit)) if r["type"] == kind]

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
        if self._closed:
            return
        self._closed = True
        for client in self.clients:
            client.sock.close()
        self._pairing.close()
        self.server.close()
        self.loop.close()


class Client(WireClient):
    """One connection to the in-process server."""

    def __init__(self, app: App, sock: socket.socket, conn_id: int) -> None:
        self.app = app
        self.sock = sock
        self.id = conn_id
        self.reader = Reader(sock, self._pump)
        self._idle_passes = 0
        self._sse = SSEParser(stamp=app.clock)

    def _pump(self) -> bool:
        """One pass of the server; False once 50 passes brought this client nothing. The
        last 10 wait up to 5 ms each for the kernel (a loaded machine moves loopback bytes
        late), so "nothing more" costs at most 50 ms and is not said too early."""
        self.app.loop.run_once(0 if self._idle_passes < 40 else 0.005)
        self._idle_passes += 1
        return self._idle_passes < 50

    def send(self, data: bytes) -> None:
        """All of ``data``, running the server while the socket buffer is full."""
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                self.app.loop.run_once(0)

    def response(self, head_only: bool = False) -> Resp:
        self._idle_passes = 0
        return self.reader.response(head_only)

    def poll(self) -> bytes:
        """Run a few passes, then take what the server sent so far (never waits)."""
        self.app.pump()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            except ConnectionResetError:
                data = b""
            if not data:
                self.reader.eof = True
                break
            self.reader.buf += data
        return self.reader.buf

    def events(self) -> list[Event]:
        """The events and comments a stream sent since the last call (after ``poll``).

        The stream's ``retry:`` is ``self.retry`` once it has come.
        """
        self.poll()
        out = []
        while (piece := self.reader.buffered_chunk()) is not None:
            out += self._sse.feed(piece.decode("utf-8"))
        return out

    @property
    def retry(self) -> int | None:
        return self._sse.retry

    def close(self) -> None:
        """Close this end (FIN) and let the server see it now, on the test's clock."""
        self.sock.close()
        self.app.pump()

    def reset(self) -> None:
        """Drop this end with an RST: the server sees a lost connection."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    @property
    def open(self) -> bool:
        """Does the server still hold this connection?"""
        return self.id in self.app.server.conns

    def closed(self) -> bool:
        self._idle_passes = 0
        return self.reader.closed()


def online(app: App, user: str) -> Client:
    """A connection of ``user``, online (its first request answered)."""
    c = app.client()
    assert c.me(user).status == 200
    return c


def watch(app: App, user: str = "vera") -> Client:
    """``user``'s event stream, its reset read."""
    c = app.client()
    assert c.get("/api/events", user).status == 200
    assert [e.type for e in c.events()] == ["reset"]
    return c
