"""HttpSession: bytes in, requests and errors out; responses in, bytes out. No sockets."""

from __future__ import annotations

import pytest

from server.web.protocol import Head, HttpSession, Limits, ProtocolError, Request, Response

LIMITS = Limits(max_target=64, max_header_bytes=1024, max_body=100)
DATE = b"Sat, 21 Nov 2026 06:00:00 GMT"


def session_with(data: bytes) -> HttpSession:
    s = HttpSession(LIMITS)
    s.receive(data)
    return s


def whole(s: HttpSession) -> Request | ProtocolError | None:
    """The next whole request (or error), past its head."""
    item = s.next_request()
    if isinstance(item, Head):
        item = s.next_request()
    assert not isinstance(item, Head)
    return item


def test_simple_get() -> None:
    s = session_with(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\n")
    req = whole(s)
    assert isinstance(req, Request)
    assert (req.method, req.path, req.query, req.body) == ("GET", "/a", "b=1", b"")
    assert req.headers["x-two"] == "1, 2"


def test_body_is_whole_even_when_it_arrives_in_pieces() -> None:
    s = session_with(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    assert isinstance(s.next_request(), Head)
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
    s = session_with(data)
    got = whole(s)
    assert isinstance(got, ProtocolError) and got.status == status
    assert s.wants_close


def test_error_response_can_be_sent_after_a_protocol_error() -> None:
    s = session_with(b"GARBAGE\r\n\r\n")
    assert isinstance(whole(s), ProtocolError)
    out = s.respond(Response(400, body=b"{}"), DATE)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert not s.next_cycle()


def test_one_response_is_one_bytes_with_date_server_and_length() -> None:
    s = session_with(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    whole(s)
    out = s.respond(Response(200, [("Content-Type", "text/plain")], b"hello"), DATE)
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == b"hello"
    assert b"Date: " + DATE in head
    assert b"server: vigil" in head.lower() and b"content-length: 5" in head.lower()


def test_head_gets_length_but_no_body() -> None:
    s = session_with(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    whole(s)
    out = s.respond(Response(200, body=b"hello"), DATE)
    assert out.endswith(b"\r\n\r\n") and b"content-length: 5" in out.lower()


def test_pipelined_requests_come_one_per_cycle() -> None:
    s = session_with(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    first = whole(s)
    assert isinstance(first, Request) and first.path == "/1"
    assert s.next_request() is None  # paused until the first is answered
    s.respond(Response(200), DATE)
    assert s.next_cycle()
    second = whole(s)
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
    whole(s)
    s.respond(Response(200), DATE)
    assert s.next_cycle() is keep


def test_streamed_body_is_chunked() -> None:
    s = session_with(b"GET /e HTTP/1.1\r\nHost: x\r\n\r\n")
    whole(s)
    head = s.respond(Response(200, stream=True), DATE)
    assert b"transfer-encoding: chunked" in head.lower()
    assert s.chunk(b"abc") == b"3\r\nabc\r\n"
    assert s.end_stream() == b"0\r\n\r\n"


def test_idle_until_a_byte_of_the_next_request() -> None:
    s = HttpSession(LIMITS)
    assert s.idle
    s.receive(b"GE")
    assert not s.idle


# -- framing the review found wrong (RFC 9112, RFC 9110) ----------------------------


@pytest.mark.parametrize(
    ("data", "status"),
    [
        # §6.3: both framings: refused, and the connection closes (no request smuggling)
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET ftp://x/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_framing_errors_close(data: bytes, status: int) -> None:
    s = session_with(data + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    got = whole(s)
    assert isinstance(got, ProtocolError) and got.status == status
    out = s.respond(Response(status), DATE)
    assert b"connection: close" in out.lower()
    assert not s.next_cycle()  # the pipelined /next is never answered


def test_absolute_form_target_is_served_with_its_authority_as_host() -> None:
    req = whole(session_with(b"GET http://panel:8080/api/me?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"))
    assert isinstance(req, Request)
    assert (req.path, req.query, req.headers["host"]) == ("/api/me", "x=1", "panel:8080")
    bare = whole(session_with(b"GET https://panel HTTP/1.1\r\nHost: panel\r\n\r\n"))
    assert isinstance(bare, Request) and bare.target == "/"


def test_empty_lines_before_a_request_line_are_ignored() -> None:
    s = session_with(b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    req = whole(s)
    assert isinstance(req, Request) and req.path == "/a"
    s.respond(Response(200), DATE)
    assert s.next_cycle()
    s.receive(b"\r\n")  # a stray CRLF after a request (old clients after a POST body)
    s.receive(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    second = whole(s)
    assert isinstance(second, Request) and second.path == "/b"


def test_the_head_comes_before_the_body_is_read() -> None:
    s = session_with(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    head = s.next_request()
    assert isinstance(head, Head) and head.request.path == "/c"
    assert s.next_request() is None  # the body is still to come


def test_100_continue_only_when_the_client_waits_for_it() -> None:
    s = session_with(
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert isinstance(s.next_request(), Head)
    assert s.continue_body() == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.receive(b"ok")
    req = s.next_request()
    assert isinstance(req, Request) and req.body == b"ok"
    plain = session_with(b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert isinstance(plain.next_request(), Head)
    assert plain.continue_body() == b""


def test_a_refused_head_with_a_body_closes_without_reading_it() -> None:
    s = session_with(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n")
    assert isinstance(s.next_request(), Head)
    s.refuse_body()
    out = s.respond(Response(401), DATE)
    assert out.startswith(b"HTTP/1.1 401 ") and b"connection: close" in out.lower()
    assert not s.next_cycle()


def test_a_refused_head_without_a_body_keeps_the_connection() -> None:
    s = session_with(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(s.next_request(), Head)
    s.refuse_body()
    out = s.respond(Response(401), DATE)
    assert b"connection: close" not in out.lower()
    assert s.next_cycle()
    second = whole(s)
    assert isinstance(second, Request) and second.path == "/d"


def test_a_reason_phrase_for_every_status() -> None:
    s = session_with(b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")
    whole(s)
    assert s.respond(Response(501), DATE).startswith(b"HTTP/1.1 501 Not Implemented\r\n")


def test_chunked_framing_is_bounded_on_the_wire() -> None:
    """Bodies of one-byte chunks: 6 wire bytes a byte; at most 2 * max_body of framing."""
    limits = Limits(max_body=2000)
    s = HttpSession(limits)
    s.receive(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(s.next_request(), Head)
    s.receive(b"1\r\nz\r\n" * 1500)  # 9,000 wire bytes for a 1,500-byte body
    got = s.next_request()
    assert isinstance(got, ProtocolError) and got.status == 413


def _chunked(chunks: int) -> bytes:
    return (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1\r\nz\r\n" * chunks
        + b"0\r\n\r\n"
    )


def test_a_body_of_many_chunks_costs_what_h11_alone_costs() -> None:
    """The body was summed anew at every chunk: 16,000 one-byte chunks took 3.4 s, 12x h11.

    Compared with h11 parsing the same bytes in this run (a ratio, not a time).
    """
    import time

    import h11

    data = _chunked(16000)

    def h11_alone() -> float:
        started = time.perf_counter()
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
        return time.perf_counter() - started

    def ours() -> float:
        started = time.perf_counter()
        s = HttpSession(Limits(max_body=65536))
        s.receive(data)
        req = whole(s)
        assert isinstance(req, Request) and req.body == b"z" * 16000
        return time.perf_counter() - started

    floor = min(h11_alone() for _ in range(3))
    assert min(ours() for _ in range(3)) < 3 * floor + 0.05
