"""Section ``mqtt``: what the fleet bridge costs, and HTTP while the broker is away.

Against Debian's Mosquitto on loopback (tests/broker.py, the tests' own
broker), with a paho subscriber in this process (its network thread takes
the time a message arrives):

- Event → broker latency: the events are presence changes (no device
  needed): with ``presence.grace = 0`` each cycle is one new connection
  whose ``GET /api/me`` logs the user in (``join``) and whose close logs
  them out (``leave``); the figure is from the request leaving this process
  to the ``presence`` message arriving at the subscriber, beside the HTTP
  answer's own round trip in the same cycle (the event, its fsync'd audit
  record, the answer and the publish share one pass: both wait for it).
- CPU per event: vigil's utime+stime over the same cycles with the bridge
  off and on (same run), as µs per event and as a ratio.
- HTTP while the broker is away: one keep-alive connection sends
  ``GET /api/me`` back to back for a few seconds with the broker up, dead
  (connection refused: backoff 0.25 .. 5 s), and unreachable (SYNs dropped
  by nftables: every attempt waits out ``connect_timeout``, 1 s here);
  p50/p99/max per case. Unreachable needs root (nft).
"""

from __future__ import annotations

import http.client
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.harness import Bench, BenchError, Server, progress, section
from bench.report import Check
from bench.vigil import Vigil
from tests.broker import Broker  # tests/broker.py and support.py: stdlib only at import
from tests.support import password

CYCLES = 300
AWAY_SECONDS = 4.0
SITE = "bench"
COLUMNS = {
    "case": "case",
    "events": "events",
    "mqtt_p50_ms": "→ broker p50 ms",
    "mqtt_p99_ms": "→ broker p99 ms",
    "http_p50_ms": "HTTP p50 ms",
    "http_p99_ms": "HTTP p99 ms",
    "cpu_us_event": "vigil CPU µs/event",
}
AWAY_COLUMNS = {
    "case": "broker",
    "requests": "requests",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "max_ms": "max ms",
}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Watcher:
    """A paho subscriber (``fleet``) to ``topic``; ``wait(n)`` for the n-th message."""

    def __init__(self, broker: Broker, topic: str) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.arrivals: list[float] = []
        self._cond = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-watcher")
        self._client.username_pw_set("fleet", password("fleet"))
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()  # the bench's own thread, not vigil's

    def _on_message(self, _c: Any, _u: Any, _msg: Any) -> None:
        with self._cond:
            self.arrivals.append(time.monotonic())
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 5.0) -> float:
        """When message number ``count`` arrived (BenchError if it does not)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.arrivals) >= count, timeout):
                raise BenchError(f"mqtt: message {count} did not reach the subscriber")
            return self.arrivals[count - 1]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def mqtt_config(broker: Broker, **extra: Any) -> dict[str, dict[str, object]]:
    sections = broker.mqtt_sections(site=SITE, **extra)
    return {**sections, "presence": {"grace": 0}}


def cycles(server: Server, auth: dict[str, str], watcher: Watcher | None) -> dict[str, Any]:
    """CYCLES logins and logouts; latencies (when watched) and vigil's CPU per event."""
    mqtt, rtt = [], []
    cpu = server.cpu_seconds()
    seen = len(watcher.arrivals) if watcher else 0
    for _ in range(CYCLES):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.connect()
        sent = time.monotonic()
        conn.request("GET", "/api/me", headers=auth)
        resp = conn.getresponse()
        resp.read()
        rtt.append(time.monotonic() - sent)
        if resp.status != 200:
            raise BenchError(f"mqtt: /api/me answered {resp.status}")
        if watcher is not None:
            mqtt.append(watcher.wait(seen + 1) - sent)
        conn.close()
        if watcher is not None:
            watcher.wait(seen + 2)  # the leave, before the next join
            seen += 2
        else:
            time.sleep(0.002)
    used = server.cpu_seconds() - cpu
    row: dict[str, Any] = {
        "events": 2 * CYCLES,
        "http_p50_ms": round(statistics.median(rtt) * 1000, 2),
        "http_p99_ms": round(pct(rtt, 0.99) * 1000, 2),
        "cpu_us_event": round(used / (2 * CYCLES) * 1e6, 1),
    }
    if mqtt:
        row["mqtt_p50_ms"] = round(statistics.median(mqtt) * 1000, 2)
        row["mqtt_p99_ms"] = round(pct(mqtt, 0.99) * 1000, 2)
    return row


def back_to_back(server: Server, auth: dict[str, str], seconds: float) -> dict[str, Any]:
    """GET /api/me on one keep-alive connection for ``seconds``: latency figures."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    times = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            sent = time.monotonic()
            conn.request("GET", "/api/me", headers=auth)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise BenchError(f"mqtt: /api/me answered {resp.status}")
            times.append(time.monotonic() - sent)
    finally:
        conn.close()
    return {
        "requests": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(pct(times, 0.99) * 1000, 2),
        "max_ms": round(max(times) * 1000, 2),
    }


@contextmanager
def syn_drop(port: int) -> Iterator[None]:
    """nftables drops SYNs to ``port`` on this host (loopback included) while inside."""
    table = f"vigil_bench_mqtt_{port}"
    rules = (
        f"table inet {table} {{\n chain input {{\n  type filter hook input priority 0;\n"
        f"  tcp dport {port} tcp flags & (syn | ack) == syn drop\n }}\n}}\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


def wait_log(server: Server, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_tail(50):
        if time.monotonic() > deadline:
            raise BenchError(f"mqtt: no {text!r} in {server.name}'s log: {server.log_tail()}")
        time.sleep(0.05)


@section("mqtt", "MQTT bridge: event → broker latency, CPU per event, HTTP while it is away")
def mqtt(bench: Bench) -> None:
    if shutil.which("mosquitto") is None:
        raise BenchError("mosquitto is not installed (apt-get install mosquitto)")
    vigil = Vigil.setup(bench)
    title = f"{CYCLES} logins + logouts, one at a time (each a presence event; CPU per event)"
    table = bench.table(title, COLUMNS)
    with Broker(bench.workdir / "broker") as broker:
        with vigil.start("vigil no bridge", sections={"presence": {"grace": 0}}) as server:
            off = {"case": "bridge off", **cycles(server, vigil.auth, None)}
        sections = mqtt_config(broker, connect_timeout=1)
        with vigil.start("vigil bridge", sections=sections) as server:
            wait_log(server, "mqtt: connected")
            watcher = Watcher(broker, f"vigil/{SITE}/presence")
            try:
                watcher.wait(1)  # the retained one
                on = {"case": "bridge on", **cycles(server, vigil.auth, watcher)}
            finally:
                watcher.close()
            away = bench.table(f"GET /api/me back to back for {AWAY_SECONDS:g} s", AWAY_COLUMNS)
            away.rows.append({"case": "up", **back_to_back(server, vigil.auth, AWAY_SECONDS)})
            broker.kill()
            wait_log(server, "mqtt: broker lost")
            away.rows.append(
                {"case": "dead (refused)", **back_to_back(server, vigil.auth, AWAY_SECONDS)}
            )
            if os.geteuid() == 0 and shutil.which("nft"):
                with syn_drop(broker.port):
                    broker.start()  # listening, but no SYN reaches it
                    wait_log(server, "within 1 s")
                    away.rows.append(
                        {
                            "case": "unreachable (SYN dropped)",
                            **back_to_back(server, vigil.auth, AWAY_SECONDS),
                        }
                    )
            else:
                bench.report.notes.append("unreachable broker not measured: nftables needs root")
    table.rows += [off, on]
    added = on["cpu_us_event"] - off["cpu_us_event"]
    ratio = on["cpu_us_event"] / off["cpu_us_event"]
    cpu = Check("vigil CPU per event, bridge on ÷ off", ratio, "≤", 2.0, " times")
    bench.report.checks.append(cpu)
    worst = max(row["max_ms"] for row in away.rows[1:])  # while away
    bench.report.checks.append(Check("worst HTTP latency, broker away", worst, "≤", 1000, " ms"))
    bench.report.notes.append(
        f"The bridge adds {added:.0f} µs of vigil CPU per event ({ratio:.2f} times the event's "
        f"cost without it); events reach a subscriber in {on['mqtt_p50_ms']} ms (p50), "
        f"{on['mqtt_p99_ms']} ms (p99)."
    )
    progress(f"mqtt: {added:.0f} µs/event added, worst HTTP latency while away {worst} ms")
