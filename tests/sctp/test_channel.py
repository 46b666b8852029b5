"""ControlChannel against real kernel SCTP: hand-made peers and the reference agent."""

from __future__ import annotations

import json
import logging
import signal
import socket
import time

import pytest

from tests.sctp.sctpbench import SWITCH, Bench, Peer

METER = [{"key": "n", "kind": "sensor", "label": "Count"}]


def test_hello_welcome_and_device_list(bench: Bench) -> None:
    peer = Peer(bench)
    level = {"key": "level", "kind": "number", "label": "Level", "min": 0, "max": 10, "step": 1}
    assert peer.hello("lamp-1", [*SWITCH, level]) == {"type": "welcome", "device": "lamp-1"}
    dev = bench.device("lamp-1")
    assert dev is not None
    assert dev["id"] == "lamp-1" and dev["name"] == "lamp-1" and dev["online"] is True
    assert dev["entities"] == [*SWITCH, level]
    assert dev["state"] == {"power": None, "level": None}  # unknown until it says
    assert dev["since"].endswith("Z") and len(dev["since"]) == 20
    (online,) = bench.device_events("online")
    shown = {k: v for k, v in online["device"].items() if k != "state"}  # the sink has none
    assert shown == {k: v for k, v in dev.items() if k != "state"}


def test_heartbeat_settings_reach_the_association(bench: Bench) -> None:
    peer = Peer(bench)
    peer.hello("d1")
    server = bench.channel._sock  # the socket's defaults must have reached the association
    assoc = bench.assoc_of("d1")
    local = peer.sock.getsockname()
    params = server.get_paddrparams(assoc, (local[0], local[1]))
    assert params.hbinterval == bench.cfg.heartbeat_ms
    assert params.pathmaxrxt == bench.cfg.path_max_retrans
    assert server.get_assocparams(assoc).assocmaxrxt == bench.cfg.path_max_retrans
    from server.link.sctp import RTO_INITIAL_MS, RTO_MAX_MS, RTO_MIN_MS

    rto = server.get_rtoinfo(assoc)
    assert (rto.initial, rto.min, rto.max) == (RTO_INITIAL_MS, RTO_MIN_MS, RTO_MAX_MS)


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        (b'{"type": "hello", "device": ', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"type": "reboot"}', "unknown message type 'reboot'"),
        (b'{"type": "hello", "device": "bad id!"}', "hello: device must be"),
        (b'{"type": "telemetry", "data": {}}', "say hello first"),
    ],
)
def test_malformed_sealed_message_gets_error_and_association_stays_up(
    bench: Bench, payload: bytes, expect: str
) -> None:
    peer = Peer(bench)
    assert peer.shake("still-here")
    peer.send(payload)
    reply = peer.recv()
    assert reply["type"] == "error" and expect in reply["error"], reply
    peer.send({"type": "hello", "protocol": 2, "device": "still-here", "entities": SWITCH})
    assert peer.recv() == {"type": "welcome", "device": "still-here"}


@pytest.mark.parametrize(
    ("how", "detail"),
    [
        ("plain JSON", "not a vigil sealed-channel hello"),
        ("telemetry first", "a message on stream 1 before the handshake"),
        ("payload protocol id 7", "payload protocol id 7"),
        ("too large", "message too large"),
        ("garbage after the handshake", "control stream: message 0 fails to open"),
    ],
)
def test_what_is_not_sealed_is_refused_and_aborted(
    bench: Bench, caplog: pytest.LogCaptureFixture, how: str, detail: str
) -> None:
    caplog.set_level(logging.INFO, "server.control.channel")
    peer = Peer(bench)
    hello = json.dumps({"type": "hello", "protocol": 2, "device": "d1", "entities": SWITCH})
    if how == "plain JSON":
        peer.send_raw(hello.encode())
    elif how == "telemetry first":
        peer.send_raw(b"x" * 60, stream=1)
    else:
        assert peer.shake("d1")
        if how == "payload protocol id 7":
            peer.send(hello.encode(), ppid=7)
        elif how == "too large":
            peer.send_raw(b"x" * 70000)
        else:
            peer.send_raw(hello.encode())
    assert peer.aborted()
    device = None if how in ("plain JSON", "telemetry first") else "d1"
    bench.run_until(lambda: bench.audits)
    assert bench.audits == [
        {"type": "device_refused", "device": device, "addr": "127.0.0.1", "reason": "unsealed"}
    ]
    assert not bench.online("d1") and detail in caplog.text


def test_two_agents_at_once(bench: Bench) -> None:
    bench.agent("lamp-1")
    bench.agent("lamp-2")
    bench.run_until(lambda: bench.online("lamp-1") and bench.online("lamp-2"), 10)
    on = bench.command("lamp-1", "power", True)
    dim = bench.command("lamp-2", "brightness", 30)
    bench.run_until(lambda: on and dim)
    assert on.status == 200 and on.body["ok"] is True and on.body["state"] is True
    assert dim.status == 200 and dim.body["state"] == 30
    one, two = bench.device("lamp-1"), bench.device("lamp-2")
    assert one is not None and two is not None
    assert (one["state"]["power"], one["state"]["brightness"]) == (True, 100)
    assert (two["state"]["power"], two["state"]["brightness"]) == (False, 30)
    bench.run_until(lambda: len(bench.device_events("telemetry")) >= 2, 5)
    phases = [e["phase"] for t, e in bench.events if t == "command"]
    assert phases.count("issued") == 2 and phases.count("result") == 2


def test_command_refusals(bench: Bench) -> None:
    peer = Peer(bench)
    peer.hello("lamp-1")
    unknown = bench.command("nope", "power", True)
    assert unknown.status == 404 and "unknown device" in unknown.body["error"]
    bad = bench.command("lamp-1", "explode", True)
    assert (bad.status, bad.body) == (
        400,
        {"error": "lamp-1.explode: no such entity (lamp-1 has: power)"},
    )
    wrong = bench.command("lamp-1", "power", "on")
    assert (wrong.status, wrong.body) == (400, {"error": 'lamp-1.power: "on" is not true or false'})
    peer.close()
    bench.run_until(lambda: not bench.online("lamp-1"))
    offline = bench.command("lamp-1", "power", True)
    assert offline.status == 503 and "offline" in offline.body["error"]
    assert not [e for t, e in bench.events if t == "command"]  # nothing was issued


def test_failed_result_and_late_result(bench: Bench) -> None:
    b = Bench(command_timeout=0.5).start()
    try:
        peer = Peer(b)
        peer.hello("lamp-1")
        r = b.command("lamp-1", "power", True)
        cmd = peer.recv()
        assert cmd == {
            "type": "command",
            "id": cmd["id"],
            "entity": "power",
            "value": True,
            "user": "alice",
        }
        peer.send({"type": "result", "id": cmd["id"], "ok": False, "error": "bulb broken"})
        b.run_until(lambda: r)
        assert (r.status, r.body) == (200, {"id": cmd["id"], "ok": False, "error": "bulb broken"})
        assert b.channel.state("lamp-1") == {"power": None}  # a failure changes nothing

        late = b.command("lamp-1", "power", True)
        cmd = peer.recv()
        took = b.run_until(lambda: late, 3)
        assert late.status == 504 and "did not answer within 0.5 s" in late.body["error"]
        assert 0.4 < took < 1.0
        peer.send({"type": "result", "id": cmd["id"], "ok": True})
        b.run_for(0.3)
        assert len(late.calls) == 1  # the late result was dropped
        assert b.online("lamp-1")
        failed = [e for t, e in b.events if t == "command" and e["phase"] == "failed"]
        assert failed[0]["status"] == 504 and failed[0]["latency_ms"] >= 500
    finally:
        b.close()


def test_agent_killed_mid_command_fails_fast(bench: Bench) -> None:
    agent = bench.agent("lamp-1", "--reply-delay", "30")
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    r = bench.command("lamp-1", "power", True)
    bench.run_for(0.2)
    agent.send_signal(signal.SIGKILL)
    start = time.monotonic()
    took = bench.run_until(lambda: r, 5)
    assert r.status == 503 and "lost" in r.body["error"]
    assert took < 2 * bench.cfg.heartbeat_ms / 1000 + 1, took
    assert not bench.online("lamp-1")
    assert bench.device_events("offline")[-1]["device"]["id"] == "lamp-1"
    print(f"dead agent noticed in {time.monotonic() - start:.3f} s")


def test_agent_reconnects_after_server_restart(bench: Bench) -> None:
    bench.agent("lamp-1")
    bench.run_until(lambda: bench.online("lamp-1"), 10)
    port = bench.port
    bench.channel.close()
    bench.run_for(1.0)  # the agent notices and backs off
    again = Bench(port=port).start()
    again.procs = bench.procs
    bench.procs = []
    try:
        took = again.run_until(lambda: again.online("lamp-1"), 10)
        print(f"agent back {took:.2f} s after the restart")
        r = again.command("lamp-1", "brightness", 55)
        again.run_until(lambda: r)
        assert r.status == 200 and r.body["state"] == 55
    finally:
        again.close()


def test_telemetry_is_coalesced_to_the_newest(bench: Bench) -> None:
    peer = Peer(bench)
    peer.hello("meter", METER)
    for i in range(50):
        peer.send({"type": "telemetry", "data": {"n": i}}, stream=1)
    bench.run_until(lambda: any(e["data"]["n"] == 49 for e in bench.device_events("telemetry")))
    seen = [e["data"]["n"] for e in bench.device_events("telemetry")]
    assert len(seen) <= 3 and seen[-1] == 49, seen
    bench.run_for(0.5)
    assert len(bench.device_events("telemetry")) == len(seen)


def test_telemetry_keeps_what_fits_the_entities_and_names_the_rest(bench: Bench) -> None:
    peer = Peer(bench)
    peer.hello("meter", [*SWITCH, *METER])
    reading = {"power": True, "n": "high", "volts": 12}
    peer.send({"type": "telemetry", "data": reading}, stream=1)
    assert peer.recv() == {
        "type": "error",
        "error": 'telemetry: dropped meter.n: "high" is not a number; '
        "meter.volts: no such entity (meter has: power, n)",
    }
    bench.run_until(lambda: bench.device_events("telemetry"))
    assert [e["data"] for e in bench.device_events("telemetry")] == [{"power": True}]
    assert bench.channel.state("meter") == {"power": True, "n": None}


def test_device_shutdown_publishes_offline(bench: Bench) -> None:
    peer = Peer(bench)
    peer.hello("d1")
    peer.sock.shutdown(socket.SHUT_RDWR)  # graceful SCTP SHUTDOWN from the device
    bench.run_until(lambda: not bench.online("d1"))
    (ev,) = bench.device_events("offline")
    assert ev["device"]["online"] is False


def test_ipv6_listener(bench: Bench) -> None:
    b = Bench(host="::1").start()
    try:
        assert b.channel.address is not None and b.channel.address[0] == "::1"
        peer = Peer(b, "::1")
        assert peer.hello("v6") == {"type": "welcome", "device": "v6"}
        assert b.online("v6")
        peer.close()
    finally:
        b.close()


def test_port_in_use_raises_clear_oserror(bench: Bench) -> None:
    b = Bench(port=bench.port)
    with pytest.raises(OSError, match=f"SCTP 127.0.0.1 port {bench.port}"):
        b.start()
    b.loop.close()


def test_disabled_in_config() -> None:
    b = Bench(enabled=False)
    b.channel.start()
    assert b.channel.off_reason is not None and "enabled = false" in b.channel.off_reason
    r = b.command("x", "power", True)
    assert r.status == 503
    b.loop.close()
