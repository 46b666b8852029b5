"""HttpSession: bytes in, requests and errors out; responses in, bytes out. No sockets."""

from __future__ import annotations

import pytest

from server.protocol import HttpSession, Limits, ProtocolError, Request, Response

LIMITS = Limits(max_target=64, max_header_bytes=1024, max_body=100)
DATE = b"Sat, 21 Nov 2026 06:00:00 GMT"


def session_with(data: bytes) -> HttpSession:
    s = HttpSession(LIMITS)
    s.receive(data)
    return s


def test_simple_get() -> None:
    s = session_with(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
    req = s.next_request()
    assert isinstance(req, Request)
    assert (req.method, req.path, req.query, req.body) == ("GET", "/a", "b=1", b"")
    assert req.headers["x-two"] == "1, 2"


def test_body_is_whole_even_when_it_arrives_in_pieces() -> None:
    s = session_with(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    assert s.next_request() is None
    s.receive(b"56789")
    req = s.next_request()
    assert isinstance(req, Request) and req.body == b"0123456789"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /" + b"a" * 2000, 414),  # the request line never ends
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 2000, 431),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"65\r\n" + b"z" * 101 + b"\r\n",
            413,
        ),
    ],
)
def test_errors_carry_their_status(data: bytes, status: int) -> None:
    got = session_with(data).next_request()
    assert isinstance(got, ProtocolError) and got.status == status


def test_error_response_can_be_sent_after_a_protocol_error() -> None:
    s = session_with(b"GARBAGE\r\n\r\n")
    assert isinstance(s.next_request(), ProtocolError)
    out = s.respond(Response(400, body=b"{}"), DATE)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert not s.next_cycle()


def test_one_response_is_one_bytes_with_date_server_and_length() -> None:
    s = session_with(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.next_request()
    out = s.respond(Response(200, [("Content-Type", "text/plain")], b"hello"), DATE)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"hello"
    assert b"Date: " + DATE in head
    assert b"server: vigil" in head.lower() and b"content-length: 5" in head.lower()


def test_head_gets_length_but_no_body() -> None:
    s = session_with(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.next_request()
    out = s.respond(Response(200, body=b"hello"), DATE)
    assert out.endswith(b"\r\n\r\n") and b"content-length: 5" in out.lower()


def test_pipelined_requests_come_one_per_cycle() -> None:
    s = session_with(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.next_request()
    assert isinstance(first, Request) and first.path == "/1"
    assert s.next_request() is None  # paused until the first is answered
    s.respond(Response(200), DATE)
    assert s.next_cycle()
    second = s.next_request()
    assert isinstance(second, Request) and second.path == "/2"


@pytest.mark.parametrize(
    ("request_head", "keep"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
    ],
)
def test_keep_alive_follows_the_request(request_head: bytes, keep: bool) -> None:
    s = session_with(request_head)
    s.next_request()
    s.respond(Response(200), DATE)
    assert s.next_cycle() is keep


def test_streamed_body_is_chunked() -> None:
    s = session_with(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
    s.next_request()
    head = s.respond(Response(200, stream=True), DATE)
    assert b"transfer-encoding: chunked" in head.lower()
    assert s.chunk(b"abc") == b"3\r\nabc\r\n"
    assert s.end_stream() == b"0\r\n\r\n"


def test_idle_until_a_byte_of_the_next_request() -> None:
    s = HttpSession(LIMITS)
    assert s.idle
    s.receive(b"GE")
    assert not s.idle
