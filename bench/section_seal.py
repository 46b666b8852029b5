"""Section ``seal``: what the sealed control channel costs, against the same code unsealed.

Measured where the kernel has SCTP (natively, or inside a User-Mode Linux
guest, as section ``control``: ``python -m bench.section_seal --guest
OUT.json`` is the job, the host reads the figures back). Two variants of
the same commit, measured alternately (``ROUNDS`` times each, best kept):

- ``sealed``: the product, as it ships;
- ``plain``: the same processes with ``bench/plaintext/sitecustomize.py`` on
  their ``PYTHONPATH``, which makes ``Session.seal``/``open`` hand the
  plaintext through (the handshake still runs). It exists only here.

Each variant runs one vigil and measures, in this order:

- joins: ``FLEET`` devices of one process (``--fleet``: a hand-written
  device per association, a ``sensor`` each) make the handshake and a hello
  at once; vigil's CPU time from their first connect until all are
  welcomed, per association; vigil's VmRSS then (and before);
- telemetry: the fleet sends ``RATE`` readings a second, spread over its
  devices, for ``SECONDS``; vigil's CPU time per reading (its process's
  ``/proc/PID/schedstat``, in ns; the fleet counts what it sent);
- round trip: 10 operators, one reference agent (lamp) each, wrk -t10 -c10
  POSTing commands, as section ``control`` does; p50 / p99.

And, in the measuring process, the handshake alone: each side's CPU time
per handshake (``Initiator.first`` + ``finish`` for a device, ``Responder.answer``
for vigil) and ``seal`` / ``open`` of a reading-sized message.

The issue's targets: round trip p50 at most 1.2 times and CPU per telemetry message
at most 1.3 times the plain variant's.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import base64
import json
import os
import select
import socket
import subprocess
import tempfile
import time
from typing import Any

from bench.harness import REPO, Bench, BenchError, progress, section
from bench.report import Check
from bench.section_control import DESKS, OPERATORS, WRK_LUA, has_sctp

PLAINTEXT = Path(__file__).with_name("plaintext")  # its sitecustomize.py
VARIANTS = ("sealed", "plain")
ROUNDS = 3  # each variant measured this many times, alternately; the best is kept
FLEET = 32  # devices connected at once
RATE = 500  # telemetry messages a second, all devices together
SECONDS = 8  # of telemetry
HANDSHAKES = 200  # timed in-process
ROUND_TRIP_RATIO, TELEMETRY_RATIO = 1.2, 1.3  # sealed / plain, at most
READING = {"temperature": 21.53, "humidity": 48.2, "pressure": 1013.4}


def fleet_ids() -> list[str]:
    return [f"fleet-{i:02d}" for i in range(FLEET)]


# -- the host side: the registered section ------------------------------------


@section("seal", "The sealed control channel against the same code unsealed")
def seal_section(bench: Bench) -> None:
    out = bench.workdir / "seal.json"
    argv = [bench.python, "-m", "bench.section_seal", "--guest", str(out)]
    argv += ["--duration", str(bench.duration), "--warmup", str(bench.warmup)]
    if has_sctp():
        where = "natively"
        progress("seal: measuring natively (this kernel has SCTP)")
        status = subprocess.run(argv, cwd=REPO, check=False).returncode
    else:
        where = "inside UML"
        took = ROUNDS * len(VARIANTS) * (bench.duration + bench.warmup + SECONDS + 25) + 60
        progress(f"seal: measuring inside UML (no SCTP in this kernel), ~{took} s")
        from tests.uml.harness import UmlError, run

        try:
            status = run(argv, REPO, echo=False, timeout=900)
        except UmlError as e:
            raise BenchError(str(e).splitlines()[0]) from None
    if status != 0 or not out.exists():
        raise BenchError(f"seal measurement failed (status {status})")
    fill(bench, json.loads(out.read_text()), where)


def best(runs: list[dict[str, Any]], key: str) -> float:
    return min(run[key] for run in runs)


def fill(bench: Bench, r: dict[str, Any], where: str) -> None:
    columns = {
        "variant": "variant",
        "p50_ms": "round trip p50 ms",
        "p99_ms": "p99 ms",
        "reading_us": "vigil CPU µs / reading",
        "join_us": "vigil CPU µs / join",
        "rss0_mib": "RSS MiB, no device",
        "rss_mib": f"RSS MiB, {FLEET} devices",
    }
    table = bench.table(
        f"Sealed vs plain, {where}, the same commit, {ROUNDS} runs each alternately (best): "
        f"{FLEET} devices joining at once, then {RATE} readings/s for {SECONDS} s; commands "
        "from 10 operators (wrk -t10 -c10)",
        columns,
    )
    for variant in VARIANTS:
        runs = r["runs"][variant]
        table.rows.append(
            {
                "variant": variant,
                "p50_ms": round(best(runs, "p50_us") / 1000, 2),
                "p99_ms": round(best(runs, "p99_us") / 1000, 2),
                "reading_us": round(best(runs, "reading_ns") / 1000, 1),
                "join_us": round(best(runs, "join_ns") / 1000),
                "rss0_mib": round(best(runs, "rss0_kib") / 1024, 1),
                "rss_mib": round(best(runs, "rss_kib") / 1024, 1),
            }
        )
    every = bench.table(
        "Every run, in the order measured (the spread is this machine's noise)",
        {"run": "run", **columns},
    )
    for i in range(ROUNDS):
        for variant in VARIANTS:
            run = r["runs"][variant][i]
            every.rows.append(
                {
                    "run": i + 1,
                    "variant": variant,
                    "p50_ms": round(run["p50_us"] / 1000, 2),
                    "p99_ms": round(run["p99_us"] / 1000, 2),
                    "reading_us": round(run["reading_ns"] / 1000, 1),
                    "join_us": round(run["join_ns"] / 1000),
                    "rss0_mib": round(run["rss0_kib"] / 1024, 1),
                    "rss_mib": round(run["rss_kib"] / 1024, 1),
                }
            )
    sealed, plain = r["runs"]["sealed"], r["runs"]["plain"]
    p50 = best(sealed, "p50_us") / best(plain, "p50_us")
    reading = best(sealed, "reading_ns") / best(plain, "reading_ns")
    checks = bench.report.checks
    checks.append(Check("round trip p50, sealed ÷ plain", round(p50, 2), "≤", ROUND_TRIP_RATIO))
    checks.append(Check("CPU per reading, sealed ÷ plain", round(reading, 2), "≤", TELEMETRY_RATIO))
    pure = r["pure"]
    hs = bench.table(
        f"The handshake and the AEAD alone, {where}, in one process (µs, wall clock, "
        f"mean of {HANDSHAKES})",
        {"what": "what", "us": "µs"},
    )
    for key, what in (
        ("device_hs_ns", "device: message 1 and reading message 2 (Initiator)"),
        ("vigil_hs_ns", "vigil: reading message 1, writing message 2 (Responder)"),
        ("seal_ns", f"seal a {pure['reading_bytes']}-byte reading (telemetry stream)"),
        ("open_ns", f"open a {pure['reading_bytes']}-byte reading (telemetry stream)"),
    ):
        hs.rows.append({"what": what, "us": round(pure[key] / 1000, 1)})
    bench.report.notes.append(
        "The plain variant is the same commit with bench/plaintext/sitecustomize.py on the "
        "processes' PYTHONPATH: Session.seal and Session.open hand the plaintext through; the "
        "handshake still runs, so a join costs the same Noise work in both and its cost shows "
        "in the second table."
    )
    if where == "inside UML":
        bench.report.notes.append(
            "Inside UML everything shares one virtual CPU and every system call is trapped: "
            "the per-message system calls weigh far more than natively, which makes the AEAD's "
            "share (and so the ratios) smaller than on a Pi; the µs of the second table are the "
            "AEAD's own cost in this guest."
        )


# -- the measuring side (inside the guest, or natively) --------------------------


def cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` so far, in ns (schedstat; else stat's clock ticks)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pure_costs() -> dict[str, Any]:
    """Each side's CPU time per handshake and per seal/open of a reading, in ns."""
    from server.link import codec
    from server.link.seal import Initiator, Responder

    secret = os.urandom(32)
    device = "fleet-00"
    dev_ns = vigil_ns = 0
    clock = time.perf_counter_ns  # one process, nothing else to wait for: its CPU time, finer
    for _ in range(HANDSHAKES):
        t0 = clock()
        initiator = Initiator(secret, device)
        first = initiator.first()
        t1 = clock()
        vigil_side, reply = Responder(lambda _id: secret).answer(first)
        t2 = clock()
        device_side = initiator.finish(reply)
        t3 = clock()
        dev_ns += (t1 - t0) + (t3 - t2)
        vigil_ns += t2 - t1
    plain = codec.encode(codec.Telemetry(READING))
    t0 = clock()
    wire = [device_side.seal(1, plain) for _ in range(HANDSHAKES)]
    t1 = clock()
    for data in wire:
        vigil_side.open(1, data)
    t2 = clock()
    return {
        "device_hs_ns": dev_ns / HANDSHAKES,
        "vigil_hs_ns": vigil_ns / HANDSHAKES,
        "seal_ns": (t1 - t0) / HANDSHAKES,
        "open_ns": (t2 - t1) / HANDSHAKES,
        "reading_bytes": len(plain),
    }


def variant_env(variant: str) -> None:
    """Set this process's environment (inherited by vigil, agents, the fleet) for ``variant``."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if Path(p) != PLAINTEXT]
    if variant == "plain":
        paths.insert(0, str(PLAINTEXT))
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def one_run(home: Path, variant: str, duration: int, warmup: int) -> dict[str, Any]:
    from tests.sctp.devicekeys import declare
    from tests.sctp.panel import Panel
    from tests.support import password

    variant_env(variant)
    declare(home, [*fleet_ids(), *DESKS])
    unlimited = {"commands_per_second": 1000, "command_burst": 10000}
    panel = Panel(home, 5, "127.0.0.1", auth={"max_users": 12}, limits=unlimited)
    panel.declared.update(DESKS)
    pid = panel.vigil.proc.pid
    result: dict[str, Any] = {}
    try:
        time.sleep(1)  # start-up's one scrypt hash and imports are over
        result["rss0_kib"] = rss_kib(pid)
        fleet = subprocess.Popen(
            [sys.executable, "-m", "bench.section_seal", "--fleet", str(panel.sctp_port)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert fleet.stdin is not None and fleet.stdout is not None
        try:
            before = cpu_ns(pid)
            line = fleet.stdout.readline()
            assert line.strip() == "READY", f"fleet: {line!r}"
            result["join_ns"] = (cpu_ns(pid) - before) / FLEET
            time.sleep(0.5)
            result["rss_kib"] = rss_kib(pid)
            before = cpu_ns(pid)
            fleet.stdin.write("GO\n")
            fleet.stdin.flush()
            sent = int(fleet.stdout.readline())
            time.sleep(0.3)  # the last readings are read
            result["reading_ns"] = (cpu_ns(pid) - before) / sent
            result["readings"] = sent
        finally:
            fleet.stdin.close()
            fleet.wait(30)
        for desk in DESKS:
            panel.agent(desk)
        panel.wait(lambda: all(panel.online(desk) for desk in DESKS), 30)
        tokens = [base64.b64encode(f"{u}:{password(u)}".encode()).decode() for u in OPERATORS]
        result.update(round_trip(panel, home, tokens, duration, warmup))
    finally:
        panel.close()
    return result


def round_trip(
    panel: Any, home: Path, tokens: list[str], duration: int, warmup: int
) -> dict[str, Any]:
    lua = home / "command.lua"
    lua.write_text(WRK_LUA)
    for user, desk in zip(OPERATORS, DESKS, strict=True):  # each pays the slow hash once
        status, body = panel.curl(
            "POST", f"/api/devices/{desk}/commands", user, {"entity": "power", "value": True}
        )
        assert status == 200, (user, status, body)
    argv = ["wrk", "-t10", "-c10", "-s", str(lua), f"{panel.vigil.base}/"]
    args = ["--", *[x for pair in zip(tokens, DESKS, strict=True) for x in pair]]
    if warmup:
        subprocess.run([*argv, f"-d{warmup}s", *args], capture_output=True, check=True)
    done = subprocess.run([*argv, f"-d{duration}s", *args], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            run = json.loads(line.removeprefix("BENCH "))
            assert not run["errors"]["status"], run
            return {"p50_us": run["p50_us"], "p99_us": run["p99_us"], "commands": run["requests"]}
    raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")


def measure(out: Path, duration: int, warmup: int) -> None:
    results: dict[str, Any] = {"pure": pure_costs(), "runs": {v: [] for v in VARIANTS}}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-seal-") as tmp:
        for i in range(ROUNDS):
            for variant in VARIANTS:
                home = Path(tmp) / f"{variant}-{i}"
                home.mkdir()
                progress(f"seal: {variant}, run {i + 1} of {ROUNDS}")
                results["runs"][variant].append(one_run(home, variant, duration, warmup))
    variant_env("sealed")
    out.write_text(json.dumps(results))


# -- the device fleet (a process of its own: --fleet PORT) ------------------------


class Device:
    """One hand-written device: a one-to-one SCTP socket, the handshake, a hello, readings."""

    def __init__(self, name: str, port: int) -> None:
        import sctp

        from server.link.seal import Initiator
        from tests.sctp.devicekeys import secret

        self.name = name
        self.sock = sctp.sctpsocket_tcp(socket.AF_INET)
        self.sock.connect(("127.0.0.1", port))
        self.initiator: Any = Initiator(secret(name), name)
        self.session: Any = None
        self.welcomed = False
        self._send(self.initiator.first(), 0)

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def _send(self, data: bytes, stream: int) -> None:
        import sctp

        from server.link.codec import PPID

        flags = sctp.MSG_UNORDERED if stream else 0
        self.sock.sctp_send(data, ppid=PPID, stream=stream, flags=flags)

    def send(self, msg: dict[str, Any], stream: int = 0) -> None:
        self._send(self.session.seal(stream, json.dumps(msg).encode()), stream)

    def readable(self) -> None:
        """Read one message: the handshake's reply, then the welcome."""
        import sctp

        _addr, flags, data, _info = self.sock.sctp_recv(1 << 16)
        if flags & sctp.FLAG_NOTIFICATION:
            return
        assert data, f"{self.name}: vigil closed the association"
        if self.session is None:
            self.session = self.initiator.finish(data)
            sensor = {"key": "temperature", "kind": "sensor", "label": "T", "unit": "°C"}
            extra = [{"key": k, "kind": "sensor", "label": k} for k in ("humidity", "pressure")]
            hello = {"type": "hello", "protocol": 2, "device": self.name, "name": self.name}
            self.send({**hello, "entities": [sensor, *extra]})
            return
        msg = json.loads(self.session.open(0, data))
        assert msg["type"] == "welcome", msg
        self.welcomed = True


def fleet(port: int) -> None:
    """Connect ``FLEET`` devices, say READY; on GO send readings; print their count; wait."""
    devices = [Device(name, port) for name in fleet_ids()]
    deadline = time.monotonic() + 60
    while not all(d.welcomed for d in devices):
        assert time.monotonic() < deadline, "not all devices welcomed within 60 s"
        for d in select.select(devices, [], [], 1)[0]:
            d.readable()
    print("READY", flush=True)
    assert sys.stdin.readline().strip() == "GO"
    sent, start = 0, time.monotonic()
    total = RATE * SECONDS
    while sent < total:
        due = start + sent / RATE
        time.sleep(max(0.0, due - time.monotonic()))
        devices[sent % FLEET].send({"type": "telemetry", "data": READING}, 1)
        sent += 1
    print(sent, flush=True)
    sys.stdin.read()  # until the bench is done with us
    for d in devices:
        d.sock.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the measuring side of bench section seal")
    p.add_argument("--guest", type=Path, help="measure; write the figures here (JSON)")
    p.add_argument("--fleet", type=int, metavar="PORT", help="be the device fleet")
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args(argv)
    if args.fleet:
        fleet(args.fleet)
    elif args.guest:
        measure(args.guest, args.duration, args.warmup)
    else:
        p.error("--guest or --fleet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
