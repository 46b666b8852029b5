"""Section ``tls``: what HTTPS costs vigil, measured against plain-HTTP vigil in one run.

One vigil process (access log on, as shipped) serves both its plain port and
its HTTPS port with its own self-signed ECDSA P-256 certificate. wrk measures
keep-alive ``/api/me`` on each (TLS 1.3: wrk's OpenSSL offers it first), then
full handshakes: ``/healthz`` with ``Connection: close``, so every request is
a new TCP connection and a full handshake (vigil issues no session tickets).
CPU per handshake is the server's CPU time per such request, less what the
same request costs over plain HTTP.
"""

from __future__ import annotations

from bench.harness import Bench, Run, faster_check, section
from bench.report import Check
from bench.vigil import Vigil

CONNS = 10
ME = "/api/me"
HEALTH = "/healthz"
HTTPS_VS_HTTP = 0.7  # at least, by req/s
RSS_LIMIT_MIB = 28.0
CLOSE = {"Connection": "close"}


@section("tls", "HTTPS: vigil over TLS vs vigil over plain HTTP")
def tls(bench: Bench) -> None:
    table = bench.table(f"wrk -t1, {CONNS} connections, one vigil serving both ports")
    vigil = Vigil.setup(bench)
    runs: dict[str, Run] = {}

    def record(key: str, run: Run) -> None:
        runs[key] = run
        table.rows.append(run.row())

    with vigil.start(access_log=True) as plain:
        https = plain.over_tls()
        record("me", bench.measure(plain, ME, CONNS, vigil.auth))
        record("me tls", bench.measure(https, ME, CONNS, vigil.auth))
        record("close", bench.measure(plain, HEALTH, CONNS, CLOSE, "vigil, new connections"))
        record("close tls", bench.measure(https, HEALTH, CONNS, CLOSE, "vigil HTTPS, handshakes"))
        memory = plain.memory()

    checks = bench.report.checks
    checks.append(
        faster_check(
            f"HTTPS /api/me / plain /api/me, keep-alive, {CONNS} conns",
            runs["me tls"],
            runs["me"],
            HTTPS_VS_HTTP,
        )
    )
    rss = memory.rss_kib / 1024
    checks.append(
        Check("vigil RSS with TLS (VmRSS after the runs)", rss, "≤", RSS_LIMIT_MIB, " MiB")
    )
    handshake_us = runs["close tls"].cpu_us_per_request - runs["close"].cpu_us_per_request
    bench.report.notes += [
        f"Full handshakes (TLS 1.3, ECDSA P-256, X25519 or P-256 key share): "
        f"{runs['close tls'].req_s:.0f} per second on one core, each a new TCP connection "
        f"with one /healthz request; {runs['close tls'].cpu_us_per_request:.0f} µs of server "
        f"CPU each, of which {handshake_us:.0f} µs is TLS (over the same request on a new "
        f"plain connection, {runs['close'].cpu_us_per_request:.0f} µs).",
        f"Peak RSS (VmHWM) {memory.hwm_kib / 1024:.1f} MiB (scrypt's 16 MiB at the first "
        "login included).",
    ]
