"""Hypothesis strategies for vigil's HTTP requests, and a strict reader of its responses.

Strategies (bytes, not ``wire.request``'s text, so that any byte can go
anywhere): ``cases()`` draws pipelines of one to four requests built from
parts (a method and target of the route table, or ``methods`` and
``targets`` apart; ``versions``, ``authorizations``, ``headers``, JSON
``bodies`` framed by ``framed``), cuts their bytes into pieces that the
test sends across loop passes, and sometimes lets fake time pass between
pieces; ``mutants()`` draws one or two sane requests and flips, inserts,
deletes, duplicates or truncates bytes. Each ``Req`` keeps what the
oracles need: whose correct credentials it carries (``users``; empty: it
must not authenticate), whether its framing is exact (``clean``: the next
request's bytes start where the server thinks they do) and whether it is
HEAD.

``read_responses`` parses what the server sent as a strict HTTP/1.1 client
would: the status line, header fields, a body framed by Content-Length
(none for HEAD, 1xx, 204, 304) or chunked (an open stream, which must be
the last response); anything else is a ``Malformed`` error naming the
offending bytes. ``strict_json`` refuses what RFC 8259 does (NaN,
Infinity, text that is not UTF-8).

Big bodies are made from a drawn size, not drawn byte by byte, so an
example of 96 KB costs no more to generate than one of 96 bytes.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.support import password

# -- the parts of a request --------------------------------------------------------------

USERS = ("alice", "bob", "vera")  # operators alice and bob, viewer vera
DEVICE = "lamp-1"  # the fake device the test keeps online
SECRET = b"FUZZ-SECRET-outside-the-static-dir-5d0c"  # in a file no response may contain

KNOWN_METHODS = [b"GET", b"HEAD", b"POST", b"DELETE", b"PUT", b"OPTIONS", b"PATCH"]
ODD_METHODS = [b"TRACE", b"CONNECT", b"FOO", b"BREW", b"PROPFIND", b"get", b"post", b"Get"]
BAD_METHODS = [b"", b"G T", b"GET\x00", b"G\xc3\xa9T", b"\xb2", b"(GET)", b"GET:", b"-" * 300]

API = [
    "/api/me",
    "/api/users",
    "/api/events",
    "/api/devices",
    f"/api/devices/{DEVICE}/commands",
    f"/api/devices/{DEVICE}/lease",
    f"/api/devices/{DEVICE}/telemetry",
    "/api/chat",
    "/api/audit",
    "/healthz",
]
DEVICE_IDS = [DEVICE, "lamp-2", "LAMP-1", "lamp-1%00", "%6camp-1", "..", "lamp-1;x", "a" * 200]
STATIC = ["/", "/index.html", "/app.js", "/style.css", "/favicon.svg", "/sub/", "/nope.png"]
TRAVERSAL = [
    "/../secret.txt",
    "/../../secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/.%2e/secret.txt",
    "/sub/../../secret.txt",
    "/leak.txt",
    "/leakdir/secret.txt",
    "//secret.txt",
    "/./index.html",
    "/index.html/..",
    "/..\\secret.txt",
    "/%5c..%5csecret.txt",
    "/secret.txt%00.html",
    "/%c0%ae%c0%ae/secret.txt",
    "/..",
    "/.",
]
ODD_TARGETS = [
    "*",
    "vigil.test:443",
    "http://vigil.test/api/me",
    "http://vigil.test:8443/api/users",
    "HTTP://VIGIL.TEST/api/me",
    "https://vigil.test/healthz",
    "http://evil.example/api/me",
    "http://vigil.test",
    "http://vigil.test?x",
    "http://alice:pw@vigil.test/api/me",
    "/api/me#",
    "/api/me#frag",
    "/#",
    "#",
    "/index.html#top",
    "/api/me%",
    "/%",
    "/%zz",
    "/%41pi/me",
    "/api/%6De",
    "/api/me/",
    "/api//me",
    "/api/me?",
    "/api",
    "/API/ME",
    "api/me",
]
NON_ASCII_TARGETS = [b"/caf\xc3\xa9", b"/\xff", b"/api/me\x80", b"/\xb2", b"/api/me?x=\xb2"]
SUFFIXES = ["", "", "", "?", "?a=b", "?a", "#x", "/", "?last_event_id=1", ";x", "%20"]
LIMITS = [
    "",
    "0",
    "1",
    "5",
    "50",
    "1000",
    "1001",
    "-1",
    "+5",
    "abc",
    "5.0",
    "1e3",
    " 5",
    "%C2%B2",
    "\xb2",
]

VERSIONS_ODD = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/2", b"HTTP/3.0", b"HTTP/0.9", b"HTTP/1.2"]
VERSIONS_BAD = [b"", b"http/1.1", b"HTTP/11", b"HTTP/1.1 ", b"HTTP/1.1x", b"HTTP/\xb2", b"FTP/1.1"]


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of ``options``, each drawn about ``weight`` times as often as weight 1."""
    # (one_of would not do: it draws each distinct strategy alike, however often it is listed)
    return st.sampled_from([s for w, s in options for _ in range(w)]).flatmap(lambda s: s)


def chance(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws."""
    return st.sampled_from([True] + [False] * (n - 1))


def methods() -> st.SearchStrategy[bytes]:
    return weighted(
        (16, st.sampled_from(KNOWN_METHODS)),
        (2, st.sampled_from(ODD_METHODS)),
        (1, st.sampled_from(BAD_METHODS)),
        (1, st.binary(min_size=1, max_size=12)),
        (1, st.from_regex(rb"\A[A-Za-z!#$%&'*+.^_`|~-]{1,20}\Z")),
    )


@st.composite
def vary(draw: st.DrawFn, path: str, suffix: int = 1) -> str:
    """``path`` with another device id, a query, a suffix (one time in ``suffix``)."""
    if DEVICE in path and draw(chance(5)):
        path = path.replace(DEVICE, draw(st.sampled_from(DEVICE_IDS)))
    if path == "/api/audit" and draw(st.booleans()):
        n = draw(st.one_of(st.sampled_from(LIMITS), st.integers(-10, 2000).map(str)))
        path += f"?limit={n}"
    if path == "/api/events" and draw(chance(4)):
        path += "?last_event_id=" + draw(last_event_ids()).decode("latin-1")
    return path + (draw(st.sampled_from(SUFFIXES)) if draw(chance(suffix)) else "")


def api_target() -> st.SearchStrategy[str]:
    return st.sampled_from(API).flatmap(vary)


# Each method with a path it is meant for (the route table of server/web/api.py, and files)
ROUTES = [
    *[(b"GET", p) for p in API if not p.endswith(("/commands", "/lease"))],
    (b"POST", f"/api/devices/{DEVICE}/commands"),
    (b"POST", f"/api/devices/{DEVICE}/commands"),
    (b"POST", f"/api/devices/{DEVICE}/lease"),
    (b"DELETE", f"/api/devices/{DEVICE}/lease"),
    (b"POST", "/api/chat"),
    (b"POST", "/api/chat"),
    (b"HEAD", "/api/me"),
    (b"HEAD", "/index.html"),
    (b"GET", "/index.html"),
    (b"GET", "/"),
    (b"GET", "/app.js"),
]


@st.composite
def routes(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A method and a target the route table has (varied now and then)."""
    method, path = draw(st.sampled_from(ROUTES))
    return method, draw(vary(path, suffix=4)).encode("latin-1")


def targets() -> st.SearchStrategy[bytes]:
    text = weighted(
        (10, api_target()),
        (3, st.sampled_from(STATIC)),
        (2, st.sampled_from(TRAVERSAL)),
        (3, st.sampled_from(ODD_TARGETS)),
        (1, st.from_regex(r"\A/[!-~]{0,40}\Z")),
        (1, st.integers(4000, 4200).map(lambda n: "/" + "a" * n)),  # around max_target
    )
    return weighted(
        (24, text.map(lambda t: t.encode("latin-1"))),
        (1, st.sampled_from(NON_ASCII_TARGETS)),
        (1, st.binary(max_size=16)),
    )


def versions() -> st.SearchStrategy[bytes]:
    return weighted(
        (20, st.just(b"HTTP/1.1")),
        (2, st.sampled_from(VERSIONS_ODD)),
        (1, st.sampled_from(VERSIONS_BAD)),
        (1, st.from_regex(rb"\AHTTP/[0-9]\.[0-9]\Z")),
    )


# -- credentials ------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    """Authorization header values and whose correct credentials they carry, in any
    spelling (empty: nobody's; then nothing but /healthz may be answered 2xx or 3xx)."""

    values: tuple[bytes, ...]
    users: tuple[str, ...]


def _token(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw)


def _valid(user: str) -> bytes:
    return b"Basic " + _token(f"{user}:{password(user)}")


@st.composite
def authorizations(draw: st.DrawFn) -> Auth:
    user = draw(st.sampled_from(USERS))
    pw = password(user)
    token = _token(f"{user}:{pw}")
    kind = draw(
        weighted(
            (12, st.just("valid")),
            (2, st.just("respelled")),
            (2, st.just("missing")),
            (2, st.just("malformed")),
            (1, st.just("wrong")),
            (1, st.just("twice")),
        )
    )
    if kind == "valid":
        return Auth((_valid(user),), (user,))
    if kind == "respelled":  # RFC 7617: the scheme is case-insensitive; OWS around the value
        scheme = draw(st.sampled_from([b"basic", b"BASIC", b"bAsIc", b"Basic"]))
        gap = draw(st.sampled_from([b" ", b"  ", b"   "]))
        tail = draw(st.sampled_from([b"", b" ", b"\t"]))
        return Auth((scheme + gap + token + tail,), (user,))
    if kind == "missing":
        return Auth((), ())
    if kind == "twice":  # joined "a, b" by the server: one of them, or neither
        other = draw(st.sampled_from(USERS))
        return Auth((_valid(user), _valid(other)), (user, other))
    if kind == "wrong":  # one scrypt each: rare, so that a run stays fast
        wrong = draw(
            st.sampled_from(
                [
                    f"{user}:",
                    f"{user}:wrong",
                    f"{user}:{pw}x",
                    f"{user}:{pw.upper()}",
                    f"{user}:{pw}\x00",  # HMAC pads short keys with zeros: the same key
                    f"{user}:{pw}\x00\x00\x00",
                    f"{user}:{pw[:-1]}",
                    f"{user.upper()}:{pw}",
                    f"{user} :{pw}",
                    f"\x00{user}:{pw}",
                    f"mallory:{pw}",
                ]
            )
        )
        return Auth((b"Basic " + _token(wrong),), ())
    carrying = [  # still the right user and password, in a spelling a server may refuse
        b"Basic " + token.replace(b"=", b""),
        b"Basic " + token + b"====",
        b"Basic " + token + b" extra",
        b"Basic " + token + b"\xb2",
        b"Basic=" + token,
        b"\xb2Basic " + token,
    ]
    nobody = [
        b"",
        b"Basic",
        b"Basic ",
        b"Basic !!!",
        b"Basic \xb2",
        b"Basic " + token[:-4],
        b"Bearer " + token,
        b"Digest username=alice",
        b"Basic " + _token(user),
        b"Basic " + _token(":" + pw),
        b"Basic " + _token(b"alice:\xe9\xff"),
        b"Basic " + _token("alïce:pw"),
        b"Basic " + b"A" * 4000,
    ]
    value = draw(
        st.one_of(
            st.sampled_from(carrying),
            st.sampled_from(nobody),
            # CR and LF end the field (h11 takes a bare LF as a line end, as RFC 9112
            # §2.2 allows): framing, which the mutations below cover, not a credential
            st.binary(max_size=40).map(lambda b: b"Basic " + b.translate(None, b"\r\n")),
            st.binary(max_size=30).map(lambda b: b"Basic " + _token(b)),
        )
    )
    return Auth((value,), (user,) if value in carrying else ())


def last_event_ids() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(
            [b"", b"0", b"1", b"-1", b"\xb2", b"\xc2\xb2", b"\xd9\xa5", b"1e3", b" 7 ", b"0x10"]
        ),
        st.integers(0, 2**70).map(lambda n: str(n).encode()),
        st.integers(1, 6000).map(lambda n: b"9" * n),  # past int()'s 4,300 digits
    )


def header_values(name: bytes) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Zero, one or two ``name`` fields with plausible, odd and hostile values."""
    pools = {
        b"Host": [b"vigil.test:8443", b"127.0.0.1", b"[::1]:8080", b"", b"a b", b"\xe9", b"x, y"],
        b"Origin": [b"http://vigil.test", b"https://evil.example", b"null", b"\xb2", b"vigil.test"],
        b"Sec-Fetch-Site": [b"same-origin", b"cross-site", b"same-site", b"none", b"", b"\xb2"],
        b"Accept": [b"text/html", b"application/json", b"*/*", b"text/event-stream", b"\xff"],
        b"Expect": [b"100-continue", b"100-Continue", b"200-ok", b""],
        b"Connection": [b"close", b"keep-alive", b"Upgrade", b"close, close", b"\xb2"],
        b"If-None-Match": [b"*", b'"x"', b'W/"x"', b'"a", "b"', b"\xb2", b'"' * 100],
        b"If-Modified-Since": [
            b"Thu, 01 Jan 2099 00:00:00 GMT",
            b"Thu, 01 Jan 1970 00:00:00 GMT",
            b"Mon, 99 Foo 2026 99:99:99 GMT",
            b"\xb2",
            b"9" * 400,
        ],
        b"Content-Type": [
            b"application/json",
            b"application/json; charset=utf-8",
            b"APPLICATION/JSON",
            b"text/plain",
            b"application/json, text/plain",
            b"\xb2",
        ],
        b"Range": [b"bytes=0-4", b"bytes=-1", b"bytes=9-1", b"\xb2"],
        b"Upgrade": [b"h2c", b"websocket"],
    }
    one = st.sampled_from(pools[name]) if name != b"Last-Event-ID" else last_event_ids()
    return st.lists(one, max_size=2).map(lambda vs: [(name, v) for v in vs])


OPTIONAL = [
    b"Origin",
    b"Sec-Fetch-Site",
    b"Accept",
    b"Expect",
    b"Connection",
    b"Last-Event-ID",
    b"If-None-Match",
    b"If-Modified-Since",
    b"Range",
    b"Upgrade",
]

junk_header = st.tuples(
    weighted(
        (3, st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}\Z")),
        (1, st.sampled_from([b"", b"Bad Name", b"X:Y", b"X\x00", b"\xb2", b" Host"])),
    ),
    weighted(
        (3, st.from_regex(rb"\A[\x20-\x7e\x80-\xff]{0,60}\Z")),
        (1, st.sampled_from([b"a\x00b", b"a\rb", b" x ", b"\t", b"x" * 9000])),
    ),
)


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """Host, then a few optional fields in any order, perhaps junk."""
    out: list[tuple[bytes, bytes]] = []
    host = draw(weighted((16, st.just("plain")), (1, st.just("odd")), (1, st.just("none"))))
    if host == "plain":
        out.append((b"Host", b"vigil.test"))
    elif host == "odd":
        out += draw(header_values(b"Host"))
    for name in draw(st.lists(st.sampled_from(OPTIONAL), max_size=3, unique=True)):
        out += draw(header_values(name))
    if draw(chance(6)):
        out += draw(st.lists(junk_header, min_size=1, max_size=2))
    return draw(st.permutations(out)) if len(out) > 1 and draw(st.booleans()) else out


# -- bodies ---------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.floats(),  # NaN and ±Infinity come out as bare tokens
    st.text(max_size=20),
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def raw_json(draw: st.DrawFn) -> bytes:
    """JSON text that a strict parser must refuse or that is hard on a naive one."""
    n = draw(st.integers(1, 40000))
    return draw(
        st.sampled_from(
            [
                b"[" * n + b"]" * n,
                b'{"a":' * n + b"1" + b"}" * n,
                b"[" * n,
                b"[" + b"0," * n + b"0]",
                b'{"text":"' + b"\\u00e9" * min(n, 9000) + b'"}',
                b'"' + b"x" * n + b'"',
                b"9" * min(n, 20000),
                b'{"text":"\\ud800"}',
                b'{"text":"\\udfff\\ud800"}',
                b'{"entity":"power","value":"\\ud83d"}',
                b'{"entity":"brightness","value":NaN}',
                b'{"entity":"brightness","value":Infinity}',
                b'{"entity":"brightness","value":1e400}',
                b'{"entity":"brightness","value":-1e400}',
                b'{"entity":"brightness","value":' + b"9" * min(n, 5000) + b"}",
                b'{"entity":"power","entity":"brightness","value":50}',
                b'{"text":"\xff"}',
                b'\xef\xbb\xbf{"text":"bom"}',
                b'{"text":"a"} trailing',
                b'{"text":"a"',
                b"",
                b"null",
                b"[]",
                b'"text"',
                b"{'text': 'single quotes'}",
            ]
        )
    )


def command_bodies() -> st.SearchStrategy[bytes]:
    entity = weighted(
        (6, st.sampled_from(["power", "brightness", "temperature"])),
        (1, st.sampled_from(["", "blink", "power\x00", "pöwer", "POWER", " power", "x" * 33])),
        (1, json_values),
    )
    value = weighted(
        (3, st.booleans()),
        (3, st.one_of(st.integers(-10, 110), st.floats(allow_nan=False, allow_infinity=False))),
        (1, json_values),
    )
    obj = st.fixed_dictionaries({"entity": entity}, optional={"value": value, "extra": json_values})
    return weighted((6, obj.map(_dumps)), (1, json_values.map(_dumps)), (2, raw_json()))


def chat_bodies() -> st.SearchStrategy[bytes]:
    text = weighted(
        (6, st.text(max_size=40)),
        (1, st.sampled_from(["", "   ", "\n", "a" * 500, "a" * 501, "é" * 500, "\x00"])),
        (1, st.integers(0, 20000).map(lambda n: "x" * n)),
        (1, json_values),
    )
    obj = st.fixed_dictionaries({"text": text}, optional={"extra": json_values})
    return weighted(
        (6, st.tuples(obj, st.booleans()).map(lambda t: _dumps(t[0], t[1]))),
        (1, json_values.map(_dumps)),
        (2, raw_json()),
    )


def lease_bodies() -> st.SearchStrategy[bytes]:
    take = st.one_of(st.booleans(), json_values)
    obj = st.fixed_dictionaries({}, optional={"take_over": take, "extra": json_values})
    return weighted((4, obj.map(_dumps)), (1, st.just(b"")), (1, raw_json()))


def bodies(target: bytes) -> st.SearchStrategy[bytes]:
    """A body suited to ``target`` (a command, a chat line, a lease), sometimes anything."""
    path = target.partition(b"?")[0]
    if path.endswith(b"/commands"):
        fitting = command_bodies()
    elif path.endswith(b"/chat"):
        fitting = chat_bodies()
    elif path.endswith(b"/lease"):
        fitting = lease_bodies()
    else:
        fitting = weighted((3, st.just(b"")), (1, json_values.map(_dumps)))
    return weighted(
        (8, fitting),
        (1, raw_json()),
        (1, st.binary(max_size=64)),
        (1, st.integers(0, 100000).map(lambda n: b"a" * n)),  # around max_body
    )


# -- framing -------------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> tuple[bytes, bool]:
    """``body`` as a chunked body (RFC 9112 §7.1) and whether that is well-formed."""
    style = draw(weighted((4, st.just("cuts")), (2, st.just("tiny")), (1, st.just("bad"))))
    if style == "tiny":  # one byte a chunk: ~6 bytes of framing for each byte of body
        pieces = [body[i : i + 1] for i in range(len(body))]
    else:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=6))))
        bounds = [0, *cuts, len(body)]
        pieces = [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    upper = draw(st.booleans())
    ext = draw(st.sampled_from([b"", b"", b";a=b", b";x", b' ;a="q"']))
    out = bytearray()
    for piece in pieces:
        size = b"%X" % len(piece) if upper else b"%x" % len(piece)
        out += size + ext + b"\r\n" + piece + b"\r\n"
    trailer = draw(st.sampled_from([b"", b"", b"X-Trailer: 1\r\n", b"Content-Length: 3\r\n"]))
    out += b"0\r\n" + trailer + b"\r\n"
    if style != "bad":
        return bytes(out), True
    broken = draw(
        st.sampled_from(
            [
                b"zz\r\nab\r\n0\r\n\r\n",
                b"-1\r\nab\r\n0\r\n\r\n",
                b"0x2\r\nab\r\n0\r\n\r\n",
                b"fffffffffffffffffff\r\nab\r\n",
                b"2\r\nabc\r\n0\r\n\r\n",
                b"2\nab\n0\n\n",
                b"2\r\nab",  # never finished: the 408 path
                bytes(out[:-2]),
                bytes(out) + b"0\r\n\r\n",
            ]
        )
    )
    return broken, False


FRAMINGS = [*["length"] * 6, "none", "short", "long", "weird", "chunked", "both", "te"]


@st.composite
def framed(draw: st.DrawFn, body: bytes) -> tuple[list[tuple[bytes, bytes]], bytes, bool]:
    """Framing headers, the body bytes on the wire, and whether the framing is exact."""
    how = draw(st.sampled_from(FRAMINGS))
    n = len(body)
    if how == "length":
        return ([(b"Content-Length", b"%d" % n)] if body else []), body, True
    if how == "none":
        return [], body, not body
    if how == "short":
        return [(b"Content-Length", b"%d" % draw(st.integers(0, max(0, n - 1))))], body, False
    if how == "long":
        return [(b"Content-Length", b"%d" % (n + draw(st.integers(1, 70000))))], body, False
    if how == "weird":
        value = draw(
            st.sampled_from(
                [b"+%d", b" %d ", b"%d, %d", b"0%d", b"-%d", b"%d.0", b"0x%d", b"abc", b"1e9"]
            )
        )
        fields = [(b"Content-Length", value.replace(b"%d", b"%d" % n))]
        if draw(st.booleans()):
            fields.append((b"Content-Length", b"%d" % draw(st.integers(0, n + 5))))
        elif draw(st.booleans()):
            fields.append((b"Content-Length", b"99999999999999999999999"))
        return fields, body, False
    wire, ok = draw(chunked(body))
    if how == "chunked":
        return [(b"Transfer-Encoding", b"chunked")], wire, ok
    if how == "both":  # RFC 9112 §6.3: chunked wins, and the connection must close after
        length = draw(st.sampled_from([n, len(wire), 0, 5]))
        fields = [(b"Content-Length", b"%d" % length), (b"Transfer-Encoding", b"chunked")]
        return draw(st.permutations(fields)), wire, False
    coding = draw(
        st.sampled_from(
            [
                b"gzip",
                b"gzip, chunked",
                b"chunked, gzip",
                b"identity",
                b"Chunked",
                b"chunked, chunked",
            ]
        )
    )
    return [(b"Transfer-Encoding", coding)], wire, False


# -- requests and cases -----------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    """One request's bytes and what the oracles may assume about them."""

    method: bytes
    target: bytes
    version: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""  # as framed on the wire
    lead: bytes = b""  # before the request line (empty lines, RFC 9112 §2.2)
    users: tuple[str, ...] = ()  # whose credentials it carries (empty: must not authenticate)
    clean: bool = True  # framed exactly: the next request starts right after it

    def head(self) -> bytes:
        line = b"%s %s %s\r\n" % (self.method, self.target, self.version)
        return self.lead + line + b"".join(b"%s: %s\r\n" % f for f in self.fields) + b"\r\n"

    def wire(self) -> bytes:
        return self.head() + self.body

    @property
    def is_head(self) -> bool:
        return self.method == b"HEAD"

    def field(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.fields if n.lower() == name.lower()]

    def __repr__(self) -> str:
        return f"Req({short(self.wire())}, users={self.users!r}, clean={self.clean})"


def short(data: bytes, keep: int = 300) -> str:
    """``data`` as a bytes literal, its middle elided when long (for failure messages)."""
    if len(data) <= 2 * keep:
        return repr(data)
    return f"{data[:keep]!r} ... [{len(data) - 2 * keep} bytes] ... {data[-keep:]!r}"


FITTING = {
    "events": [b"Last-Event-ID", b"Accept"],
    "write": [b"Expect", b"Origin", b"Sec-Fetch-Site"],
    "file": [b"If-None-Match", b"If-Modified-Since", b"Range"],
}


def _kind(method: bytes, target: bytes) -> str:
    path = target.partition(b"?")[0]
    if path == b"/api/events":
        return "events"
    if method in (b"POST", b"PUT", b"PATCH", b"DELETE"):
        return "write"
    return "file" if not path.startswith(b"/api/") else ""


LEADS = [b"\r\n", b"\n", b"\r\n\r\n", b" "]


@st.composite
def requests(draw: st.DrawFn, sane: bool = False) -> Req:
    """One request: three times in five a method and target of the route table, else
    anything. ``sane``: a route, HTTP/1.1, valid credentials, a JSON body framed exactly
    (the base that ``mutants`` damages)."""
    if sane:
        method, target = draw(routes().filter(lambda mt: mt[0] != b"HEAD"))
        version = b"HTTP/1.1"
        user = draw(st.sampled_from(USERS))
        auth = Auth((_valid(user),), (user,))
        fields = [(b"Host", b"vigil.test")]
    else:
        if draw(weighted((3, st.just(True)), (2, st.just(False)))):
            method, target = draw(routes())
        else:
            method, target = draw(methods()), draw(targets())
        version = draw(versions())
        auth = draw(authorizations())
        fields = draw(headers())
        for name in FITTING.get(_kind(method, target), ()):  # the fields its handler reads
            if draw(chance(2)):
                fields += draw(header_values(name))
    fields += [(b"Authorization", v) for v in auth.values]
    body, clean = b"", True
    if method in (b"POST", b"PUT", b"PATCH") or draw(chance(10)):
        content = draw(bodies(target))
        if sane or not draw(chance(6)):
            fields.append((b"Content-Type", b"application/json"))
        if sane:
            framing = [(b"Content-Length", b"%d" % len(content))] if content else []
            body = content
        else:
            framing, body, clean = draw(framed(content))
        fields += framing
    if not sane and len(fields) > 1 and draw(chance(4)):
        fields = draw(st.permutations(fields))
    lead = b"" if sane else draw(weighted((12, st.just(b"")), (1, st.sampled_from(LEADS))))
    return Req(method, target, version, tuple(fields), body, lead, auth.users, clean)


@dataclass(frozen=True)
class Case:
    """Requests sent on one connection, cut into pieces at ``cuts`` (offsets into the bytes)."""

    reqs: tuple[Req, ...]
    cuts: tuple[int, ...] = ()
    pauses: tuple[float, ...] = ()  # fake seconds after each piece (the 408 deadline)
    mutated: bool = False  # bytes changed after the requests were made: no per-request oracle
    data: bytes = field(default=b"", repr=False)

    @property
    def wire(self) -> bytes:
        return self.data or b"".join(r.wire() for r in self.reqs)

    def pieces(self) -> list[bytes]:
        data = self.wire
        bounds = [0, *sorted(c for c in set(self.cuts) if 0 < c < len(data)), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    def __repr__(self) -> str:
        what = "mutated " if self.mutated else ""
        pauses = f", pauses={list(self.pauses)}" if any(self.pauses) else ""
        return (
            f"Case({what}{short(self.wire)}, cuts={list(self.cuts)}{pauses}, "
            f"reqs={list(self.reqs)!r})"
        )


@st.composite
def cuts(draw: st.DrawFn, size: int) -> tuple[int, ...]:
    """Where to cut ``size`` bytes: nowhere, a few places, or byte by byte at the start."""
    how = draw(weighted((3, st.just("whole")), (4, st.just("some")), (1, st.just("bytes"))))
    if how == "whole" or size < 2:
        return ()
    if how == "bytes":
        return tuple(range(1, min(size, draw(st.integers(2, 64)))))
    return tuple(sorted(set(draw(st.lists(st.integers(1, size - 1), min_size=1, max_size=8)))))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(weighted((6, st.just(1)), (3, st.just(2)), (1, st.integers(3, 4))))
    reqs = [draw(requests()) for _ in range(n)]
    size = sum(len(r.wire()) for r in reqs)
    where = draw(cuts(size))
    return Case(tuple(reqs), where, draw(pauses(len(where))))


def pauses(n: int) -> st.SearchStrategy[tuple[float, ...]]:
    """Fake seconds to let pass after each of ``n`` cuts: mostly none (no time passes),
    now and then half a second to past the 408 deadline (2 s in the test's config)."""
    one = st.sampled_from([0.0] * 12 + [0.5, 1.0, 1.5, 2.5])
    return weighted((3, st.just(())), (1, st.lists(one, min_size=n, max_size=n).map(tuple)))


INSERTS = [
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b"\x00",
    b"\xb2",
    b"#",
    b"%",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"Last-Event-ID: \xb2\r\n",
    b"Authorization: Basic \xb2\r\n",
    b"\r\n 5",  # obs-fold
]


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one change: flip, set, insert, delete, duplicate or truncate."""
    if not data:
        return draw(st.binary(max_size=8))
    at = draw(st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate", "truncate"]))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "set":
        byte = draw(st.sampled_from(b"\x00\r\n :#%\xb2\xff\x7f"))
        return data[:at] + bytes([byte]) + data[at + 1 :]
    if kind == "insert":
        extra = draw(st.one_of(st.sampled_from(INSERTS), st.binary(min_size=1, max_size=8)))
        return data[:at] + extra + data[at:]
    length = draw(st.integers(1, 64))
    if kind == "delete":
        return data[:at] + data[at + length :]
    if kind == "duplicate":
        return data[: at + length] + data[at : at + length] + data[at + length :]
    return data[:at]


@st.composite
def mutants(draw: st.DrawFn) -> Case:
    """One or two sane requests (never HEAD), then one to four byte-level mutations."""
    reqs = [draw(requests(sane=True)) for _ in range(draw(st.integers(1, 2)))]
    data = b"".join(r.wire() for r in reqs)
    for _ in range(draw(st.integers(1, 4))):
        data = draw(mutation(data))
    where = draw(cuts(len(data)))
    return Case(tuple(reqs), where, draw(pauses(len(where))), mutated=True, data=data)


# -- reading what the server sent ---------------------------------------------------------


class Malformed(AssertionError):
    """The server's bytes are not valid HTTP/1.1."""


@dataclass
class Resp:
    status: int
    reason: bytes
    headers: list[tuple[str, bytes]]  # names lower-case, in order
    body: bytes
    stream: bool = False  # chunked: an open stream (the body is what arrived so far)

    def header(self, name: str) -> bytes | None:
        values = [v for n, v in self.headers if n == name]
        return b", ".join(values) if values else None

    def __repr__(self) -> str:
        return f"Resp({self.status} {self.reason!r}, body={short(self.body, 120)})"


STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([\t !-~\x80-\xff]*)")
FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t !-~\x80-\xff]*?)[ \t]*")


def read_responses(buf: bytes, heads: Sequence[bool], eof: bool) -> list[Resp]:
    """Every response in ``buf``, all the server will send on this connection.

    ``heads[i]``: the i-th request was HEAD, so the i-th final response may
    have no body although it has a Content-Length (it has none if the next
    bytes begin another response, or there are none; a HEAD the server
    refused before parsing it is answered with a body). Raises ``Malformed``
    for bytes no strict client would take: a bad status line or field,
    unknown framing, a response cut short, bytes after an open stream.
    ``eof``: the server closed (only for the message).
    """
    out: list[Resp] = []
    final = 0
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            raise Malformed(f"an incomplete head (closed: {eof}): {short(buf)}")
        lines = head.split(b"\r\n")
        m = STATUS_LINE.fullmatch(lines[0])
        if m is None:
            raise Malformed(f"not an HTTP/1.1 status line: {lines[0]!r}")
        status = int(m[1])
        fields = []
        for line in lines[1:]:
            f = FIELD.fullmatch(line)
            if f is None:
                raise Malformed(f"not a header field: {line!r} in a {status}")
            fields.append((f[1].decode().lower(), f[2]))
        resp = Resp(status, m[2], fields, b"")
        te, cl = resp.header("transfer-encoding"), resp.header("content-length")
        head_only = final < len(heads) and heads[final] and (not rest or rest[:9] == b"HTTP/1.1 ")
        no_body = status < 200 or status in (204, 304) or head_only
        if te is not None:
            if te.lower() != b"chunked" or cl is not None:
                raise Malformed(f"framing: Transfer-Encoding {te!r}, Content-Length {cl!r}")
            resp.stream = True
            resp.body, rest = _chunks(rest)
            out.append(resp)
            if rest:
                raise Malformed(f"bytes after a stream's last chunk: {short(rest)}")
            return out
        if cl is None:
            if not no_body:
                raise Malformed(f"a {status} with neither Content-Length nor chunked framing")
            size = 0
        else:
            if not re.fullmatch(rb"[0-9]{1,12}", cl):
                raise Malformed(f"Content-Length {cl!r}")
            size = 0 if no_body else int(cl)
        if len(rest) < size:
            raise Malformed(f"a {status}'s body cut short ({len(rest)} of {size} bytes)")
        resp.body, buf = rest[:size], rest[size:]
        out.append(resp)
        if status >= 200:
            final += 1
    return out


def _chunks(data: bytes) -> tuple[bytes, bytes]:
    """The body pieces complete in ``data`` and what follows the last chunk (if it came)."""
    body, rest, ended = take_chunks(data)
    return body, rest if ended else b""


def take_chunks(data: bytes) -> tuple[bytes, bytes, bool]:
    """The whole chunks at the start of ``data``: their bytes, the rest, and whether the
    last chunk (size 0) was among them. ``Malformed`` for bad framing."""
    body = bytearray()
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return bytes(body), data, False
        if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", size_line):
            raise Malformed(f"chunk size line {size_line!r}")
        size = int(size_line, 16)
        if size == 0:
            return bytes(body), rest.removeprefix(b"\r\n"), True
        if len(rest) < size + 2:
            return bytes(body), data, False
        if rest[size : size + 2] != b"\r\n":
            raise Malformed(f"chunk of {size} bytes not followed by CRLF")
        body += rest[:size]
        data = rest[size + 2 :]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def strict_json(body: bytes) -> Any:
    """``body`` as RFC 8259 JSON: UTF-8, no NaN or Infinity; ValueError otherwise."""
    text = body.decode("utf-8")  # strict: no lone surrogates either
    return json.loads(text, parse_constant=_refuse_constant)


def sse_data(body: bytes) -> list[bytes]:
    """The ``data:`` values of the whole SSE messages in a stream's body so far."""
    messages = body.split(b"\n\n")[:-1]
    return [
        line[5:].removeprefix(b" ")
        for message in messages
        for line in message.split(b"\n")
        if line.startswith(b"data:")
    ]
