"""Pure: one connection's core (``server.web.exchange.Exchange``), driven by bytes and ``now``.

No socket, no loop, no clock: the tests hand the core what a socket would
have read and the time, play the host's end of the pass (``flush`` of each
connection that asked for it), and look at what the core asked its shell to
do: the bytes written (one ``send`` a pass), our FIN, the watch mask, the
close. The end-to-end tests with sockets (``test_requests``,
``test_robustness``) cover the same behaviour through the whole server.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.feed.bus import HEARTBEAT
from server.web.exchange import (
    LINGER_BYTES,
    LINGER_SECONDS,
    OUT_HIGH_WATER,
    READ,
    WRITE,
    Exchange,
    Proceed,
    Settings,
    State,
)
from server.web.outcomes import Deferred, Stream
from server.web.protocol import Limits, Request, Response

HEADER_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 60.0
SSE_BUFFER = 4096
BIG = 100_000  # the body of /big
DATE = b"Thu, 03 Dec 2026 09:00:00 GMT"
SETTINGS = Settings(
    Limits(max_body=65536),
    header_timeout=HEADER_TIMEOUT,
    keepalive_timeout=KEEPALIVE_TIMEOUT,
    max_sse_buffer=SSE_BUFFER,
    handshake_timeout=5.0,
)


@dataclass(frozen=True)
class User:
    name: str


ALICE = User("alice")
NO = Response(401, (("Content-Type", "application/json"),), b'{"error": "who are you?"}')


class Wire:
    """The shell as the core sees it: a kernel that takes ``room`` bytes (None: all)."""

    def __init__(self) -> None:
        self.out = bytearray()  # what the peer has been sent
        self.sends = 0
        self.room: int | None = None
        self.fin = False
        self.masks: list[int] = []
        self.released = False
        self.goodbye = b""

    def write(self, data: bytes | bytearray) -> int | None:
        self.sends += 1
        n = len(data) if self.room is None else min(self.room, len(data))
        if self.room is not None:
            self.room -= n
        self.out += data[:n]
        return n

    def shut_write(self) -> bool:
        self.fin = True
        return True

    def watch(self, mask: int) -> None:
        self.masks.append(mask)

    def release(self, goodbye: bytes) -> None:
        self.released = True
        self.goodbye = goodbye

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


@dataclass
class Host:
    """The server's side: a gate that wants ``Authorization: ok`` and four routes."""

    settings: Settings = SETTINGS
    stopping: bool = False
    pending: list[Any] = field(default_factory=list)
    closed: list[bool] = field(default_factory=list)  # lost, per close
    access: list[tuple[str | None, int]] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)  # targets admitted or refused
    handled: list[bytes] = field(default_factory=list)  # bodies the handlers saw
    streams: list[Any] = field(default_factory=list)  # push functions of open streams
    detached: int = 0
    parked: list[Any] = field(default_factory=list)  # done functions of deferred answers

    def admit(self, conn: Any, req: Request) -> tuple[User | None, Response | Proceed]:
        self.heads.append(req.target)
        if req.headers.get("authorization") != "ok":
            return None, NO
        return ALICE, self._route

    def _route(self, req: Request) -> Any:
        self.handled.append(req.body)
        if req.path == "/big":
            return Response(200, (), b"x" * BIG)
        if req.path == "/events":
            return Stream((("Content-Type", "text/event-stream"),), self._open)
        if req.path == "/command":
            return Deferred(self.parked.append, lambda v: Response(200, (), f"done {v}".encode()))
        return Response(200, (), b"hello " + req.target.encode())

    def _open(self, push: Any) -> Any:
        self.streams.append(push)

        def detach() -> None:
            self.detached += 1

        return detach

    def date(self) -> bytes:
        return DATE

    def log_access(self, conn: Any, req: Request | None, status: int, size: int) -> None:
        self.access.append((req.target if req else None, status))

    def output_pending(self, conn: Any) -> None:
        self.pending.append(conn)

    def connection_closed(self, conn: Any, lost: bool) -> None:
        self.closed.append(lost)


class Core:
    """One core with its wire and host, and the time."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.wire = Wire()
        self.host = Host()
        self.x: Exchange[Wire, User] = Exchange(
            self.host, self.wire, self.wire, "192.0.2.7", None, now, lambda: self.now
        )

    def receive(self, data: bytes, at: float | None = None) -> None:
        if at is not None:
            self.now = at
        self.x.received(data, self.now)

    def end_of_pass(self) -> None:
        """What the host does after the audit fsync: flush each connection that asked."""
        pending, self.host.pending = self.host.pending, []
        for conn in pending:
            assert conn is self.wire
            self.x.flush()

    def tick(self, at: float, alive: bool = True, heartbeat: bool = False) -> None:
        self.now = at
        self.x.tick(at, alive, heartbeat)

    def answers(self) -> list[Answer]:
        return parse(self.wire.take())

    @property
    def open(self) -> bool:
        return not self.wire.released


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(data: bytes) -> list[Answer]:
    """Whole responses (Content-Length framed) in ``data``; a chunked one ends the list."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"no end of head in {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        status = int(lines[0].split()[1])
        if "content-length" not in headers:
            out.append(Answer(status, headers, data))
            break
        size = int(headers["content-length"])
        out.append(Answer(status, headers, data[:size]))
        data = data[size:]
    return out


def get(target: str, auth: str | None = "ok", extra: str = "") -> bytes:
    authorization = f"Authorization: {auth}\r\n" if auth else ""
    return f"GET {target} HTTP/1.1\r\nHost: panel\r\n{authorization}{extra}\r\n".encode()


def post(target: str, body: bytes, auth: str | None = "ok") -> bytes:
    authorization = f"Authorization: {auth}\r\n" if auth else ""
    length = f"Content-Length: {len(body)}\r\n"
    return f"POST {target} HTTP/1.1\r\nHost: panel\r\n{authorization}{length}\r\n".encode() + body


# -- keep-alive and pipelining ------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_in_one_send() -> None:
    c = Core()
    c.receive(get("/a") + get("/b") + get("/c"))
    assert c.wire.out == b"", "nothing is written before the end of the pass"
    assert len(c.host.pending) == 1, "the host is told once"
    c.end_of_pass()
    assert c.wire.sends == 1
    assert [(a.status, a.body) for a in c.answers()] == [
        (200, b"hello /a"),
        (200, b"hello /b"),
        (200, b"hello /c"),
    ]
    assert c.x.state is State.IDLE and c.open
    assert c.x.user == ALICE


def test_a_request_split_across_reads_is_answered_once_whole() -> None:
    c = Core()
    data = get("/split")
    for i in range(0, len(data), 7):
        c.receive(data[i : i + 7])
    c.end_of_pass()
    assert [a.body for a in c.answers()] == [b"hello /split"]
    assert c.x.state is State.IDLE


# -- deadlines ---------------------------------------------------------------------


def test_a_head_not_whole_within_header_timeout_of_its_first_byte_is_408_and_closed() -> None:
    c = Core(now=0.0)
    c.receive(b"GET /slow HTTP/1.1\r\nHost: pa", at=1.0)
    c.receive(b"nel\r\nX-Trickle: 1\r\n", at=9.0)  # more bytes do not move the deadline
    c.tick(1.0 + HEADER_TIMEOUT)
    assert c.x.state is State.READING and c.wire.out == b""
    c.tick(1.0 + HEADER_TIMEOUT + 0.5)
    c.end_of_pass()
    (answer,) = c.answers()
    assert answer.status == 408
    assert not c.open and c.host.closed == [False]


def test_a_pipelined_request_gets_its_own_deadline_from_when_it_began() -> None:
    c = Core(now=0.0)
    c.receive(get("/a") + b"GET /b HTTP/1.1\r\n", at=0.0)
    c.end_of_pass()
    assert [a.body for a in c.answers()] == [b"hello /a"]
    c.tick(HEADER_TIMEOUT + 0.5)
    c.end_of_pass()
    assert [a.status for a in c.answers()] == [408]
    assert not c.open


def test_idle_connections_close_after_header_timeout_unless_authenticated() -> None:
    stranger = Core(now=0.0)
    stranger.receive(get("/a", auth=None))
    stranger.end_of_pass()
    assert [a.status for a in stranger.answers()] == [401]
    stranger.tick(HEADER_TIMEOUT)
    assert stranger.open
    stranger.tick(HEADER_TIMEOUT + 0.5)
    assert not stranger.open and stranger.host.closed == [False]

    alice = Core(now=0.0)
    alice.receive(get("/a"))
    alice.end_of_pass()
    assert [a.status for a in alice.answers()] == [200]
    alice.tick(HEADER_TIMEOUT + 0.5)
    assert alice.open, "a logged-in person's connection waits keepalive_timeout"
    alice.tick(KEEPALIVE_TIMEOUT + 0.5)
    assert not alice.open and alice.wire.out == b"", "an idle close says nothing"


def test_a_connection_the_kernel_lost_closes_as_lost() -> None:
    c = Core()
    c.receive(get("/a"))
    c.end_of_pass()
    c.tick(c.now + 1, alive=False)
    assert not c.open and c.host.closed == [True]


def test_a_peer_lost_on_send_closes_as_lost_and_nothing_more_is_written() -> None:
    c = Core()

    def broken(data: bytes | bytearray) -> int | None:
        c.x.lost("Connection reset by peer")
        return None

    c.wire.write = broken  # type: ignore[method-assign]
    c.receive(get("/a"))
    c.end_of_pass()
    assert c.host.closed == [True] and c.x.state is State.CLOSED


# -- a refused head with a body, and the lingering close --------------------------------


def test_a_refused_body_is_never_parsed_and_the_close_lingers() -> None:
    c = Core(now=0.0)
    smuggled = get("/smuggled")  # a request hidden in the body: must never be answered
    body = smuggled + b"z" * 50
    c.receive(post("/upload", body, auth=None)[: -len(body)] + body[:30])
    c.end_of_pass()
    (answer,) = c.answers()
    assert answer.status == 401 and answer.headers["connection"] == "close"
    assert c.host.heads == ["/upload"] and c.host.handled == []
    assert c.wire.fin and c.open, "our side is shut down; the socket stays to drain"
    c.receive(body[30:], at=1.0)
    c.receive(b"more that follows", at=1.5)
    c.end_of_pass()
    assert c.wire.out == b"" and c.host.heads == ["/upload"]
    c.tick(LINGER_SECONDS - 0.1)
    assert c.open
    c.tick(LINGER_SECONDS + 0.1)
    assert not c.open and c.host.closed == [False]


def test_a_linger_ends_after_linger_bytes() -> None:
    c = Core(now=0.0)
    c.receive(post("/upload", b"x" * 60000, auth=None)[:200])
    c.end_of_pass()
    assert [a.status for a in c.answers()] == [401] and c.wire.fin
    for _ in range(LINGER_BYTES // 65536):
        c.receive(b"x" * 65536)
    assert c.open
    c.receive(b"x" * 65536)
    assert not c.open and c.host.closed == [False]


def test_a_refused_head_without_a_body_keeps_the_connection() -> None:
    c = Core()
    c.receive(get("/a", auth=None) + get("/b"))
    c.end_of_pass()
    assert [(a.status, "connection" in a.headers) for a in c.answers()] == [
        (401, False),
        (200, False),
    ]
    assert c.open and not c.wire.fin


def test_eof_after_the_answer_closes_at_once() -> None:
    c = Core()
    c.receive(get("/a"))
    c.receive(b"")  # FIN before the pass ends: the answer is still written
    assert c.open and c.x.state is State.CLOSING
    c.end_of_pass()
    assert [a.body for a in c.answers()] == [b"hello /a"]
    assert not c.open and c.host.closed == [False]


# -- output backpressure ------------------------------------------------------------


def test_past_out_high_water_nothing_more_is_answered_until_the_client_reads() -> None:
    c = Core()
    c.wire.room = 0  # the client reads nothing: the kernel's buffers are full
    count = 8
    c.receive(get("/big") * count)
    answered = len(c.host.access)
    assert answered == OUT_HIGH_WATER // BIG + 1 < count
    c.end_of_pass()
    assert c.wire.masks == [WRITE], "not read while that much waits; written when it can be"
    c.receive(get("/big"))  # what the client sends meanwhile waits in the session
    assert len(c.host.access) == answered
    received = bytearray()
    for _ in range(50):  # the client reads again: each pass writes, and answers more
        c.wire.room = 65536
        c.x.writable()
        c.end_of_pass()
        received += c.wire.take()
        if len(c.host.access) == count + 1 and c.x.queued == 0:
            break
    answers = parse(bytes(received))
    assert [(a.status, len(a.body)) for a in answers] == [(200, BIG)] * (count + 1)
    assert c.wire.masks[-1] == READ and c.open


def test_bytes_sent_while_busy_past_a_whole_request_close_the_connection() -> None:
    c = Core()
    c.receive(post("/command", b"{}"))
    assert c.x.state is State.PARKED
    limits = c.host.settings.limits
    c.receive(b"x" * (limits.max_target + limits.max_header_bytes + limits.max_body + 1))
    assert not c.open and c.host.closed == [False]


# -- streams ----------------------------------------------------------------------


def test_a_stream_carries_pushed_events_and_heartbeats_until_cut_off() -> None:
    c = Core()
    c.receive(get("/events"))
    c.end_of_pass()
    (head,) = c.answers()
    assert head.status == 200 and head.headers["transfer-encoding"] == "chunked"
    assert c.x.state is State.STREAMING
    (push,) = c.host.streams
    push(b"data: 1\n\n")
    push(b"data: 2\n\n")
    c.end_of_pass()
    assert c.wire.take() == b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n"
    c.tick(c.now + 1, heartbeat=False)
    c.end_of_pass()
    assert c.wire.out == b""
    c.tick(c.now + 1, heartbeat=True)
    c.end_of_pass()
    assert c.wire.take() == b"%x\r\n%s\r\n" % (len(HEARTBEAT), HEARTBEAT)
    c.wire.room = 0  # the client stops reading
    while c.open:
        push(b"data: " + b"x" * 500 + b"\n\n")
    assert c.host.detached == 1 and c.host.closed == [False]


def test_shutdown_ends_a_stream_cleanly() -> None:
    c = Core()
    c.receive(get("/events"))
    c.end_of_pass()
    c.wire.take()
    c.x.shutdown()
    c.end_of_pass()
    assert c.wire.take() == b"0\r\n\r\n"
    assert not c.open and c.host.detached == 1


# -- parked (deferred) answers -------------------------------------------------------


def test_pipelined_requests_wait_while_parked() -> None:
    c = Core()
    c.receive(post("/command", b"{}") + get("/after"))
    c.end_of_pass()
    assert c.wire.out == b"" and c.x.state is State.PARKED
    (done,) = c.host.parked
    done("ok")
    c.end_of_pass()
    assert [a.body for a in c.answers()] == [b"done ok", b"hello /after"]
    assert c.x.state is State.IDLE
    with pytest.raises(RuntimeError, match="answered twice"):
        done("again")


def test_eof_while_parked_is_answered_then_closed() -> None:
    c = Core()
    c.receive(post("/command", b"{}"))
    c.receive(b"")  # the client sent its request and FIN
    assert c.open and c.x.state is State.PARKED
    (done,) = c.host.parked
    done(7)
    c.end_of_pass()
    assert [a.body for a in c.answers()] == [b"done 7"]
    assert not c.open and c.host.closed == [False]


def test_a_deferred_answer_for_a_client_that_has_gone_is_dropped() -> None:
    c = Core()
    c.receive(post("/command", b"{}"))
    c.x.close(lost=True)
    (done,) = c.host.parked
    done(1)
    c.end_of_pass()
    assert c.wire.out == b"" and c.host.closed == [True]


# -- TLS before its handshake ---------------------------------------------------------


def tls_core(now: float = 0.0) -> Core:
    c = Core(now)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: no handshake completes
    c.x = Exchange(c.host, c.wire, c.wire, "192.0.2.7", ctx, now, lambda: c.now)
    return c


def test_no_tls_handshake_within_the_deadline_closes_silently() -> None:
    c = tls_core()
    assert c.x.state is State.HANDSHAKE and c.x.sheddable
    c.tick(SETTINGS.handshake_timeout)
    assert c.open
    c.tick(SETTINGS.handshake_timeout + 0.5)
    assert not c.open and c.wire.out == b"" and c.host.closed == [False]


def test_plain_http_on_the_tls_port_is_closed_unanswered() -> None:
    c = tls_core()
    c.receive(get("/a"))
    assert not c.open and c.host.closed == [False]
    assert not c.wire.out.startswith(b"HTTP"), "at most a TLS alert, never HTTP"
    assert c.host.heads == []
