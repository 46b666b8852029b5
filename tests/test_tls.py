"""HTTPS end to end: what an outside scanner, curl and raw TLS sockets see of vigil.

- An independent scanner (sslyze) against the TLS port: only TLS 1.2 and
  1.3, for 1.2 only ECDHE with AEAD; none of the weaknesses it knows of
  (heartbleed, CCS injection, ROBOT, insecure or client renegotiation,
  compression, no fallback SCSV, no extended master secret, early data).
- curl trusts the certificate vigil made on first run (``--cacert``, the
  names checked, never ``-k``) under every name it has here; loopback is
  served plain, any other address is sent to HTTPS (a network namespace).
- Pipelining, HEAD, 304, an event stream and the request limits (408, 413,
  414, 431) behave the same over HTTPS as over plain HTTP.
- Connections that never finish a handshake (1,000 that send nothing,
  ClientHellos trickled a byte a second) are cut at ``handshake_timeout``
  and shed first, while a logged-in HTTPS client keeps being answered.
- SIGHUP loads a new certificate for new handshakes; open connections keep theirs.
- The certificate made on first run: its names, the fingerprint in the
  log, its key 0600 (the banner, ``tls-info``, restarts: test_tls_cli.py).

A pulled cable under an HTTPS event stream: tests/test_pulled_cable.py (all
of it runs over HTTPS). The browser over HTTPS: tests/browser/.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.web import certificate
from tests.netns import HOST, Namespace, serving_sections
from tests.support import (
    Vigil,
    der_sha256,
    enough_fds,
    fingerprint,
    make_certificate,
    password,
    require,
    write_config,
)
from tests.wire import Reader, Remote, SSEParser, chat, request

TLS12_AEAD = re.compile(
    r"^TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$"
)
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Key exchange groups of 128 bits of security or more (OpenSSL's defaults: all of them).
STRONG_GROUPS = {"X25519", "X448", "secp256r1", "secp384r1", "secp521r1"}
# Where vigil differs from Mozilla's "intermediate" profile, on purpose, and why it is no weakness:
# - a device's self-signed certificate lives 825 days (browsers' limit for a certificate people
#   trusted themselves); the profile's 366 days are for certificates of public CAs;
# - OpenSSL's default groups include X448 and secp521r1, stronger than the profile's three.
MOZILLA_EXCEPTIONS = {"maximum_certificate_lifespan", "tls_curves"}


def curl_argv(*args: str) -> list[str]:
    """curl -s with ``args``; its stdout ends with a line ``STATUS LOCATION`` (``answer``)."""
    require(shutil.which("curl") is not None, "curl is not installed (apt install curl)")
    return ["curl", "-s", "-m", "5", "-w", "\n%{http_code} %{redirect_url}", *args]


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(curl_argv(*args), capture_output=True, text=True, check=False)


def answer(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """(status, Location, body) of a ``curl`` run (status 0: no HTTP answer)."""
    body, _, tail = done.stdout.rpartition("\n")
    status, _, location = tail.partition(" ")
    return int(status or 0), location, body


def alice() -> tuple[str, str]:
    return ("-u", f"alice:{password('alice')}")


def served_certificate(host: str, port: int, *trusted: Path) -> bytes:
    """The DER certificate a new handshake with ``host:port`` gets, trusting only ``trusted``."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata="".join(p.read_text() for p in trusted))
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


# -- an independent scanner ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")  # its CA stores
def test_scanner_sees_only_tls12_and_13_with_ecdhe_aead_and_no_weakness(vigil: Vigil) -> None:
    try:
        import sslyze
        from nassl.ephemeral_key_info import EcDhEphemeralKeyInfo
        from sslyze.mozilla_tls_profile import tls_config_checker as mozilla
    except ImportError:
        require(False, "sslyze is not installed (pip install -e '.[test]')")
        raise
    assert vigil.tls_port is not None
    request_ = sslyze.ServerScanRequest(
        server_location=sslyze.ServerNetworkLocation("localhost", vigil.tls_port, "127.0.0.1"),
        network_configuration=sslyze.ServerNetworkConfiguration("localhost"),
        scan_commands_extra_arguments=sslyze.ScanCommandsExtraArguments(
            certificate_info=sslyze.CertificateInfoExtraArgument(custom_ca_file=vigil.cert)
        ),
    )  # every scan command but HTTP_HEADERS (the panel's headers are tests/test_requests.py's)
    request_.scan_commands.discard(sslyze.ScanCommand.HTTP_HEADERS)
    scanner = sslyze.Scanner()
    scanner.queue_scans([request_])
    (result,) = scanner.get_results()
    assert result.scan_status is sslyze.ServerScanStatusEnum.COMPLETED, result
    scan = result.scan_result
    assert scan is not None
    for name in sorted(c.value for c in request_.scan_commands):
        attempt = getattr(scan, name)
        assert attempt.status is sslyze.ScanCommandAttemptStatusEnum.COMPLETED, (name, attempt)

    def accepted(name: str) -> list[Any]:
        return getattr(scan, name).result.accepted_cipher_suites

    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert accepted(f"{old}_cipher_suites") == [], old
    tls12 = [s.cipher_suite.name for s in accepted("tls_1_2_cipher_suites")]
    tls13 = [s.cipher_suite.name for s in accepted("tls_1_3_cipher_suites")]
    assert tls12 and all(TLS12_AEAD.match(name) for name in tls12), tls12
    assert tls13 and set(tls13) <= TLS13_SUITES, tls13
    for suite in accepted("tls_1_2_cipher_suites") + accepted("tls_1_3_cipher_suites"):
        key = suite.ephemeral_key  # forward secrecy with elliptic curves only, no finite-field DH
        assert isinstance(key, EcDhEphemeralKeyInfo) and key.size >= 253, suite
    groups = {c.name for c in scan.elliptic_curves.result.supported_curves}
    assert groups and groups <= STRONG_GROUPS, groups
    assert not scan.heartbleed.result.is_vulnerable_to_heartbleed
    assert not scan.openssl_ccs_injection.result.is_vulnerable_to_ccs_injection
    assert scan.robot.result.robot_result.name.startswith("NOT_VULNERABLE"), scan.robot.result
    renegotiation = scan.session_renegotiation.result
    assert renegotiation.supports_secure_renegotiation  # RFC 5746: no insecure renegotiation
    assert not renegotiation.is_vulnerable_to_client_renegotiation_dos
    assert renegotiation.client_renegotiations_success_count == 0
    assert not scan.tls_compression.result.supports_compression  # CRIME
    assert scan.tls_fallback_scsv.result.supports_fallback_scsv  # downgrade protection
    assert scan.tls_extended_master_secret.result.supports_ems_extension
    assert not scan.tls_1_3_early_data.result.supports_early_data  # no replayable 0-RTT
    resumption = scan.session_resumption.result
    assert resumption.tls_ticket_resumption_result.name == "NOT_SUPPORTED"  # no tickets
    (deployment,) = scan.certificate_info.result.certificate_deployments
    results = deployment.path_validation_results
    trusted = {r.trust_store.name: r.was_validation_successful for r in results}
    assert trusted.pop("Supplied CA file") is True  # the certificate vigil made for itself
    assert not any(trusted.values()), trusted  # ... and no public CA's (it is self-signed)
    # sslyze's own verdict: Mozilla's "intermediate" profile, with the two deviations above
    profile = mozilla.MozillaTlsConfiguration.get(mozilla.TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    issues: dict[str, str] = {}
    try:
        mozilla.check_server_against_tls_configuration(result, profile)
    except mozilla.ServerNotCompliantWithTlsConfiguration as e:
        issues = e.issues
    assert set(issues) <= MOZILLA_EXCEPTIONS, issues
    print(f"TLS 1.2: {tls12}; TLS 1.3: {tls13}; groups {sorted(groups)}; Mozilla: {issues}")


# -- curl: names, redirect, loopback ------------------------------------------------------


def test_curl_trusts_the_device_certificate_under_each_of_its_names(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil(sections={"http": {"host": "::"}})  # both families: [::1] too
    https, plain = vigil.tls_port, vigil.port
    trust = ("--cacert", str(vigil.cert))
    for name in ("localhost", "127.0.0.1", "[::1]"):
        status, _, body = answer(curl(*trust, *alice(), f"https://{name}:{https}/api/me"))
        assert (status, json.loads(body or "null")) == (200, {"user": "alice", "role": "operator"})
        assert answer(curl(*trust, f"https://{name}:{https}/healthz"))[::2] == (200, "ok\n")
        # loopback over plain HTTP: served as before, no redirect
        status, _, body = answer(curl(*alice(), f"http://{name}:{plain}/api/me"))
        assert status == 200 and json.loads(body)["user"] == "alice"
        assert answer(curl(f"http://{name}:{plain}/healthz"))[::2] == (200, "ok\n")
    # the names are checked: one the certificate does not have fails, as does no trust at all
    resolve = ("--resolve", f"vigil.invalid:{https}:127.0.0.1")
    other = curl(*trust, *resolve, f"https://vigil.invalid:{https}/healthz")
    assert other.returncode == 60, other  # CURLE_PEER_FAILED_VERIFICATION
    assert curl(f"https://localhost:{https}/healthz").returncode == 60


def test_plain_http_from_elsewhere_is_redirected_before_any_login(
    ns: Namespace, start_vigil: Callable[..., Vigil]
) -> None:
    vigil = start_vigil(sections=serving_sections())
    https, plain = vigil.tls_port, vigil.port

    def from_ns(*args: str) -> tuple[int, str, str]:
        return answer(ns.run(curl_argv(*args)))

    target = "/api/me?x=1&y=%C3%A9"
    for creds in ((), alice(), ("-u", "alice:wrong")):  # no password is checked in the clear
        status, location, body = from_ns(*creds, f"http://{HOST}:{plain}{target}")
        assert (status, location) == (308, f"https://{HOST}:{https}{target}"), body
        assert "https" in json.loads(body)["error"]
    # the method is kept (308), the Host's name is used, with brackets for IPv6
    status, location, _ = from_ns("-X", "POST", "-d", "{}", f"http://{HOST}:{plain}/api/chat")
    assert (status, location) == (308, f"https://{HOST}:{https}/api/chat")
    host_names = {"vigil.local": "vigil.local", "[fd00::1]": "[fd00::1]"}
    for name, expected in host_names.items():
        got = from_ns("-H", f"Host: {name}:{plain}", f"http://{HOST}:{plain}/")
        assert got[:2] == (308, f"https://{expected}:{https}/"), got
    assert from_ns(f"http://{HOST}:{plain}/healthz")[::2] == (200, "ok\n")  # on both
    # HTTPS from there: the certificate, made after the namespace existed, names this address
    trust = ("--cacert", str(vigil.cert))
    assert from_ns(*trust, f"https://{HOST}:{https}/healthz")[::2] == (200, "ok\n")
    status, _, body = from_ns(*trust, *alice(), f"https://{HOST}:{https}{target}")
    assert status == 200 and json.loads(body)["user"] == "alice"
    # this machine too, when it does not come over loopback
    assert Remote(HOST, plain).me().status == 308


# -- the same HTTP over TLS -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vigil]:
    """One vigil for the wire checks: 408 after 1 s."""
    directory = tmp_path_factory.mktemp("wire")
    vigil = Vigil(write_config(directory, {"http": {"header_timeout": 1}}))
    yield vigil
    vigil.stop()


SCHEMES = ["http", "https"]


@pytest.fixture(params=SCHEMES)
def connect(request: pytest.FixtureRequest, server: Vigil) -> Iterator[Callable[[], Remote]]:
    """``connect()`` → a new connection to ``server``, plain or over TLS (the parameter)."""
    opened: list[Remote] = []

    def new() -> Remote:
        remote = Remote.of(server, secure=request.param == "https")
        remote.connect()
        opened.append(remote)
        return remote

    yield new
    for remote in opened:
        remote.close()


def test_pipelined_requests_head_and_304(connect: Callable[[], Remote]) -> None:
    c = connect()
    first = c.get("/index.html")
    assert first.status == 200 and first.body
    etag = first.headers["etag"]
    batch = [
        request("GET", "/api/me"),
        request("HEAD", "/index.html"),
        request("GET", "/index.html", {"If-None-Match": etag}),
        request("GET", "/no-such-file"),
        request("GET", "/healthz", {"Authorization": None}),
    ]
    c.send(b"".join(batch))
    got = [c.response(head_only=i == 1) for i in range(len(batch))]
    assert [r.status for r in got] == [200, 200, 304, 404, 200]
    assert got[0].json()["user"] == "alice"
    assert got[1].body == b"" and int(got[1].headers["content-length"]) == len(first.body)
    assert got[2].body == b"" and got[2].headers["etag"] == etag
    assert got[4].body == b"ok\n"
    assert c.reader.buf == b""
    assert c.me().status == 200  # and the connection goes on


def test_hsts_on_every_https_answer_and_never_over_plain_http(
    connect: Callable[[], Remote],
) -> None:
    c = connect()
    answers = [c.me(), c.get("/index.html"), c.get("/no-such-file"), c.me(pw="wrong")]
    hsts = {r.headers.get("strict-transport-security") for r in answers}
    secure = c.tls is not None
    assert hsts == ({"max-age=31536000"} if secure else {None})


def test_an_event_stream(connect: Callable[[], Remote]) -> None:
    stream = connect()
    head = stream.get("/api/events", headers={"Accept": "text/event-stream"})
    assert head.status == 200 and head.headers["content-type"].startswith("text/event-stream")
    parser = SSEParser()
    events: list[Any] = []

    def until(kind: str, text: str | None = None) -> None:
        deadline = time.monotonic() + 5

        def seen() -> bool:
            return any(e.type == kind and text in (None, e.data.get("text")) for e in events)

        while not seen():
            assert time.monotonic() < deadline, events
            events.extend(parser.feed(stream.reader.chunk().decode()))

    until("reset")
    poster = connect()
    poster.send(chat("over the stream", "bob"))
    assert poster.response().status == 200
    until("chat", "over the stream")


# (request bytes, status): each answered with its error, then the connection closes
LIMITS = {
    "413": (request("POST", "/api/chat", {"Content-Length": "100000"}), 413),
    "414": (request("GET", "/" + "a" * 5000), 414),
    "431": (request("GET", "/api/me", {"X-Big": "x" * 20000}), 431),
    "408": (b"GET /api/me HTTP/1.1\r\nHost: vigil.test\r\n", 408),  # the rest never comes
}


@pytest.mark.parametrize("case", LIMITS)
def test_limits(connect: Callable[[], Remote], case: str) -> None:
    data, status = LIMITS[case]
    c = connect()
    started = time.monotonic()
    c.send(data)
    resp = c.response()
    assert resp.status == status and "error" in resp.json(), resp
    if status == 408:
        assert 1 < time.monotonic() - started < 3.5  # header_timeout 1 s, swept once a second
    assert c.closed()
    assert connect().me().status == 200


@pytest.mark.parametrize("case", ["413", "connection-close"])
def test_the_server_ends_tls_with_close_notify(server: Vigil, case: str) -> None:
    """A close the peer can tell from a truncation: its close_notify, then FIN."""
    data = LIMITS["413"][0] if case == "413" else request("GET", "/", {"Connection": "close"})
    assert server.tls_port is not None
    with (
        socket.create_connection((server.host, server.tls_port), timeout=5) as raw,
        server.ssl_context().wrap_socket(
            raw, server_hostname=server.host, suppress_ragged_eofs=False
        ) as tls,
    ):
        tls.sendall(data)
        reader = Reader(tls)
        assert reader.response().status in (200, 413)
        assert reader.closed()  # SSLEOFError: the TCP connection ended without close_notify


# -- handshakes that never finish ----------------------------------------------------------

FLOOD = 1000
TRICKLERS = 20
HANDSHAKE_TIMEOUT = 2.0
CUT_WITHIN = HANDSHAKE_TIMEOUT + 2.0  # the deadline, the once-a-second sweep, slack


def client_hello() -> bytes:
    """The bytes of a real ClientHello (what the tricklers send, one a second)."""
    out = ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def ask(c: Remote) -> float:
    """alice's GET /api/me on ``c``, checked; the seconds it took."""
    started = time.monotonic()
    resp = c.me()
    assert resp.status == 200 and resp.json()["user"] == "alice"
    return time.monotonic() - started


class Stalled:
    """TCP connections to the TLS port that never finish a handshake, watched for their close."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()  # epoll: more than select()'s 1024 fds
        self.opened: dict[socket.socket, float] = {}
        self.lived: dict[socket.socket, float] = {}  # closed by the server after these seconds
        self.sent: dict[socket.socket, int] = {}  # tricklers: ClientHello bytes sent

    def open(self, trickle: bool = False) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        self.opened[sock] = time.monotonic()
        self.selector.register(sock, selectors.EVENT_READ)
        if trickle:
            self.sent[sock] = 0
        return sock

    def trickle(self, hello: bytes) -> None:
        """One more byte of the ClientHello on each trickler still open."""
        for sock, n in self.sent.items():
            if sock not in self.lived and n < len(hello):
                with contextlib.suppress(OSError):
                    sock.send(hello[n : n + 1])
                    self.sent[sock] = n + 1

    def poll(self, timeout: float) -> None:
        """Note every connection the server closed (EOF or RST) within ``timeout``."""
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if sock.recv(4096):
                    continue  # an alert, say; the close follows
            except BlockingIOError:
                continue
            except OSError:
                pass
            self.lived[sock] = time.monotonic() - self.opened[sock]
            self.selector.unregister(sock)

    @property
    def open_count(self) -> int:
        return len(self.opened) - len(self.lived)

    def close(self) -> None:
        for sock in self.opened:
            sock.close()
        self.selector.close()


def test_stalled_handshakes_are_cut_and_never_slow_a_logged_in_client(
    start_vigil: Callable[..., Vigil],
) -> None:
    enough_fds(FLOOD + TRICKLERS + 400)
    vigil = start_vigil(sections={"tls": {"handshake_timeout": HANDSHAKE_TIMEOUT}})
    assert vigil.tls_port is not None
    keep = Remote.of(vigil, secure=True)
    latencies = [ask(keep)]  # logged in: its credentials are cached
    hello = client_hello()
    stalled = Stalled(vigil.tls_port)
    started = time.monotonic()
    try:
        for i in range(FLOOD):
            stalled.open()
            if i % 50 == 49:
                latencies.append(ask(keep))
                stalled.poll(0)
        tricklers = [stalled.open(trickle=True) for _ in range(TRICKLERS)]
        flooded = time.monotonic() - started
        next_byte = 0.0
        deadline = time.monotonic() + CUT_WITHIN + 1
        while stalled.open_count and time.monotonic() < deadline:
            if time.monotonic() >= next_byte:
                stalled.trickle(hello)
                next_byte = time.monotonic() + 1
            latencies.append(ask(keep))
            stalled.poll(0.02)
        lived = stalled.lived
        assert stalled.open_count == 0, f"{stalled.open_count} stalled connections still open"
        assert vigil.proc.poll() is None, "vigil died"
        longest = max(lived.values())
        at_deadline = sum(t >= HANDSHAKE_TIMEOUT - 0.1 for t in lived.values())
        print(
            f"{FLOOD} + {TRICKLERS} opened in {flooded:.2f} s; {len(lived) - at_deadline} shed, "
            f"{at_deadline} cut at the deadline, the last after {longest:.2f} s; "
            f"{len(latencies)} answers, median {statistics.median(latencies) * 1000:.1f} ms, "
            f"slowest {max(latencies) * 1000:.1f} ms"
        )
        assert longest <= CUT_WITHIN
        for sock in tricklers:  # the newest: cut at the deadline, however busy they kept it
            assert HANDSHAKE_TIMEOUT - 0.1 <= lived[sock] <= CUT_WITHIN, lived[sock]
            assert 1 <= stalled.sent[sock] < len(hello)
        assert at_deadline >= 500  # most were not shed but waited out
        assert statistics.median(latencies) < 0.1
        assert max(latencies) < 1.0
    finally:
        stalled.close()
    assert "no TLS handshake within the deadline" in vigil.log()
    with Remote.of(vigil, secure=True) as fresh:
        assert ask(fresh) < 1.0
    assert ask(keep) < 1.0
    keep.close()
    assert vigil.proc.poll() is None
    assert "Traceback" not in vigil.log()


# -- certificates ---------------------------------------------------------------------------

NAMES = ["DNS:localhost", "IP:127.0.0.1"]


def test_sighup_loads_a_new_certificate_for_new_handshakes(
    start_vigil: Callable[..., Vigil], tmp_path: Path
) -> None:
    made = tmp_path / "made"
    made.mkdir()
    old, old_key = make_certificate(made, NAMES, "old")
    new, new_key = make_certificate(made, NAMES, "new")
    cert, key = tmp_path / "vigil.crt", tmp_path / "vigil.key"
    shutil.copy(old, cert)
    shutil.copy(old_key, key)
    vigil = start_vigil(sections={"tls": {"cert": str(cert), "key": str(key)}})
    assert vigil.tls_port is not None
    assert served_certificate("127.0.0.1", vigil.tls_port, old, new) == ssl.PEM_cert_to_DER_cert(
        old.read_text()
    )
    keep = Remote("127.0.0.1", vigil.tls_port, tls=ssl.create_default_context(cafile=str(old)))
    assert keep.me().status == 200
    since = len(vigil.log())
    shutil.copy(new, cert)
    shutil.copy(new_key, key)
    vigil.signal(signal.SIGHUP)
    vigil.wait_for_log(f"TLS certificate .*SHA-256 {der_sha256(new)}", since)
    der = served_certificate("127.0.0.1", vigil.tls_port, old, new)
    assert fingerprint(der) == der_sha256(new) != der_sha256(old)
    with pytest.raises(ssl.SSLCertVerificationError):  # trusting only the old one fails now
        Remote("127.0.0.1", vigil.tls_port, tls=ssl.create_default_context(cafile=str(old))).me()
    assert keep.me().status == 200  # the open connection keeps its session
    assert keep.sock is not None and keep.sock.getpeercert(binary_form=True) != der
    # a certificate that cannot be loaded: the one in use stays
    key.write_text("not a key\n")
    since = len(vigil.log())
    vigil.signal(signal.SIGHUP)
    vigil.wait_for_log("reload: keeping the old TLS certificate", since)
    assert served_certificate("127.0.0.1", vigil.tls_port, new) == der
    assert keep.me().status == 200
    keep.close()


def subject_names(cert: Path) -> set[str]:
    """The subjectAltName entries of ``cert`` as openssl reads them (IPs normalised)."""
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = set()
    for entry in out.splitlines()[-1].split(","):
        kind, _, value = entry.strip().partition(":")
        if kind == "IP Address":
            kind, value = "IP", str(ipaddress.ip_address(value))
        names.add(f"{kind}:{value}")
    return names


def test_the_certificate_made_on_first_run_names_this_device(vigil: Vigil) -> None:
    """Its names, and the fingerprint the log gives: that of what is served (the first-run
    banner, the key's mode and a restart: tests/test_tls_cli.py)."""
    assert vigil.cert == vigil.config.parent / "tls.local.crt"
    host = socket.gethostname().split(".")[0]
    expected = {f"DNS:{host}", f"DNS:{host}.local", "DNS:localhost", "IP:127.0.0.1", "IP:::1"}
    assert expected <= subject_names(vigil.cert)
    line = vigil.wait_for_log(r"TLS certificate .* SHA-256 ")
    logged = re.search(r"SHA-256 ([0-9A-F:]{95})\b", line)
    assert logged is not None, line
    assert vigil.tls_port is not None
    served = served_certificate("localhost", vigil.tls_port, vigil.cert)
    assert logged.group(1) == der_sha256(vigil.cert) == fingerprint(served)
    assert (os.stat(vigil.config.parent / "tls.local.key").st_mode & 0o777) == 0o600


def test_the_certificate_names_never_wait_for_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Pi booting offline must not hang on a resolver: without ``hostname -I``
    the addresses come from the routing table, and nothing asks DNS."""

    def no_dns(*_args: object, **_kw: object) -> None:
        raise AssertionError("the certificate's names asked DNS")

    def no_hostname_command(*_args: object, **_kw: object) -> None:
        raise FileNotFoundError("hostname")

    monkeypatch.setattr(certificate.socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(certificate.socket, "gethostbyname", no_dns)
    monkeypatch.setattr(certificate.subprocess, "run", no_hostname_command)
    names = certificate.subject_names("pi")
    assert names[:3] == ["DNS:pi", "DNS:pi.local", "DNS:localhost"]
    assert {"IP:127.0.0.1", "IP:::1"} <= set(names)


def test_no_tls_listener_when_tls_is_off(start_vigil: Callable[..., Vigil]) -> None:
    vigil = start_vigil(sections={"tls": {"enabled": False}})
    assert vigil.tls_port is None
    assert not (vigil.config.parent / "tls.local.crt").exists()
    assert "https://" not in vigil.log()
    assert Remote.of(vigil).me().status == 200
