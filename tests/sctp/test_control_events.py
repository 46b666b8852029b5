"""What every browser sees of the control side: ``device`` and ``command`` events.

Bob watches ``/api/events`` while alice commands a device: he must see the
device come online with its entities, its telemetry (coalesced), alice's
command being issued and its result (with who, how long and the new state,
already in the device's state), and the device going offline.
Refused commands (viewer, unknown entity, out of range) reach neither the
device nor the stream. A device flooding vigil with messages must not starve HTTP.
"""

from __future__ import annotations

import http.client
import signal
import statistics
import subprocess
import sys
import time

from tests.sctp.devicekeys import agent_env
from tests.sctp.panel import ROOT, Panel
from tests.support import basic


def test_second_user_sees_device_and_command_events(panel: Panel) -> None:
    with panel.events("bob") as events:
        agent = panel.agent("lamp-1", "--interval", "0.1")
        online = events.wait_for(events.device("online", "lamp-1"))
        described = online.data["device"]["entities"]
        assert [(e["key"], e["kind"]) for e in described] == [
            ("power", "switch"),
            ("brightness", "number"),
            ("temperature", "sensor"),
        ]
        assert described[2]["unit"] == "°C"  # not mangled on the way (the agent sends \u00b0)
        telemetry = events.wait_for(events.device("telemetry", "lamp-1"))
        assert isinstance(telemetry.data["data"]["temperature"], float)
        assert telemetry.data["device"]["state"]["power"] is False

        status, body = panel.curl(
            "POST", "/api/devices/lamp-1/commands", body={"entity": "brightness", "value": 40}
        )
        assert status == 200 and body["ok"] is True and body["state"] == 40, body

        def command(phase: str) -> dict[str, object]:
            ev = events.wait_for(lambda e: e.type == "command" and e.data["phase"] == phase)
            return dict(ev.data)

        issued, result = command("issued"), command("result")
        assert issued["id"] == result["id"] == body["id"]
        assert issued["user"] == result["user"] == "alice"
        assert (issued["device"], issued["entity"], issued["value"]) == ("lamp-1", "brightness", 40)
        assert result["ok"] is True and result["status"] == 200 and result["state"] == 40
        _, (device,) = panel.curl("GET", "/api/devices", "bob")
        assert device["state"]["brightness"] == 40  # at once, not with the next reading
        assert isinstance(result["latency_ms"], int) and 0 <= result["latency_ms"] < 5000

        # telemetry is coalesced: at most 5 events a second although the agent sends 10
        start = time.monotonic()
        time.sleep(2)
        count = sum(
            1 for e in events.received if e.at >= start and events.device("telemetry", "lamp-1")(e)
        )
        assert 1 <= count <= 12, count

        agent.send_signal(signal.SIGKILL)
        events.wait_for(events.device("offline", "lamp-1"), 5)
        ids = [e.id for e in events.received]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_refused_commands_reach_neither_device_nor_stream(panel: Panel) -> None:
    with panel.events("bob") as events:
        panel.agent("lamp-1")
        events.wait_for(events.device("online", "lamp-1"))
        path = "/api/devices/lamp-1/commands"
        status, body = panel.curl("POST", path, "vera", {"entity": "power", "value": True})
        assert status == 403 and "viewer" in body["error"], body
        status, body = panel.curl("POST", path, "alice", {"entity": "explode", "value": True})
        assert status == 400 and body["error"].startswith("lamp-1.explode: no such entity"), body
        status, body = panel.curl("POST", path, "alice", {"entity": "brightness", "value": 140})
        assert (status, body) == (400, {"error": "lamp-1.brightness: 140 is above max 100"})
        status, body = panel.curl("POST", path, "alice", {"entity": "temperature", "value": 30})
        assert status == 400 and "a sensor only reports" in body["error"], body
        status, body = panel.curl("POST", path, "alice", {"entity": "brightness", "value": 70})
        assert status == 200 and body["state"] == 70
        _, (device,) = panel.curl("GET", "/api/devices")
        assert device["state"]["power"] is False  # vera's "on" never reached it
        events.wait_for(lambda e: e.type == "command" and e.data["phase"] == "result")
        sent = [(e.data["entity"], e.data["value"]) for e in events.received if e.type == "command"]
        assert sent == [("brightness", 70), ("brightness", 70)], sent


FLOOD = """
import json, os, socket, sys, time
import sctp
from server.link.seal import Initiator
sock = sctp.sctpsocket_tcp(socket.AF_INET)
sock.connect(("127.0.0.1", int(sys.argv[1])))
initiator = Initiator(bytes.fromhex(os.environ["VIGIL_DEVICE_SECRET"]), "flood")
sock.sctp_send(initiator.first(), ppid=53)
session = initiator.finish(sock.sctp_recv(65536)[2])
x = {"key": "x", "kind": "sensor", "label": "X"}
pad = {"key": "pad", "kind": "text_sensor", "label": "Pad"}
entities = [x, pad]
hello = {"type": "hello", "protocol": 2, "device": "flood", "entities": entities}
sock.sctp_send(session.seal(0, json.dumps(hello).encode()), ppid=53)
msg = json.dumps({"type": "telemetry", "data": {"x": 1, "pad": "y" * 200}}).encode()
bad = b"{not json"
sent, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    sock.sctp_send(session.seal(1, bad if sent % 50 == 0 else msg), ppid=53, stream=1)
    sent += 1
print(sent, flush=True)
"""


def test_a_flooding_device_does_not_starve_http(panel: Panel) -> None:
    seconds = 4.0
    with panel.events("bob") as events:
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, str(panel.sctp_port), str(seconds)],
            cwd=ROOT,
            env=agent_env("flood"),
            stdout=subprocess.PIPE,
        )
        events.wait_for(events.device("online", "flood"))
        conn = http.client.HTTPConnection(panel.vigil.host, panel.vigil.port, timeout=10)
        took = []
        start = time.monotonic()
        while flood.poll() is None and time.monotonic() - start < seconds + 5:
            t0 = time.monotonic()
            conn.request("GET", "/api/devices", headers={"Authorization": basic("alice")})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            took.append(time.monotonic() - t0)
            time.sleep(0.02)
        conn.close()
        sent = int(flood.communicate(timeout=10)[0])
        flooded = [e for e in events.received if events.device("telemetry", "flood")(e)]
    took.sort()
    p50, p90, worst = statistics.median(took), took[int(len(took) * 0.9)], took[-1]
    print(
        f"flood: {sent} messages in {seconds:g} s; {len(took)} HTTP requests meanwhile, "
        f"p50 {p50 * 1000:.1f} ms, max {worst * 1000:.1f} ms; {len(flooded)} telemetry events"
    )
    assert sent > 1000, sent
    assert len(took) >= 20, len(took)
    # Starvation shows in the median and the tail; one stall of about a second is
    # the guest's single virtual CPU running the flooder, so the max bound is loose.
    assert p50 < 0.1 and p90 < 0.3 and worst < 3.0, (p50, p90, worst)
    assert len(flooded) <= seconds * 5 + 5, len(flooded)  # coalesced to 5 a second
