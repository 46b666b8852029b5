"""Machinery shared by the sections: the registry, server processes, wrk.

A section is a function ``fn(bench: Bench) -> None`` registered with
``@section(name, title)`` in a module ``bench/section_<name>.py``; it starts
servers with ``bench.server()``, measures them with ``bench.measure()`` and
fills ``bench.report``. Servers run pinned to one core (``taskset -c``),
wrk on the other, both on loopback. A server's CPU time comes from
/proc/PID/stat (utime + stime over the measured run), its memory from
/proc/PID/status (VmRSS, VmHWM) after the run. What other processes take
of either core meanwhile comes from /proc/stat, less the server's (or
wrk's) own CPU time.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Check, SectionReport, Table

REPO = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
INDEX_SIZE = 2048  # bytes of the static page every server serves
NOISE = 0.10  # share of the server's (or wrk's) core taken by other processes that disturbs a run

# Columns of a table of ``Run.row()``s.
RUN_COLUMNS = {
    "target": "server",
    "path": "path",
    "conns": "conns",
    "req_s": "req/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "cpu_us": "CPU µs/req",
    "rss_mib": "RSS MiB",
    "hwm_mib": "HWM MiB",
    "others_pct": "others %",
    "wrk_others_pct": "wrk's core others %",
    "errors": "errors",
}


class BenchError(Exception):
    """A measurement could not be made; str() is one line for the report."""


def progress(message: str) -> None:
    """Say what is happening on stderr (stdout is the report)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the registry ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    title: str
    run: Callable[[Bench], None]
    default: bool  # part of a run that names no sections


SECTIONS: dict[str, Section] = {}


def section(
    name: str, title: str, *, default: bool = True
) -> Callable[[Callable[[Bench], None]], Callable[[Bench], None]]:
    """Register the decorated function as section ``name``; return it unchanged."""

    def register(fn: Callable[[Bench], None]) -> Callable[[Bench], None]:
        if name in SECTIONS:
            raise ValueError(f"bench section {name!r} registered twice")
        SECTIONS[name] = Section(name, title, fn, default)
        return fn

    return register


# -- sockets and processes -------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    cafile: Path | None = None,
) -> tuple[int, bytes]:
    """One GET on a fresh connection (HTTPS trusting ``cafile`` if given); (status, body)."""
    conn: http.client.HTTPConnection
    if cafile is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        ctx = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Memory:
    rss_kib: int
    hwm_kib: int


class Server:
    """A server process pinned to one core; a context manager that stops it with SIGTERM."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        cpu: int,
        log: Path,
        https: tuple[int, Path] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.https = https  # (port, certificate to trust) if it also serves HTTPS
        self.cafile: Path | None = None  # set on the HTTPS view (``over_tls``)
        self._argv = ["taskset", "-c", str(cpu), *argv]
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "server not started"
        return self._proc.pid  # taskset execs the server: same pid

    def __enter__(self) -> Server:
        progress(f"starting {self.name} on port {self.port}")
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self._wait_listening()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            progress(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT:g} s; killing it")
            self._proc.kill()
            self._proc.wait()

    def _wait_listening(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self._proc.returncode}: {self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise BenchError(f"{self.name} did not listen on port {self.port} in {START_TIMEOUT:g} s")

    def over_tls(self) -> Server:
        """The same running process, measured on its HTTPS port (trusting its certificate)."""
        if self.https is None:
            raise BenchError(f"{self.name} serves no HTTPS")
        view = copy.copy(self)
        view.port, view.cafile = self.https
        view.name = f"{self.name} HTTPS"
        return view

    @property
    def url(self) -> str:
        return f"{'https' if self.cafile else 'http'}://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 3) -> str:
        text = self._log.read_text(errors="replace").strip().splitlines()
        return " / ".join(text[-lines:]) or "(no output)"

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all threads) so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()  # fields 3.. of proc(5)
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory(self) -> Memory:
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return Memory(values["VmRSS"], values["VmHWM"])


def core_ticks(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of core ``cpu`` so far.

    Busy counts irq and softirq: the kernel charges them to the stime of the
    process they interrupt too (loopback's receive path runs in the sender).
    """
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, line.split()[1:9])
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise BenchError(f"no CPU {cpu} in /proc/stat")


def children_cpu_seconds() -> float:
    """utime + stime of the child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CoreWatch:
    """What other processes take of core ``cpu`` between ``__init__`` and ``others``."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self._busy, self._total = core_ticks(cpu)

    def others(self, own_cpu_seconds: float) -> float:
        """Share of the core (0 to 1) taken meanwhile beyond ``own_cpu_seconds``."""
        busy, total = core_ticks(self.cpu)
        others = (busy - self._busy) / CLOCK_TICKS - own_cpu_seconds
        return max(others, 0) * CLOCK_TICKS / max(total - self._total, 1)


# -- wrk -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One measured wrk run against one server."""

    target: str
    path: str
    conns: int
    requests: int
    seconds: float
    p50_us: float
    p99_us: float
    cpu_seconds: float
    others: float  # share of the server's core that other processes used meanwhile
    wrk_others: float  # share of wrk's core that other processes used meanwhile
    memory: Memory
    errors: dict[str, int]

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / max(self.requests, 1)

    @property
    def disturbed(self) -> bool:
        return max(self.others, self.wrk_others) > NOISE

    def row(self) -> dict[str, Any]:
        bad = {k: v for k, v in self.errors.items() if v}
        return {
            "target": self.target,
            "path": self.path,
            "conns": self.conns,
            "req_s": round(self.req_s),
            "p50_ms": round(self.p50_us / 1000, 2),
            "p99_ms": round(self.p99_us / 1000, 2),
            "cpu_us": round(self.cpu_us_per_request, 1),
            "rss_mib": round(self.memory.rss_kib / 1024, 1),
            "hwm_mib": round(self.memory.hwm_kib / 1024, 1),
            "others_pct": round(self.others * 100),
            "wrk_others_pct": round(self.wrk_others * 100),
            "errors": ", ".join(f"{k} {v}" for k, v in bad.items()) or 0,
        }


def speed_ratio(a: Run, b: Run) -> tuple[float, float]:
    """How much faster ``a`` is than ``b``: by req/s, and by CPU time per request."""
    return a.req_s / b.req_s, b.cpu_us_per_request / a.cpu_us_per_request


def faster_check(name: str, a: Run | None, b: Run | None, limit: float) -> Check:
    """Check that ``a`` is at least ``limit`` times as fast as ``b`` (n/a if one is None)."""
    if a is None or b is None:
        return Check(name, None, "≥", limit, "x")
    by_rps, by_cpu = speed_ratio(a, b)
    return Check(name, by_rps, "≥", limit, "x", by_cpu)


def cpu_check(name: str, a: Run, b: Run, limit: float) -> Check:
    """Check that ``a`` spends at most ``limit`` times the CPU time per request of ``b``."""
    return Check(name, a.cpu_us_per_request / b.cpu_us_per_request, "≤", limit, "x")


def loss_check(name: str, a: Run, b: Run, limit: float) -> Check:
    """Check that ``a`` is at most ``limit`` percent slower than ``b``."""
    by_rps, by_cpu = speed_ratio(a, b)
    return Check(name, (1 - by_rps) * 100, "≤", limit, " %", (1 - by_cpu) * 100)


@dataclass(slots=True)
class Bench:
    """Settings of this bench run, plus the report of the section now running."""

    workdir: Path
    duration: int = 5  # seconds; wrk takes whole seconds
    warmup: int = 1
    server_cpu: int = 1
    client_cpu: int = 0
    attempts: int = 3  # runs per figure while other processes disturb the server's core
    python: str = sys.executable
    report: SectionReport = field(default_factory=lambda: SectionReport("", ""))
    _static_dir: Path | None = field(default=None, init=False)

    def static_dir(self) -> Path:
        """A directory with the index.html all servers serve (INDEX_SIZE bytes)."""
        if self._static_dir is None:
            self._static_dir = self.workdir / "static"
            self._static_dir.mkdir()
            head = b"<!doctype html>\n<html><head><title>vigil bench</title></head><body>\n"
            tail = b"</body></html>\n"
            line = b"<p>The quick brown fox jumps over the lazy dog.</p>\n"
            body = (line * (INDEX_SIZE // len(line)))[: INDEX_SIZE - len(head) - len(tail)]
            (self._static_dir / "index.html").write_bytes(head + body + tail)
        return self._static_dir

    def server(
        self, name: str, argv: list[str], port: int, https: tuple[int, Path] | None = None
    ) -> Server:
        log = self.workdir / (name.replace(" ", "-") + ".log")
        return Server(name, argv, port, self.server_cpu, log, https)

    def table(self, title: str, columns: dict[str, str] = RUN_COLUMNS) -> Table:
        table = Table(title, dict(columns))
        self.report.tables.append(table)
        return table

    def measure(
        self,
        server: Server,
        path: str,
        conns: int,
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> Run:
        """Warm up, run wrk for ``duration`` s; return the run with the most req/s.

        A run is repeated, up to ``attempts`` runs, while other processes
        take more than NOISE of the server's core. The path is first fetched
        once with ``get`` so that a wrong path or credentials fail loudly
        instead of measuring error responses; so do non-2xx answers in a run.
        """
        try:
            status, body = get(server.port, path, headers, server.cafile)
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"{server.name} GET {path}: {e}; {server.log_tail()}") from None
        if status != 200:
            raise BenchError(f"{server.name} GET {path}: status {status}: {body[:120]!r}")
        target = target or server.name
        progress(f"{target}: GET {path}, {conns} connections")
        self._wrk(server.url, path, conns, self.warmup, headers)
        runs = [self._run(server, path, conns, headers, target)]
        while runs[-1].disturbed and len(runs) < self.attempts:
            run = runs[-1]
            progress(
                f"others took {run.others:.0%} of the server's core, {run.wrk_others:.0%} "
                "of wrk's; again"
            )
            runs.append(self._run(server, path, conns, headers, target))
        return max(runs, key=lambda run: run.req_s)

    def _run(
        self, server: Server, path: str, conns: int, headers: Mapping[str, str] | None, target: str
    ) -> Run:
        cpu_before = server.cpu_seconds()
        wrk_before = children_cpu_seconds()
        server_core, wrk_core = CoreWatch(self.server_cpu), CoreWatch(self.client_cpu)
        summary = self._wrk(server.url, path, conns, self.duration, headers)
        cpu = server.cpu_seconds() - cpu_before
        run = Run(
            target=target,
            path=path,
            conns=conns,
            requests=summary["requests"],
            seconds=summary["duration_us"] / 1e6,
            p50_us=summary["p50_us"],
            p99_us=summary["p99_us"],
            cpu_seconds=cpu,
            others=server_core.others(cpu),
            wrk_others=wrk_core.others(children_cpu_seconds() - wrk_before),
            memory=server.memory(),
            errors=summary["errors"],
        )
        if run.errors["status"]:
            raise BenchError(f"{target} GET {path}: {run.errors['status']} non-2xx/3xx answers")
        return run

    def _wrk(
        self, base: str, path: str, conns: int, seconds: int, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        argv = ["taskset", "-c", str(self.client_cpu), "wrk", "-t1", f"-c{conns}"]
        argv += [f"-d{seconds}s", "-s", str(WRK_SCRIPT)]
        for key, value in (headers or {}).items():
            argv += ["-H", f"{key}: {value}"]
        argv.append(f"{base}{path}")  # wrk does not check certificates: get() did
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in out.stdout.splitlines():
            if line.startswith("BENCH "):
                return dict(json.loads(line.removeprefix("BENCH ")))
        why = (out.stderr or out.stdout).strip().splitlines()
        raise BenchError(f"wrk failed (status {out.returncode}): {why[0] if why else ''}")
