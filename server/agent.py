"""Reference device agent: a simulated lamp with a thermometer.

    python -m server.agent --name lamp-1 [--host 127.0.0.1] [--port 9900]

Copy this file to connect real hardware: replace ``Lamp`` with your device.
The protocol (DESIGN.md, "SCTP control protocol") in short:

- one SCTP association to vigil; every message is one UTF-8 JSON object;
- stream 0 (ordered): we send ``hello``, vigil answers ``welcome`` (or an
  ``error``), then sends ``command``s; we answer each with a ``result``
  carrying the command's id;
- stream 1 (unordered is fine): we send ``telemetry`` whenever we like;
  vigil shows browsers at most 5 updates a second per device, the newest.

When the association is lost (vigil restarts, the cable is pulled) we
connect again, waiting 0.2 s, 0.4 s, ... up to 5 s between attempts.
Everything runs in one select() loop: no threads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import select
import sys
import time
from typing import Any

import sctp

from server.control import PPID_JSON, Stream
from server.sctpchannel import tune_peer
from server.sockopts import family_of

log = logging.getLogger("agent")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0


class Lamp:
    """The simulated hardware: a lamp and a thermometer next to it."""

    commands = ("on", "off", "toggle", "status")

    def __init__(self) -> None:
        self.on = False

    def run(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Do ``action``; return the result or raise ValueError for the error text."""
        if action == "on":
            self.on = True
        elif action == "off":
            self.on = False
        elif action == "toggle":
            self.on = not self.on
        elif action != "status":
            raise ValueError(f"unknown action {action!r}")
        return {"on": self.on, "temperature": self.temperature()}

    def temperature(self) -> float:
        # A room that warms up while the lamp is on, plus some sensor noise.
        base = 23.5 if self.on else 21.0
        return round(base + 0.3 * math.sin(time.time() / 10) + random.uniform(-0.05, 0.05), 2)


class Agent:
    """One connection to vigil at a time; ``session()`` returns when it is lost."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lamp = Lamp()
        self.sock: Any = None
        self.replies: list[tuple[float, dict[str, Any]]] = []  # (due, result), --reply-delay

    def send(self, msg: dict[str, Any], stream: Stream = Stream.CONTROL) -> None:
        # pysctp's sctp_send converts the PPID to network byte order itself
        flags = sctp.MSG_UNORDERED if stream is Stream.TELEMETRY else 0
        data = json.dumps(msg).encode()
        self.sock.sctp_send(data, ppid=PPID_JSON, stream=stream, flags=flags)

    def connect(self) -> None:
        family = family_of(self.args.host)
        sock = sctp.sctpsocket_tcp(family)
        # Notice a dead vigil in seconds, as vigil notices us: heartbeat every
        # second, give up after 2 unanswered retransmissions. (In C:
        # setsockopt SCTP_PEER_ADDR_PARAMS with SPP_HB_ENABLE, SCTP_ASSOCINFO.)
        tune_peer(sock, family, heartbeat_ms=1000, max_retrans=2)
        sock.settimeout(5)
        try:
            sock.connect((self.args.host, self.args.port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.replies.clear()

    def session(self) -> bool:
        """Say hello and serve commands; return whether vigil ever welcomed us."""
        self.send(
            {
                "type": "hello",
                "device": self.args.name,
                "name": self.args.label,
                "commands": list(Lamp.commands),
            }
        )
        welcomed = False
        next_reading = time.monotonic()
        while True:
            now = time.monotonic()
            due = min([next_reading] + [d for d, _ in self.replies])
            readable, _, _ = select.select([self.sock], [], [], max(0.0, due - now))
            if readable:
                _addr, flags, data, _info = self.sock.sctp_recv(65536)
                if flags & sctp.FLAG_NOTIFICATION:
                    continue
                if not data:  # vigil shut the association down
                    log.warning("vigil closed the association")
                    return welcomed
                msg = json.loads(data)
                if msg.get("type") == "error" and not welcomed:
                    log.error("vigil refused us: %s", msg.get("error"))
                    return False
                welcomed |= self.handle(msg)
            now = time.monotonic()
            for reply in [r for r in self.replies if r[0] <= now]:
                self.replies.remove(reply)
                self.send(reply[1])
            if welcomed and now >= next_reading:
                reading = {"temperature": self.lamp.temperature(), "on": self.lamp.on}
                self.send({"type": "telemetry", "data": reading}, Stream.TELEMETRY)
                next_reading = now + self.args.interval

    def handle(self, msg: dict[str, Any]) -> bool:
        """Act on one message from vigil; return True for a welcome."""
        kind = msg.get("type")
        if kind == "welcome":
            log.info("welcomed by vigil as %s", msg.get("device"))
            return True
        if kind == "error":
            log.error("vigil says: %s", msg.get("error"))
        elif kind == "command":
            log.info(
                "command %s from %s: %s %s",
                msg["id"],
                msg.get("user"),
                msg["action"],
                msg.get("args"),
            )
            try:
                result = {"ok": True, "result": self.lamp.run(msg["action"], msg.get("args", {}))}
            except ValueError as e:
                result = {"ok": False, "error": str(e)}
            reply = {"type": "result", "id": msg["id"], **result}
            self.replies.append((time.monotonic() + self.args.reply_delay, reply))
        return False

    def run(self) -> None:
        """Connect, serve, and connect again with exponential backoff, forever."""
        backoff = BACKOFF_MIN
        while True:
            try:
                self.connect()
                log.info("connected to vigil at %s port %d", self.args.host, self.args.port)
                if self.session():
                    backoff = BACKOFF_MIN
            except OSError as e:
                log.warning(
                    "vigil at %s port %d: %s", self.args.host, self.args.port, e.strerror or e
                )
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            log.info("reconnecting in %.1f s", backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.agent", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="device id, e.g. lamp-1")
    p.add_argument("--label", help="display name (default: Lamp NAME)")
    p.add_argument("--host", default="127.0.0.1", help="vigil's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9900, help="vigil's SCTP port (default 9900)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    p.add_argument(
        "--reply-delay",
        type=float,
        default=0.0,
        help="seconds to wait before answering a command (to test timeouts)",
    )
    args = p.parse_args(argv)
    args.label = args.label or f"Lamp {args.name}"
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s agent " + args.name + ": %(message)s",
    )
    try:
        Agent(args).run()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
