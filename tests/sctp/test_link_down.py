"""A pulled cable between vigil and a device: no ABORT, no FIN, only SCTP's timers.

The agent runs in a network namespace behind a veth pair (tests/uml/guestnet.py);
pulling its end is a cable pulled at the device. The shipped heartbeat and
RTO tuning (server/link/sctp.py; server/control/channel.py's header has the
arithmetic) takes the device offline within 1.25 .. 2.7 s; the bound here
is loose (5 s), the bench (bench/section_control.py) reports the figures. A
cable that loses 5 % of the packets each way (tc netem) must not: SCTP
retransmits, the commands are answered and the device stays online.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.sctp.panel import Panel
from tests.support import require
from tests.uml.guestnet import AgentNet

COMMANDS = "/api/devices/lamp-1/commands"


def test_pulled_cable_takes_the_device_offline_and_fails_its_command(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "network namespaces need root")
    with AgentNet("vigil-test-agent", slot=1) as net:
        panel = Panel(tmp_path, command_timeout=30, control_host="0.0.0.0")
        try:
            with panel.events("bob") as events:
                panel.agent("lamp-1", "--reply-delay", "60", host=net.vigil_ip, wrap=net.wrap(()))
                events.wait_for(events.device("online", "lamp-1"))
                pending = panel.post_later("lamp-1", "power", True)
                events.wait_for(lambda ev: ev.type == "command" and ev.data["phase"] == "issued")
                assert pending.proc.poll() is None
                pulled = time.monotonic()
                net.pull()
                offline = events.wait_for(events.device("offline", "lamp-1", pulled), 10)
                answered, status, body = pending.result()
            took_offline, took_503 = offline.at - pulled, answered - pulled
            print(f"cable pulled: offline after {took_offline:.2f} s, 503 after {took_503:.2f} s")
            assert status == 503 and "lost" in body["error"], body
            assert took_offline < 5, took_offline
            assert took_503 < 5, took_503
            assert not panel.online("lamp-1")
        finally:
            panel.close()


def test_lossy_cable_keeps_the_device_online_and_answering(tmp_path: Path) -> None:
    """5 % of the packets lost each way: retransmissions hide it, the device stays."""
    require(os.geteuid() == 0, "network namespaces need root")
    with AgentNet("vigil-test-agent", slot=1) as net:
        # 60 commands as fast as curl goes: past alice's command rate (5 a second after
        # a burst of 20) once the round trips are quick; the rate is not what this tests
        limits = {"commands_per_second": 100, "command_burst": 100}
        panel = Panel(tmp_path, control_host="0.0.0.0", limits=limits)
        try:
            with panel.events("bob") as events:
                panel.agent("lamp-1", host=net.vigil_ip, wrap=net.wrap(()))
                events.wait_for(events.device("online", "lamp-1"))
                net.loss(5)
                lossy = time.monotonic()
                statuses = [
                    panel.curl("POST", COMMANDS, body={"entity": "power", "value": i % 2 == 0})[0]
                    for i in range(60)
                ]
                offline = [
                    ev for ev in events.received if events.device("offline", "lamp-1", lossy)(ev)
                ]
            dropped = net.dropped()
            print("packets (offered, dropped) to the agent and back:", dropped)
            assert sum(lost for _, lost in dropped) > 0  # the cable did lose packets
            assert statuses == [200] * 60
            assert offline == []
            assert panel.online("lamp-1")
        finally:
            panel.close()
