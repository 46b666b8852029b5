"""Section ``http``: vigil against stdlib's http.server, aiohttp, tornado and a bare h11 loop.

Every server serves the same 2 KiB index.html and a tiny JSON ``/api/me``,
and gets the same requests, with vigil's Authorization header, at 10 and 50
keep-alive connections. vigil runs as shipped, with its access log on (to a
file); one run without it prices the log. The bare h11 loop
(``bench/peer_h11.py``) is the floor h11 allows: vigil's CPU time per
request and its p99 latency are compared with its. Because a VM's speed
drifts by ±20 % over minutes, vigil and the floor run side by side and are
measured alternately, ``ROUNDS`` times each (path by path, connections by
connections), and each keeps its best round (least CPU per request): so a
ratio compares runs taken seconds apart, not minutes. tornado
(``bench/peer_tornado.py``, doing the bare h11 loop's work) is what
Moonraker and OctoPrint serve through: vigil's req/s are compared with its.
The ratios, from this run's figures only, get a table of their own. The
cost of authentication is estimated as authenticated ``/api/me`` against
``/healthz``, which vigil serves without checking credentials (vigil has no
switch to turn auth off); both requests carry the same Authorization header.
Last, vigil runs under cProfile, once per path at 10 connections, and its
self time is split by whose code ran (``bench/profile_split.py``).
"""

from __future__ import annotations

import importlib.util

from bench.harness import (
    INDEX_SIZE,
    Bench,
    BenchError,
    Run,
    Server,
    cpu_check,
    faster_check,
    free_port,
    loss_check,
    section,
    speed_ratio,
)
from bench.profile_split import GROUPS, Split, split
from bench.report import Check
from bench.vigil import Vigil

CONNS = (10, 50)
PAGE = "/index.html"
ME = "/api/me"
HEALTH = "/healthz"
STATIC_VS_STDLIB = 1.5  # at least, by req/s
ME_VS_AIOHTTP = 0.6  # at least, by req/s
CPU_VS_H11 = 1.15  # at most, by CPU µs/req
P99_VS_H11 = 1.5  # at most, at the top number of connections
VS_TORNADO = 1.6  # at least, by req/s
AUTH_COST_PCT = 10.0
P99_LIMIT_MS = 10.0
RSS_LIMIT_MIB = 24.0
NO_LOG = "vigil, no access log"
ROUNDS = 3  # alternate measurements of vigil and the floor, each keeping its best


@section("http", "HTTP: vigil vs stdlib http.server, aiohttp, tornado and a bare h11 loop")
def http(bench: Bench) -> None:
    table = bench.table(
        f"wrk -t1, keep-alive, {INDEX_SIZE / 1024:g} KiB index.html and JSON /api/me "
        "(vigil with its access log on unless said)"
    )
    runs: dict[tuple[str, str, int], Run] = {}
    low, top = CONNS[0], CONNS[-1]

    def record(run: Run) -> None:
        runs[run.target, run.path, run.conns] = run
        table.rows.append(run.row())

    vigil = Vigil.setup(bench)
    peers: dict[str, list[str]] = {"stdlib": []}  # name -> more arguments
    if importlib.util.find_spec("aiohttp"):
        peers["aiohttp"] = []
    else:
        bench.report.notes.append("aiohttp is not installed (pip install '.[bench]'): not measured")
    credential = ["--authorization", vigil.auth["Authorization"]]
    if importlib.util.find_spec("tornado"):
        peers["tornado"] = credential
    else:
        bench.report.notes.append("tornado is not installed (pip install '.[bench]'): not measured")

    def peer_server(peer: str, extra: list[str]) -> Server:
        port = free_port()
        argv = [bench.python, "-m", f"bench.peer_{peer}", "--port", str(port)]
        argv += ["--root", str(bench.static_dir()), *extra]
        return bench.server(peer, argv, port)

    for peer, extra in peers.items():
        with peer_server(peer, extra) as server:
            for path in (PAGE, ME):
                for conns in CONNS:
                    record(bench.measure(server, path, conns, vigil.auth))

    with peer_server("h11", credential) as floor, vigil.start(access_log=True) as server:
        at_start = server.memory()
        for path in (PAGE, ME):
            for conns in CONNS:
                best: dict[str, Run] = {}
                for _ in range(ROUNDS):
                    for one in (floor, server):
                        run = bench.measure(one, path, conns, vigil.auth)
                        kept = best.get(one.name)
                        if kept is None or run.cpu_us_per_request < kept.cpu_us_per_request:
                            best[one.name] = run
                record(best["h11"])
                record(best[server.name])
        for conns in CONNS:
            record(bench.measure(server, HEALTH, conns, vigil.auth))
        after = server.memory()
    with vigil.start(NO_LOG) as server:
        record(bench.measure(server, ME, top, vigil.auth))
    profiled = {path: _profile(bench, vigil, path, low) for path in (PAGE, ME)}
    _ratio_table(bench, runs)

    checks = bench.report.checks
    checks += [
        faster_check(
            f"vigil static / stdlib static, {c} conns",
            runs["vigil", PAGE, c],
            runs["stdlib", PAGE, c],
            STATIC_VS_STDLIB,
        )
        for c in CONNS
    ]
    checks += [
        faster_check(
            f"vigil /api/me / aiohttp JSON, {c} conns",
            runs["vigil", ME, c],
            runs.get(("aiohttp", ME, c)),
            ME_VS_AIOHTTP,
        )
        for c in CONNS
    ]
    checks += [
        cpu_check(
            f"vigil CPU/req ÷ bare h11's, {path}, {c} conns",
            runs["vigil", path, c],
            runs["h11", path, c],
            CPU_VS_H11,
        )
        for path in (PAGE, ME)
        for c in CONNS
    ]
    checks += [
        Check(
            f"vigil p99 ÷ bare h11's, {path}, {top} conns",
            runs["vigil", path, top].p99_us / runs["h11", path, top].p99_us,
            "≤",
            P99_VS_H11,
            "x",
        )
        for path in (PAGE, ME)
    ]
    checks += [
        faster_check(
            f"vigil / tornado, {path}, {c} conns",
            runs["vigil", path, c],
            runs.get(("tornado", path, c)),
            VS_TORNADO,
        )
        for path in (PAGE, ME)
        for c in CONNS
    ]
    checks += [
        loss_check(
            f"auth cost: /api/me vs /healthz, {c} conns",
            runs["vigil", ME, c],
            runs["vigil", HEALTH, c],
            AUTH_COST_PCT,
        )
        for c in CONNS
    ]
    for path in (PAGE, ME):
        p99 = runs["vigil", path, top].p99_us / 1000
        checks.append(Check(f"vigil p99, {path}, {top} conns", p99, "≤", P99_LIMIT_MS, " ms"))
    rss_mib = after.rss_kib / 1024
    checks.append(Check("vigil RSS (VmRSS after the runs)", rss_mib, "≤", RSS_LIMIT_MIB, " MiB"))

    me_top = runs["vigil", ME, top]
    log_rps, log_cpu = speed_ratio(me_top, runs[NO_LOG, ME, top])

    def p99s(target: str) -> str:
        page, me = (runs[target, path, low].p99_us / 1000 for path in (PAGE, ME))
        return f"{page:.1f} vs {me:.1f} ms"

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
        f"p99 at {low} conns, {PAGE} vs {ME}: vigil {p99s('vigil')}, bare h11 {p99s('h11')}. "
        "A tail of several ms goes with other processes on either core (others %): wrk's "
        "latencies include the time wrk waits for its own core.",
        "stdlib serves the file from disk, aiohttp, tornado and the bare h11 loop from memory. "
        "stdlib and aiohttp ignore the Authorization header; tornado and the bare h11 loop look "
        "it up in a dict of accepted header values (401 otherwise), as vigil's cache of "
        "verified ones. The bare h11 loop uses h11's public API to read every request and "
        "write every response (Date, Content-Type, Content-Length; ETag for the file), with "
        "one send() per response, no access log. tornado (asyncio's default loop, epoll) "
        "answers with the same headers from RequestHandlers, no access log.",
        _profile_note(profiled, runs),
    ]
    _profile_table(bench, profiled)


def _ratio_table(bench: Bench, runs: dict[tuple[str, str, int], Run]) -> None:
    """vigil's figures over the floor's (bare h11) and tornado's, all from this run.

    CPU time per request at each number of connections, p99 latency at the
    most, req/s at each; the req/s ratio also by CPU time per request, as
    the checks give it (the peer's over vigil's). No tornado rows if it did
    not run.
    """
    columns = {
        "measure": "vigil ÷ peer (this run)",
        "path": "path",
        "conns": "conns",
        "vigil": "vigil",
        "peer": "peer",
        "ratio": "ratio",
        "by_cpu": "by CPU µs/req",
    }
    table = bench.table("vigil against the floor (bare h11) and tornado", columns)
    top = CONNS[-1]

    def row(measure: str, path: str, conns: int, ours: float, theirs: float, digits: int) -> None:
        table.rows.append(
            {
                "measure": measure,
                "path": path,
                "conns": conns,
                "vigil": round(ours, digits) if digits else round(ours),
                "peer": round(theirs, digits) if digits else round(theirs),
                "ratio": round(ours / theirs, 2),
            }
        )

    for path in (PAGE, ME):
        for c in CONNS:
            ours, floor = runs["vigil", path, c], runs["h11", path, c]
            cpu = ours.cpu_us_per_request, floor.cpu_us_per_request
            row("CPU µs/req ÷ bare h11's", path, c, *cpu, 1)
    for path in (PAGE, ME):
        ours, floor = runs["vigil", path, top], runs["h11", path, top]
        row("p99 ms ÷ bare h11's", path, top, ours.p99_us / 1000, floor.p99_us / 1000, 2)
    for path in (PAGE, ME):
        for c in CONNS:
            ours, tornado = runs["vigil", path, c], runs.get(("tornado", path, c))
            if tornado is not None:
                row("req/s ÷ tornado's", path, c, ours.req_s, tornado.req_s, 0)
                table.rows[-1]["by_cpu"] = round(speed_ratio(ours, tornado)[1], 2)


def _profile(bench: Bench, vigil: Vigil, path: str, conns: int) -> tuple[Split, Run]:
    """Run vigil (access log on) under cProfile for one measurement of ``path``."""
    out = bench.workdir / f"vigil{path.replace('/', '-')}.pstats"
    with vigil.start("vigil + cProfile", access_log=True, profile=out) as server:
        run = bench.measure(server, path, conns, vigil.auth)
    if not out.exists():
        raise BenchError(f"vigil under cProfile wrote no profile: {server.log_tail()}")
    return split(out), run


def _profile_table(bench: Bench, profiled: dict[str, tuple[Split, Run]]) -> None:
    columns = {"group": "self time, %"}
    for path in profiled:
        columns[f"{path} own"] = f"{path}"
        columns[f"{path} charged"] = f"{path}, built-ins to callers"
    conns = next(iter(profiled.values()))[1].conns
    table = bench.table(f"vigil under cProfile (access log on), {conns} conns", columns)
    for group in GROUPS:
        row: dict[str, object] = {"group": group}
        for path, (prof, _) in profiled.items():
            row[f"{path} own"] = prof.percent(prof.own[group])
            row[f"{path} charged"] = prof.percent(prof.charged[group])
        table.rows.append(row)


def _profile_note(
    profiled: dict[str, tuple[Split, Run]], runs: dict[tuple[str, str, int], Run]
) -> str:
    costs, syscalls = [], []
    for path, (prof, run) in profiled.items():
        plain = runs["vigil", path, run.conns].cpu_us_per_request
        costs.append(f"{path} {run.cpu_us_per_request:.0f} (without it {plain:.0f})")
        calls_us = prof.own["syscalls"] / prof.total * run.cpu_us_per_request
        syscalls.append(f"{path} {calls_us:.0f} µs/req ({calls_us / plain:.0%})")
    startup = max(prof.percent(prof.startup) for prof, _ in profiled.values())
    return (
        "cProfile split: self time (tottime) by file: the h11 package, vigil's server/, "
        "built-ins that make system calls (socket methods, select, os, file writes), the "
        "rest; the second column per path charges the other built-ins (str.join, regex "
        "matching, ...) to their callers. cProfile inflates Python-level costs: every Python "
        f"call pays its hook, so under it vigil took {', '.join(costs)} CPU µs/req, and the "
        "shares of h11 and vigil are overstated against syscalls; read as µs, the syscalls "
        f"come to {', '.join(syscalls)} of vigil's CPU time without cProfile. cProfile's clock "
        "is wall time: select()'s share includes waits. The profile covers the whole process; "
        f"start-up (imports, one scrypt hash) is at most {startup:.1f} % of it."
    )
