"""In-process: what one client cannot make vigil do (the outside attack campaign of issue 17).

Each test reproduces one finding of the campaign through the real parser,
gate, handlers and connections (``tests/testclient.py``) and checks what a
person would notice: the answer, that the server goes on serving everyone
else, and that no traceback reaches the log. The fuzzer
(``tests/test_fuzz.py``) keeps the same cases as regressions among
generated ones; the process-level findings (file descriptors, memory under
attack) are in ``tests/test_budgets_e2e.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator

import pytest

from server.people import auth
from tests.support import audit_records, basic
from tests.testclient import App
from tests.wire import request


def still_serving(app: App) -> None:
    assert app.client().me().status == 200


CHUNKED_HEAD = "POST /api/chat HTTP/1.1\r\nHost: vigil.test\r\nTransfer-Encoding: chunked\r\n"


# -- anyone, without logging in ----------------------------------------------------


def test_an_unauthenticated_body_is_refused_at_the_head_and_never_read(
    app: App, no_tracebacks: None
) -> None:
    """16,000 one-byte chunks once stalled everyone 3.4 s before the 401: now the 401
    (and the close) comes from the head alone, before a byte of the body is sent."""
    c = app.client()
    c.send(f"{CHUNKED_HEAD}Content-Type: application/json\r\n\r\n".encode())
    resp = c.response()
    assert resp.status == 401
    assert resp.headers["connection"] == "close"
    c.send(b"1\r\nz\r\n" * 16000)  # what it still sends is discarded, never parsed
    assert c.closed()
    still_serving(app)


@pytest.fixture
def redirecting(make_app: Callable[..., App]) -> Iterator[App]:
    """An App with TLS on as far as the gate knows: plain HTTP from elsewhere redirects."""
    app = make_app()
    with socket.create_server(("127.0.0.1", 0)) as https:
        app.server.gate.https_port = https.getsockname()[1]  # the port the redirect names
        yield app


def test_a_redirect_to_https_is_decided_at_the_head(redirecting: App, no_tracebacks: None) -> None:
    c = redirecting.client("192.168.1.20")
    c.send(f"{CHUNKED_HEAD}\r\n".encode())
    resp = c.response()
    assert resp.status == 308 and resp.headers["connection"] == "close"


@pytest.mark.parametrize("value", [b"Basic \xb2", b"Basic \xff\xfe", b"\xb2 abc", b"Basic "])
def test_a_non_ascii_or_empty_authorization_is_a_401(
    app: App, no_tracebacks: None, value: bytes
) -> None:
    c = app.client()
    c.send(b"GET /api/me HTTP/1.1\r\nHost: vigil.test\r\nAuthorization: " + value + b"\r\n\r\n")
    assert c.response().status == 401
    still_serving(app)


def test_re_spelled_credentials_cost_one_password_check(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``basic``, ``BASIC``, extra spaces: 250 spellings once cost 14.3 s of scrypt."""
    checks = []
    real = auth.verify_password

    def counting(password: str, stored: str) -> bool:
        checks.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    token = basic("bob").partition(" ")[2]
    spellings = [
        f"{scheme}{' ' * spaces}{token}{' ' * trailing}"
        for scheme in ("Basic", "basic", "BASIC", "bAsIc")
        for spaces in (1, 2, 5)
        for trailing in (0, 1, 3)
    ]
    c = app.client()
    for value in spellings:
        assert c.me("bob", headers={"Authorization": value}).status == 200
    assert len(checks) == 1


# -- any logged-in person, a viewer included ----------------------------------------


def test_one_person_cannot_take_the_connections_others_need(
    make_app: Callable[..., App], no_tracebacks: None
) -> None:
    """768 event streams from one person once locked out everyone else."""
    app = make_app({"limits": {"connections_per_user": 6}})
    streams = []
    for _ in range(10):
        s = app.client()
        s.get("/api/events", user="vera")
        streams.append(s)
    app.pump()
    assert [s.open for s in streams] == [False] * 4 + [True] * 6  # her oldest went first
    assert len(app.server.presence.connections("vera")) == 6
    bob = app.client()
    assert bob.me("bob").status == 200  # others get in


def test_a_person_with_only_busy_connections_gets_a_429(
    make_app: Callable[..., App], no_tracebacks: None
) -> None:
    app = make_app({"limits": {"connections_per_user": 2}})
    busy = []
    for _ in range(2):  # heads admitted, bodies still coming: busy, not shed
        c = app.client()
        c.send(request("POST", "/api/chat", {"Content-Type": "application/json"})[:-2])
        c.send(b"Content-Length: 50\r\n\r\n{")
        busy.append(c)
    app.pump()
    third = app.client()
    resp = third.me()
    assert resp.status == 429 and "connections" in resp.json()["error"]
    assert int(resp.headers["retry-after"]) >= 1
    assert all(c.open for c in busy)


def test_chat_is_rationed_per_person_viewers_included(
    make_app: Callable[..., App], no_tracebacks: None
) -> None:
    """3,316 messages a second were accepted from one connection (1.6 MB/s of audit)."""
    app = make_app({"limits": {"chat_burst": 3, "chat_per_minute": 60}})
    vera, bob = app.client(), app.client()
    statuses = [vera.post("/api/chat", {"text": f"hi {i}"}, user="vera").status for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # viewers chat too: they coordinate
    refused = vera.post("/api/chat", {"text": "again"}, user="vera")
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"]) >= 1
    assert bob.post("/api/chat", {"text": "mine"}, user="bob").status == 200  # per person
    app.advance(1.5)
    assert vera.post("/api/chat", {"text": "later"}, user="vera").status == 200
    texts = [r["text"] for r in audit_records(app.server.audit, 50) if r["type"] == "chat"]
    assert "again" not in texts  # a refused message is not written anywhere


def test_commands_are_rationed_per_person(make_app: Callable[..., App]) -> None:
    app = make_app({"limits": {"command_burst": 2, "commands_per_second": 1}})
    app.device("lamp-1")
    c = app.client()
    path = "/api/devices/lamp-1/commands"
    statuses = [c.post(path, {"entity": "power", "value": True}).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    app.advance(1.1)
    assert c.post(path, {"entity": "power", "value": False}).status == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"entity": "brightness", "value": NaN}', "NaN is not JSON"),
        (b'{"entity": "brightness", "value": -Infinity}', "Infinity is not JSON"),
        (b'{"entity": "power", "value": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested deeper"),
        (b'{"entity": "power", "value": ' + b"[" * 500 + b"]" * 500 + b"}", "nested deeper"),
        (b'{"entity": "power", "value": [' + b",".join([b"[]"] * 21000) + b"]}", "a number"),
    ],
    ids=["nan", "infinity", "nested-1000", "nested-500", "21000-lists"],
)
def test_command_bodies_that_are_not_strict_small_json_are_400(
    app: App, no_tracebacks: None, body: bytes, words: str
) -> None:
    """A viewer's refused command once put NaN in the audit log (the panel's feed broke)
    and 21,000 empty lists into memory (1.5 MB a record); 1,000 levels were a 500."""
    app.device("lamp-1")
    c = app.client()
    headers = {"Content-Type": "application/json", "Authorization": basic("vera")}
    c.send(request("POST", "/api/devices/lamp-1/commands", headers, body))
    resp = c.response()
    assert resp.status == 400 and words in resp.json()["error"]
    audit = app.client().get("/api/audit?limit=1000")
    json.loads(audit.body, parse_constant=lambda name: pytest.fail(f"{name} in /api/audit"))


@pytest.mark.parametrize("value", ["\xb2", "\xb9", "1" * 5000, "-1", " 12x"])
def test_an_odd_last_event_id_starts_the_stream_afresh(
    app: App, no_tracebacks: None, value: str
) -> None:
    """``Last-Event-ID: ²`` (``isdigit`` says yes, ``int`` no) once killed the stream."""
    c = app.client()
    c.send(request("GET", "/api/events", {"Last-Event-ID": value}))
    assert c.response(head_only=True).status == 200
    assert [e.type for e in c.events()][:1] == ["reset"]


# -- HTTP framing --------------------------------------------------------------------


def test_content_length_with_chunked_is_refused_and_closed(app: App, no_tracebacks: None) -> None:
    """RFC 9112 §6.3; answering the pipelined second request would split one request in two."""
    c = app.client()
    c.send(
        b"POST /api/chat HTTP/1.1\r\nHost: vigil.test\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\nAuthorization: " + basic("alice").encode() + b"\r\n\r\n"
        b"0\r\n\r\n" + request("GET", "/api/me")
    )
    resp = c.response()
    assert resp.status == 400 and resp.headers["connection"] == "close"
    assert c.closed() and c.reader.buf == b""  # the second request was never answered


def test_expect_100_continue_is_answered_before_the_body(app: App) -> None:
    """curl waited a second for it on every upload."""
    c = app.client()
    body = json.dumps({"text": "with expect"}).encode()
    headers = {"Content-Type": "application/json", "Expect": "100-continue"}
    c.send(request("POST", "/api/chat", {**headers, "Content-Length": str(len(body))}))
    assert c.response().status == 100  # the interim answer, before any byte of the body
    c.send(body)
    assert c.response().status == 200


def test_expect_100_continue_without_credentials_gets_the_401_instead(app: App) -> None:
    c = app.client()
    headers = {"Expect": "100-continue", "Content-Length": "10", "Authorization": None}
    c.send(request("POST", "/api/chat", headers))
    resp = c.response()
    assert resp.status == 401 and resp.headers["connection"] == "close"


def test_an_absolute_form_target_is_served(app: App) -> None:
    """RFC 9112 §3.2.2: a server MUST accept it (it was a 404)."""
    c = app.client()
    c.send(request("GET", "http://vigil.test/api/me"))
    resp = c.response()
    assert resp.status == 200 and resp.json()["user"] == "alice"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\r\n" + request("GET", "/api/me"), 200),  # RFC 9112 §2.2: ignore a leading CRLF
        (request("GET", "/api/me#top"), 400),
        (request("GET", "/api/me").replace(b"HTTP/1.1", b"HTTP/2.0"), 505),
        (request("BREW", "/api/me"), 501),
    ],
    ids=["leading-crlf", "fragment", "http2", "unknown-method"],
)
def test_request_lines(app: App, data: bytes, status: int) -> None:
    c = app.client()
    c.send(data)
    resp = c.response()
    assert resp.status == status
    assert resp.body == b"" or resp.json()


# -- weaknesses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example/p?", "a b", "x@evil.example", "evil.example:1/x", "[::1", ""]
)
def test_the_https_redirect_never_takes_a_malformed_host(redirecting: App, host: str) -> None:
    c = redirecting.client("192.168.1.20")
    c.send(request("GET", "/p", {"Host": host or None}))
    resp = c.response()
    assert resp.status in (308, 400)
    if resp.status == 308:
        location = resp.headers["location"]
        assert location.startswith("https://127.0.0.1:") and location.endswith("/p")


def test_a_cross_site_image_does_not_log_its_victim_in(app: App) -> None:
    """``<img src=https://pi/api/me>`` with the browser's cached credentials."""
    c = app.client()
    headers = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "no-cors",
        "Sec-Fetch-Dest": "image",
    }
    assert c.get("/api/me", headers=headers).status == 403
    assert app.server.presence.online() == ()
    assert not [r for r in audit_records(app.server.audit, 10) if r["type"] == "login"]
    # a link from elsewhere that opens the panel still works
    nav = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document",
    }
    assert app.client().get("/api/me", headers=nav).status == 200


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://vigil.test", 200), ("https://vigil.test", 403), ("http://evil.test", 403)],
)
def test_the_origin_check_compares_the_scheme(app: App, origin: str, status: int) -> None:
    c = app.client()  # plain HTTP (loopback)
    assert c.post("/api/chat", {"text": "hi"}, headers={"Origin": origin}).status == status


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("evil.example", 421),
        ("evil.example:8080", 421),
        ("vigil.test", 200),  # [http] allowed_hosts
        ("VIGIL.test:8443", 200),
        ("192.168.1.5:8443", 200),
        ("[fe80::1]:8443", 200),
        ("localhost", 200),
        (f"{socket.gethostname().partition('.')[0]}.local", 200),
    ],
)
def test_a_host_the_panel_does_not_go_by_is_421(app: App, host: str, status: int) -> None:
    """DNS rebinding: another site's name re-pointed at the panel's address."""
    resp = app.client().get("/api/me", headers={"Host": host})
    assert resp.status == status
    if status == 421:
        assert app.server.presence.online() == ()  # refused before authentication


def test_nothing_is_acknowledged_when_the_audit_fsync_fails(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed fsync once only logged, and the 200 went out for a record maybe not on disk."""
    c = app.client()
    assert c.me().status == 200

    def failing() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(app.server.audit, "sync", failing)
    c.send(
        request(
            "POST",
            "/api/chat",
            {"Content-Type": "application/json"},
            json.dumps({"text": "maybe lost"}).encode(),
        )
    )
    assert c.closed()  # closed, never answered 200
    monkeypatch.undo()
    assert app.client().me().status == 200


def test_aborted_connections_write_no_log_line(app: App, caplog: pytest.LogCaptureFixture) -> None:
    """A flood of connections reset by their clients once wrote an INFO line each."""
    caplog.set_level(logging.INFO, logger="server")
    for _ in range(20):
        c = app.client("10.1.2.3")
        c.send(b"GET /api/me HT")
        c.reset()
    app.pump()
    assert [r.getMessage() for r in caplog.records] == []


def test_a_client_that_pipelines_and_never_reads_cannot_fill_memory(app: App) -> None:
    """40 bytes of request for 30 KB of answer: 2,000 pipelined requests not read would
    queue 60 MB. Past ``OUT_HIGH_WATER`` queued, the connection answers nothing more
    until the client reads; what it keeps sending meanwhile is bounded like a busy one's."""
    import tracemalloc

    c = app.client()
    one = request("GET", "/app.js")
    sent = 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):  # never read: the server's writes fill the kernel buffers
            with contextlib.suppress(BlockingIOError):  # (once the kernel's are full too)
                sent += c.sock.send(one * 100)
            app.pump()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 4 * 1048576, f"{held / 1048576:.1f} MiB held for one client"
    for _ in range(sent // len(one)):  # reading now, every answer comes, in order
        resp = c.response()
        assert resp.status == 200 and len(resp.body) > 20000
    assert c.open
