"""In-process: HTTP errors, keep-alive, pipelining, HEAD, headers and static files.

Requests are raw bytes (``wire.request``) where bytes matter (malformed
heads, traversal paths that an HTTP client would normalise, pipelining),
through the real parser and connections of an in-process server
(``tests/testclient.py``). One server serves the tests of this module; it
has its own static dir with a file outside it (and symlinks pointing
there) that must never be served.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support import basic
from tests.testclient import App, Client
from tests.wire import Resp, request

HEADER_TIMEOUT = 1.5
SECRET = b"TOP-SECRET-outside-static-dir-6c1f"
FILES = {
    "index.html": (b"<!doctype html><title>test panel</title>\n", "text/html"),
    "app.js": (b"console.log('panel');\n", "text/javascript"),
    "style.css": (b"body { color: black; }\n", "text/css"),
    "data.json": (b'{"k": 1}\n', "application/json"),
    "logo.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>\n", "image/svg+xml"),
    "notes.txt": (b"plain notes\n", "text/plain"),
    "icon.png": (b"\x89PNG\r\n\x1a\n-not-really-", "image/png"),
    "sub/index.html": (b"<!doctype html><title>sub</title>\n", "text/html"),
}


def exchange(app: App, data: bytes, head_only: bool = False) -> tuple[Resp, Client]:
    """``data`` sent on a new connection; the first response and the connection."""
    c = app.client()
    c.send(data)
    return c.response(head_only), c


def get(app: App, target: str, headers: Mapping[str, str | None] | None = None) -> Resp:
    return exchange(app, request("GET", target, headers))[0]


def assert_json_error(resp: Resp, status: int) -> None:
    assert resp.status == status, resp
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["cache-control"] == "no-store"
    message = resp.json()["error"]
    assert isinstance(message, str) and message.strip()


def assert_still_serving(app: App) -> None:
    resp = app.client().me()
    assert resp.status == 200 and resp.json() == {"user": "alice", "role": "operator"}


# -- the server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static-requests")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "www"
    for name, (content, _) in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    os.symlink(outside / "secret.txt", root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, static_dir: Path) -> Iterator[App]:
    app = App(
        tmp_path_factory.mktemp("vigil-requests"),
        {
            "http": {
                "static_dir": str(static_dir),
                "header_timeout": HEADER_TIMEOUT,
                "max_body": 65536,
                "max_target": 4096,
                "max_header_bytes": 16384,
            }
        },
        users={"alice": "operator", "vera": "viewer"},
    )
    yield app
    app.close()


# -- error statuses -------------------------------------------------------------------

LONG_TARGET = "/" + "a" * 5000
BIG_HEADER = "x" * 20000

# (id, request bytes, status, extra header that must be present)
ERRORS = [
    ("bad-request-line", b"GARBAGE\r\n\r\n", 400, None),
    ("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    ("header-without-colon", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, None),
    ("http11-without-host", request("GET", "/api/me", {"Host": None}), 400, None),
    ("bad-content-length", request("POST", "/api/chat", {"Content-Length": "abc"}), 400, None),
    ("not-found-file", request("GET", "/no-such-file.html"), 404, None),
    ("not-found-api", request("GET", "/api/no-such-endpoint"), 404, None),
    ("method-on-api", request("DELETE", "/api/me"), 405, "allow"),
    ("unknown-method", request("FOO", "/api/me"), 501, None),
    ("unknown-method-static", request("FOO", "/index.html"), 501, None),
    ("known-method-not-here", request("PATCH", "/index.html"), 405, "allow"),
    ("post-on-static", request("POST", "/index.html", body=b"{}"), 405, "allow"),
    ("put-on-healthz", request("PUT", "/healthz", {"Authorization": None}), 405, "allow"),
    (
        "content-length-over-max",
        request("POST", "/api/chat", {"Content-Length": "100000"}),
        413,
        None,
    ),
    ("long-target", request("GET", LONG_TARGET), 414, None),
    ("huge-header", request("GET", "/api/me", {"X-Big": BIG_HEADER}), 431, None),
    (
        "many-headers",
        request("GET", "/api/me", {f"X-H{i}": "v" * 1000 for i in range(40)}),
        431,
        None,
    ),
    (
        "text-body-on-chat",
        request("POST", "/api/chat", {"Content-Type": "text/plain"}, body=b"hello"),
        415,
        None,
    ),
    (
        "form-body-on-chat",
        request(
            "POST",
            "/api/chat",
            {"Content-Type": "application/x-www-form-urlencoded"},
            body=b"text=hello",
        ),
        415,
        None,
    ),
]


@pytest.mark.parametrize(
    ("data", "status", "header"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_error_status_and_json_body(
    server: App, data: bytes, status: int, header: str | None
) -> None:
    resp, c = exchange(server, data)
    assert_json_error(resp, status)
    if header:
        assert resp.headers[header]
    if status in (400, 413, 414, 431):  # the rest of the stream cannot be trusted: closed
        assert c.closed()
    else:
        assert c.open and c.poll() == b""  # nothing more, and the connection stays
    assert_still_serving(server)


@pytest.mark.parametrize(
    ("method", "target", "allowed"),
    [
        ("DELETE", "/api/me", {"GET", "HEAD"}),
        ("PATCH", "/index.html", {"GET", "HEAD"}),
        ("POST", "/style.css", {"GET", "HEAD"}),
        ("PUT", "/api/chat", {"GET", "HEAD", "POST"}),
        ("GET", "/api/devices/lamp-1/commands", {"POST"}),
    ],
)
def test_405_allow_lists_the_methods_that_work(
    server: App, method: str, target: str, allowed: set[str]
) -> None:
    resp = exchange(server, request(method, target, {"Connection": "close"}))[0]
    assert_json_error(resp, 405)
    assert {m.strip() for m in resp.headers["allow"].split(",")} == allowed


def test_chunked_body_over_max_body_is_413(server: App) -> None:
    c = server.client()
    c.send(
        request(
            "POST",
            "/api/chat",
            {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
    )
    chunk = b"%x\r\n%s\r\n" % (8192, b"a" * 8192)
    try:
        for _ in range(12):  # 96 KiB > max_body (64 KiB)
            c.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the rest is sent
    assert_json_error(c.response(), 413)
    assert c.closed()
    assert_still_serving(server)


def test_408_when_the_head_trickles_past_the_deadline(server: App) -> None:
    """One byte every 0.5 s: each byte is progress, but the head as a whole is late."""
    c = server.client()
    data = request("GET", "/api/me")
    started = server.clock.now
    sent = 0
    for byte in data:
        c.send(bytes([byte]))
        sent += 1
        server.advance(0.5)
        if c.poll():
            break
    elapsed = server.clock.now - started
    assert_json_error(c.response(), 408)
    assert sent < len(data), "the whole head went through before the deadline"
    # due HEADER_TIMEOUT after the first byte, sent by the once-a-second sweep
    assert HEADER_TIMEOUT < elapsed <= HEADER_TIMEOUT + 1.5, elapsed
    assert c.closed()
    assert_still_serving(server)


# -- 401 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic !!!",
        "Basic YWxpY2U=",
        "Basic",
        "Bearer abc",
        basic("alice", "wrong"),
        basic("mallory", "x"),
    ],
    ids=[
        "missing",
        "not-base64",
        "no-colon",
        "no-token",
        "other-scheme",
        "wrong-password",
        "unknown-user",
    ],
)
def test_401_with_a_basic_challenge(server: App, authorization: str | None) -> None:
    resp = get(server, "/api/me", {"Authorization": authorization})
    assert_json_error(resp, 401)
    assert resp.headers["www-authenticate"] == 'Basic realm="vigil", charset="UTF-8"'


def test_healthz_needs_no_credentials(server: App) -> None:
    resp = get(server, "/healthz", {"Authorization": None})
    assert resp.status == 200 and resp.body.strip() == b"ok"


# -- keep-alive, pipelining, HEAD, common headers ---------------------------------------


def test_keep_alive_serves_sequential_requests_on_one_socket(server: App) -> None:
    c = server.client()
    for target, expected in [
        ("/api/me", b'"alice"'),
        ("/app.js", FILES["app.js"][0]),
        ("/api/users", b'"online"'),
        ("/", FILES["index.html"][0]),
    ]:
        resp = c.get(target)
        assert resp.status == 200 and expected in resp.body
        assert resp.headers.get("connection", "").lower() != "close"
    assert c.open


def test_pipelined_requests_are_answered_in_order(server: App) -> None:
    batch = [
        ("GET", "/notes.txt"),
        ("GET", "/api/me"),
        ("HEAD", "/style.css"),
        ("GET", "/no-such-file"),
        ("GET", "/data.json"),
    ]
    c = server.client()
    c.send(b"".join(request(m, t) for m, t in batch))
    got = [c.response(head_only=m == "HEAD") for m, _ in batch]
    assert [r.status for r in got] == [200, 200, 200, 404, 200]
    assert got[0].body == FILES["notes.txt"][0]
    assert got[1].json()["user"] == "alice"
    assert got[2].body == b"" and int(got[2].headers["content-length"]) == len(
        FILES["style.css"][0]
    )
    assert got[4].body == FILES["data.json"][0]
    assert c.poll() == b"" and c.open  # no stray bytes, and the connection stays open


@pytest.mark.parametrize("target", ["/", "/logo.svg", "/api/me", "/api/users"])
def test_head_has_get_headers_and_no_body(server: App, target: str) -> None:
    c = server.client()
    c.send(request("HEAD", target) + request("GET", target))
    head = c.response(head_only=True)
    full = c.response()  # parses only if HEAD sent no body bytes
    assert head.status == full.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) == len(full.body) > 0
    assert head.headers["content-type"] == full.headers["content-type"]


def test_date_and_server_headers(server: App) -> None:
    for target in ["/api/me", "/index.html", "/no-such-file"]:
        resp = get(server, target)
        date = email.utils.parsedate_to_datetime(resp.headers["date"])
        assert resp.headers["date"].endswith(" GMT")
        assert abs(date.timestamp() - time.time()) < 5
        assert resp.headers["server"].startswith("vigil")


@pytest.mark.parametrize("target", ["/api/me", "/api/users", "/api/chat", "/api/no-such"])
def test_api_responses_are_not_cached(server: App, target: str) -> None:
    assert get(server, target).headers["cache-control"] == "no-store"


# -- static files --------------------------------------------------------------------------


def test_slash_serves_index_html(server: App) -> None:
    resp = get(server, "/")
    assert resp.status == 200 and resp.body == FILES["index.html"][0]
    assert get(server, "/sub/").body == FILES["sub/index.html"][0]


@pytest.mark.parametrize(("name", "ctype"), [(n, c) for n, (_, c) in FILES.items()])
def test_content_type_by_file_type(server: App, name: str, ctype: str) -> None:
    resp = get(server, "/" + name)
    assert resp.status == 200 and resp.body == FILES[name][0]
    assert resp.headers["content-type"].split(";")[0].strip() == ctype


def test_etag_and_last_modified_give_304(server: App, static_dir: Path) -> None:
    first = get(server, "/app.js")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.strip('"') and etag != modified
    mtime = (static_dir / "app.js").stat().st_mtime
    assert abs(email.utils.parsedate_to_datetime(modified).timestamp() - int(mtime)) < 1
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"nope", {etag}'},
        {"If-Modified-Since": modified},
    ):
        resp = get(server, "/app.js", headers)
        assert resp.status == 304 and resp.body == b""
        assert resp.headers["etag"] == etag
    older = email.utils.formatdate(mtime - 3600, usegmt=True)
    for headers in ({"If-None-Match": '"something-else"'}, {"If-Modified-Since": older}):
        resp = get(server, "/app.js", headers)
        assert resp.status == 200 and resp.body == FILES["app.js"][0]


def test_a_changed_file_is_served_anew_within_a_second(server: App, static_dir: Path) -> None:
    path = static_dir / "notes.txt"
    before = get(server, "/notes.txt")
    assert before.body == FILES["notes.txt"][0]
    try:
        path.write_bytes(b"changed notes, longer than before\n")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        same = get(server, "/notes.txt", {"If-None-Match": before.headers["etag"]})
        assert same.status == 304  # looked at again at most once a second
        server.advance(1.0)
        after = get(server, "/notes.txt", {"If-None-Match": before.headers["etag"]})
        assert after.status == 200 and after.body == b"changed notes, longer than before\n"
        assert after.headers["etag"] != before.headers["etag"]
        assert get(server, "/notes.txt", {"If-None-Match": after.headers["etag"]}).status == 304
    finally:
        path.write_bytes(FILES["notes.txt"][0])


TRAVERSALS = [
    "/../secret.txt",
    "/../outside/secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/outside/secret.txt",
    "/.%2e/secret.txt",
    "/sub/../../secret.txt",
    "/..%2fsecret.txt",
    "/sub%2f..%2f..%2fsecret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/sub\\..\\..\\secret.txt",
    "//etc/passwd",
    "/%2fetc%2fpasswd",
    "/etc/passwd%00.html",
    "/index.html%00",
    "/leak.txt",
    "/leakdir/secret.txt",
    "/%252e%252e/secret.txt",
    "/%c0%ae%c0%ae/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_never_leaves_static_dir(server: App, target: str) -> None:
    resp = get(server, target)
    assert resp.status in ((404,) if "leak" in target else (400, 404)), resp
    assert SECRET not in resp.body and b"root:" not in resp.body
    assert_still_serving(server)
