"""A device agent behind a cable that can be pulled: a network namespace and a veth pair.

For use inside the UML guest (root; veth from its kernel's module tree) or
on any Linux box where we are root. ``AgentNet`` makes namespace ``NAME`` joined
to the root namespace by a veth pair: ``vigil_ip`` on the root side (vigil
listens there, or on 0.0.0.0), ``agent_ip`` inside the namespace. Slot k
uses 10.213.0.4k+1 / 4k+2 (/30), addresses no one else uses.

    with AgentNet() as net:
        agent = subprocess.Popen(net.wrap([python, "-m", "server.agent", "--host", net.vigil_ip]))
        net.pull()   # the agent's link goes down: no FIN, no ABORT, nothing
        net.plug()

``pull()`` sets the agent's end down, as if the device's cable were pulled:
vigil's side stays up and its packets vanish into the dead veth.
``loss(percent)`` drops that share of the packets each way at random
(``tc netem`` on both ends: the UML kernel has no nftables ip/inet tables);
``dropped()`` says how many were sent and dropped.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from collections.abc import Sequence

NET = ipaddress.ip_network("10.213.0.0/24")


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if out.returncode:
        raise OSError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def load(module: str) -> None:
    """``modprobe MODULE``; in a UML guest from its kernel's module tree (init.sh).

    A kernel with the module built in may have no module tree at all, so a
    failure here is not one: without it, ``ip``/``tc`` say so.
    """
    modules = os.environ.get("VIGIL_UML_MODULES")
    cmd = ["modprobe", *(["-d", modules] if modules else []), module]
    subprocess.run(cmd, capture_output=True, check=False)


def _tc(*args: str) -> str:
    out = subprocess.run(["tc", *args], capture_output=True, text=True, check=False)
    if out.returncode:
        raise OSError(f"tc {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


class AgentNet:
    """Namespace ``name`` with ``agent_ip``, linked to ``vigil_ip`` in the root namespace."""

    def __init__(self, name: str = "vigil-agent", slot: int = 0) -> None:
        self.name = name
        self.host_dev = f"vgl{slot}a"
        self.agent_dev = f"vgl{slot}b"
        base = int(NET.network_address) + 4 * slot
        self.vigil_ip = str(ipaddress.IPv4Address(base + 1))
        self.agent_ip = str(ipaddress.IPv4Address(base + 2))

    def __enter__(self) -> AgentNet:
        load("veth")
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.agent_dev)
            _ip("link", "set", self.agent_dev, "netns", self.name)
            _ip("addr", "add", f"{self.vigil_ip}/30", "dev", self.host_dev)
            _ip("link", "set", self.host_dev, "up")
            _ip("-n", self.name, "addr", "add", f"{self.agent_ip}/30", "dev", self.agent_dev)
            _ip("-n", self.name, "link", "set", "lo", "up")
            self.plug()
        except OSError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_dev], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pull(self) -> None:
        """Pull the agent's cable: its link goes down, nothing is sent."""
        _ip("-n", self.name, "link", "set", self.agent_dev, "down")

    def plug(self) -> None:
        _ip("-n", self.name, "link", "set", self.agent_dev, "up")

    def loss(self, percent: float) -> None:
        """Drop ``percent`` % of the packets at random, each way."""
        load("sch_netem")
        for ns in ((), ("-n", self.name)):
            dev = self.agent_dev if ns else self.host_dev
            _tc(*ns, "qdisc", "replace", "dev", dev, "root", "netem", "loss", f"{percent}%")

    def dropped(self) -> list[tuple[int, int]]:
        """(packets offered, packets dropped) by ``loss``: vigil -> agent, then agent -> vigil."""
        counts = []
        for ns in ((), ("-n", self.name)):
            dev = self.agent_dev if ns else self.host_dev
            m = re.search(
                r"Sent \d+ bytes (\d+) pkt \(dropped (\d+)",
                _tc(*ns, "-s", "qdisc", "show", "dev", dev),
            )
            if m is None:
                raise OSError(f"tc -s qdisc show dev {dev}: no counters")
            sent, dropped = int(m[1]), int(m[2])
            counts.append((sent + dropped, dropped))
        return counts
