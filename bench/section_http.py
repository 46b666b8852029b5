"""Section ``http``: vigil against the stdlib's http.server and aiohttp.

Every server serves the same 4 KiB index.html and a tiny JSON ``/api/me``,
and gets the same requests (with vigil's Authorization header, which the
peers ignore), at 10 and 50 keep-alive connections. vigil runs with its
access log off, plus one run with it on. The cost of authentication is
estimated as authenticated ``/api/me`` against ``/healthz``, which vigil
serves without checking credentials (vigil has no switch to turn auth off);
both requests carry the same Authorization header.
"""

from __future__ import annotations

import importlib.util

from bench.harness import (
    Bench,
    Run,
    faster_check,
    free_port,
    loss_check,
    section,
    speed_ratio,
)
from bench.report import Check
from bench.vigil import Vigil

CONNS = (10, 50)
PAGE = "/index.html"
ME = "/api/me"
HEALTH = "/healthz"
P99_LIMIT_MS = 10.0
RSS_LIMIT_MIB = 24.0


@section("http", "HTTP: vigil vs stdlib http.server vs aiohttp")
def http(bench: Bench) -> None:
    table = bench.table("wrk -t1, keep-alive, 4 KiB index.html and JSON /api/me")
    runs: dict[tuple[str, str, int], Run] = {}
    top = CONNS[-1]

    def record(run: Run) -> None:
        runs[run.target, run.path, run.conns] = run
        table.rows.append(run.row())

    vigil = Vigil.setup(bench)
    peers = ["stdlib"]
    if importlib.util.find_spec("aiohttp"):
        peers.append("aiohttp")
    else:
        bench.report.notes.append("aiohttp is not installed (pip install '.[bench]'): not measured")
    for peer in peers:
        port = free_port()
        argv = [bench.python, "-m", f"bench.peer_{peer}", "--port", str(port)]
        argv += ["--root", str(bench.static_dir())]
        with bench.server(peer, argv, port) as server:
            for path in (PAGE, ME):
                for conns in CONNS:
                    record(bench.measure(server, path, conns, vigil.auth))

    with vigil.start() as server:
        at_start = server.memory()
        for path in (PAGE, ME, HEALTH):
            for conns in CONNS:
                record(bench.measure(server, path, conns, vigil.auth))
        after = server.memory()
    with vigil.start("vigil + access log", access_log=True) as server:
        record(bench.measure(server, ME, top, vigil.auth))

    checks = bench.report.checks
    for c in CONNS:
        checks.append(
            faster_check(
                f"vigil static / stdlib static, {c} conns",
                runs["vigil", PAGE, c],
                runs["stdlib", PAGE, c],
                1.5,
            )
        )
    for c in CONNS:
        checks.append(
            faster_check(
                f"vigil /api/me / aiohttp JSON, {c} conns",
                runs["vigil", ME, c],
                runs.get(("aiohttp", ME, c)),
                0.6,
            )
        )
    for c in CONNS:
        checks.append(
            loss_check(
                f"auth cost: /api/me vs /healthz, {c} conns",
                runs["vigil", ME, c],
                runs["vigil", HEALTH, c],
                10,
            )
        )
    for path in (PAGE, ME):
        p99 = runs["vigil", path, top].p99_us / 1000
        checks.append(Check(f"vigil p99, {path}, {top} conns", p99, "≤", P99_LIMIT_MS, " ms"))
    rss_mib = after.rss_kib / 1024
    checks.append(Check("vigil RSS (VmRSS after the runs)", rss_mib, "≤", RSS_LIMIT_MIB, " MiB"))

    me_top = runs["vigil", ME, top]
    log_rps, log_cpu = speed_ratio(runs["vigil + access log", ME, top], me_top)
    bench.report.notes += [
        "Auth cost is a proxy: vigil authenticates everything but /healthz, so it is "
        "/api/me (credentials checked, cached after the first request; a small JSON body) "
        "against /healthz (not checked; body `ok`), both sent with the same Authorization "
        "header.",
        f"The access log (to a file) costs {(1 - log_rps) * 100:.1f} % of /api/me req/s at "
        f"{top} conns ({(1 - log_cpu) * 100:.1f} % by CPU µs/req).",
        f"vigil's peak RSS (VmHWM) is {at_start.hwm_kib / 1024:.1f} MiB right after start-up, "
        f"before any request, and {after.hwm_kib / 1024:.1f} MiB after the runs; VmRSS at "
        f"start-up is {at_start.rss_kib / 1024:.1f} MiB. (scrypt with N=16384, r=8 touches "
        "16 MiB while it hashes.)",
        f"wrk keeps {top} requests in flight, so the mean latency is {top} ÷ req/s (Little's "
        f"law): {top / me_top.req_s * 1000:.1f} ms for vigil /api/me at {me_top.req_s:.0f} "
        f"req/s. p99 ≤ {P99_LIMIT_MS:g} ms at {top} conns needs well over "
        f"{top / P99_LIMIT_MS * 1000:.0f} req/s.",
        "The peers get the same Authorization header and ignore it; stdlib serves the file "
        "from disk, aiohttp from memory.",
    ]
