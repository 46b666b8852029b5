"""Reference device agent: a simulated dimmable lamp with a thermometer, or real GPIO pins.

    python -m server.agent --name lamp-1 --secret-file FILE [--host 127.0.0.1] [--port 9900]
    VIGIL_DEVICE_SECRET=<hex> python -m server.agent --name lamp-1 ...
    python -m server.agent --name porch --secret-file FILE --gpio gpio.toml   (server/agent/gpio.py)

The secret is the one ``python -m server add-device lamp-1`` made on vigil's
host (it prints this command line); never on the command line itself, which
every user sees in ``ps``.

The agent drives one ``Hardware`` (``server.agent.hardware``): the simulated
``Lamp``, or with ``--gpio`` the pins of a config file
(``server.agent.gpio.Pins``, README "GPIO"). For other hardware, write a
third class with the members of ``Hardware``. The protocol (control
protocol 2, README "Devices"; every message is a ``server.link.codec``
class, encoded and decoded there, as vigil does) in short:

- one SCTP association to vigil; first the handshake of the sealed channel
  (``server.link.seal``, Noise NNpsk0 with our secret as the key): we send
  message 1 with our id, vigil answers message 2, proving it knows our
  secret too; a vigil that cannot is never obeyed (one log line, ABORT);
- then every message is one UTF-8 JSON object, sealed; one that fails to
  open (tampered, replayed, dropped) ends the association (ABORT);
- stream 0 (ordered): we send ``hello`` with ``"protocol": 2`` and the
  hardware's ``entities`` (``server.link.entities``: switch, number,
  sensor, ...); vigil answers ``welcome``, or an ``error`` and aborts the
  association (too late, an old protocol, ...; an unknown id or a wrong
  secret is aborted at the handshake); then it sends ``command``s, each
  naming an entity and a value, and we answer each with a ``result``
  carrying the command's id and the entity's new ``state`` (or ``"ok":
  false`` and the ``error``);
- stream 1 (unordered is fine): we send ``telemetry``, ``{entity key:
  state}``, whenever we like; vigil shows browsers at most 5 updates a
  second per device, the newest.

vigil checks every command against the entity before it sends it; we check
it again (``Entity.command``), so that the hardware only ever gets a value
its entity allows, whoever sent it.

When the association is lost (vigil restarts, the cable is pulled) or vigil
refuses us, we connect again, waiting 0.2 s, 0.4 s, ... up to 5 s between
attempts. Everything runs in one select() loop; hardware that reports from
threads of its own (gpiozero's) hands its changes to the loop through a pipe.

The agent imports nothing of vigil but ``server.link``: the codec, the
entities, the seal, the SCTP tuning and the secret, which both ends share.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import sctp

from server.agent.hardware import Hardware, Lamp
from server.link import codec
from server.link.codec import HEARTBEAT_MS, MAX_SEALED, PATH_MAX_RETRANS, PPID, Stream
from server.link.entities import Invalid, Value, refusal, unknown
from server.link.sctp import family_of, tune_peer
from server.link.seal import Initiator, Session, Unsealed
from server.link.secret import parse_secret, read_secret_file

log = logging.getLogger("agent")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
HANDSHAKE_WAIT = 10.0  # seconds to wait for vigil's answer to our handshake
SECRET_ENV = "VIGIL_DEVICE_SECRET"


class Agent:
    """One connection to vigil at a time; ``session()`` returns when it is lost."""

    def __init__(self, args: argparse.Namespace, secret: bytes, hardware: Hardware) -> None:
        self.args = args
        self.secret = secret
        self.hardware = hardware
        self.sock: Any = None
        self.replies: list[tuple[float, codec.Result]] = []  # (due, result), --reply-delay
        self.sealed: Session | None = None  # the association's keys, after the handshake

    def _send(self, data: bytes, stream: Stream) -> None:
        # pysctp's sctp_send converts the PPID to network byte order itself
        flags = sctp.MSG_UNORDERED if stream is Stream.TELEMETRY else 0
        self.sock.sctp_send(data, ppid=PPID, stream=stream, flags=flags)

    def send(self, msg: codec.FromDevice, stream: Stream = Stream.CONTROL) -> None:
        assert self.sealed is not None  # only after the handshake
        self._send(self.sealed.seal(stream, codec.encode(msg)), stream)

    def abort(self) -> None:
        """End the association with an ABORT when the socket is closed (linger 0)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def connect(self) -> None:
        family = family_of(self.args.host)
        sock = sctp.sctpsocket_tcp(family)
        # Notice a dead vigil in seconds, as vigil notices us, with vigil's
        # default timers: heartbeat every 400 ms, give up after 4 unanswered
        # retransmissions, SACK at once (server/link/sctp.py).
        tune_peer(sock, family, HEARTBEAT_MS, PATH_MAX_RETRANS)
        sock.events.data_io = True  # each message's stream: it is opened with that stream's keys
        sock.settimeout(5)
        try:
            sock.connect((self.args.host, self.args.port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.replies.clear()
        self.sealed = None

    def receive(self) -> list[codec.FromServer] | None:
        """The next message from vigil ([] for a notification or garbage), None when it closed
        or sent what fails to open (then the association is aborted)."""
        assert self.sealed is not None  # only after the handshake
        _addr, flags, data, info = self.sock.sctp_recv(MAX_SEALED)
        if flags & sctp.FLAG_NOTIFICATION:
            return []
        if not data:  # vigil shut the association down
            log.warning("vigil closed the association")
            return None
        try:
            plain = self.sealed.open(info.stream, data)
        except Unsealed as e:
            log.error("a message from vigil failed to open, not obeyed; aborting: %s", e)
            self.abort()
            return None
        msg = codec.decode_from_server(plain)
        if isinstance(msg, str):
            log.error("vigil sent what we cannot read (ignored): %s", msg)
            return []
        return [msg]

    def handshake(self) -> bool:
        """Prove our secret to vigil and have vigil prove it to us; whether we have keys."""
        initiator = Initiator(self.secret, self.args.name)
        self._send(initiator.first(), Stream.CONTROL)
        where = f"vigil at {self.args.host} port {self.args.port}"
        deadline = time.monotonic() + HANDSHAKE_WAIT
        while select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                _addr, flags, data, _info = self.sock.sctp_recv(MAX_SEALED)
            except ConnectionResetError:  # aborted: an unknown id or a wrong secret
                data, flags = b"", 0
            if flags & sctp.FLAG_NOTIFICATION:
                continue
            if not data:
                log.error(
                    "%s refused our handshake (is this device's secret the one `python -m "
                    "server add-device %s` made? --secret-file or %s)",
                    where,
                    self.args.name,
                    SECRET_ENV,
                )
                return False
            try:
                self.sealed = initiator.finish(data)
            except Unsealed as e:
                log.error(
                    "%s: %s: not obeying it (a rogue server, or not this device's secret); "
                    "aborting",
                    where,
                    e,
                )
                self.abort()
                return False
            return True
        log.warning("no answer to our handshake from %s within %g s", where, HANDSHAKE_WAIT)
        return False

    def session(self) -> bool:
        """Prove who we are and serve commands; return whether vigil ever welcomed us."""
        if not self.handshake():
            return False
        hw = self.hardware
        self.send(codec.Hello(self.args.name, self.args.label, hw.entities))
        welcomed = False
        next_reading = math.inf  # the first reading goes once welcomed
        watched = [self.sock] if hw.fileno() is None else [self.sock, hw.fileno()]
        while True:
            due = min([next_reading] + [d for d, _ in self.replies])
            wait = None if due == math.inf else max(0.0, due - time.monotonic())
            readable, _, _ = select.select(watched, [], [], wait)
            if self.sock in readable:
                msgs = self.receive()
                if msgs is None:
                    return welcomed
                for msg in msgs:
                    if isinstance(msg, codec.Error) and not welcomed:
                        log.error("vigil refused us: %s", msg.error)
                        return False
                    if self.handle(msg) and not welcomed:
                        welcomed, next_reading = True, time.monotonic()
            if hw.fileno() in readable:
                for reading in hw.changes():  # before the welcome: the first reading has it
                    if welcomed:
                        self.telemetry(reading)
            now = time.monotonic()
            for reply in [r for r in self.replies if r[0] <= now]:
                self.replies.remove(reply)
                self.send(reply[1])
            if now >= next_reading:
                self.telemetry(hw.reading())
                next_reading = math.inf if hw.interval is None else now + hw.interval

    def telemetry(self, reading: dict[str, Value]) -> None:
        self.send(codec.Telemetry(reading), Stream.TELEMETRY)

    def handle(self, msg: codec.FromServer) -> bool:
        """Act on one message from vigil; return True for a welcome."""
        if isinstance(msg, codec.Welcome):
            log.info("welcomed by vigil as %s", msg.device)
            return True
        if isinstance(msg, codec.Error):
            log.error("vigil says: %s", msg.error)
        elif isinstance(msg, codec.Command):
            log.info("command %s from %s: %s = %s", msg.id, msg.user, msg.entity, msg.value)
            reply = self.command(msg)
            if not reply.ok:
                log.warning("command %s failed: %s", msg.id, reply.error)
            self.replies.append((time.monotonic() + self.args.reply_delay, reply))
        return False

    def command(self, msg: codec.Command) -> codec.Result:
        """Set the entity ``msg`` names, if it allows the value; the result to send."""
        name, hw = self.args.name, self.hardware
        entity = next((e for e in hw.entities if e.key == msg.entity), None)
        if entity is None:
            return codec.Result(msg.id, False, error=unknown(name, msg.entity, hw.entities))
        try:
            state = hw.set(entity.key, entity.command(msg.value))
        except Invalid as e:
            return codec.Result(msg.id, False, error=refusal(name, entity.key, str(e)))
        except ValueError as e:  # the hardware's own error
            return codec.Result(msg.id, False, error=str(e))
        return codec.Result(msg.id, True, state=state)

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


def secret_of(args: argparse.Namespace) -> bytes:
    """The device's secret: --secret-file, else $VIGIL_DEVICE_SECRET; ValueError if neither."""
    if args.secret_file is not None:
        return read_secret_file(args.secret_file)
    text = os.environ.get(SECRET_ENV)
    if text is None:
        raise ValueError(
            f"no secret: give --secret-file FILE or set {SECRET_ENV} "
            f"(python -m server add-device {args.name} on vigil's host makes one)"
        )
    try:
        return parse_secret(text)
    except ValueError as e:
        raise ValueError(f"{SECRET_ENV} {e}") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.agent", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="device id, e.g. lamp-1")
    p.add_argument(
        "--secret-file",
        type=Path,
        help=f"file with this device's secret (mode 0600); else ${SECRET_ENV} holds it",
    )
    p.add_argument("--label", help="display name (default: Lamp NAME, or GPIO NAME)")
    p.add_argument("--host", default="127.0.0.1", help="vigil's address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9900, help="vigil's SCTP port (default 9900)")
    p.add_argument(
        "--gpio",
        type=Path,
        metavar="CONFIG",
        help="drive the GPIO pins of this TOML file instead of the simulated lamp (README, GPIO)",
    )
    p.add_argument("--interval", type=float, help="seconds between the lamp's readings (1)")
    p.add_argument(
        "--reply-delay",
        type=float,
        default=0.0,
        help="seconds to wait before answering a command (to test timeouts)",
    )
    args = p.parse_args(argv)
    args.label = args.label or f"{'Lamp' if args.gpio is None else 'GPIO'} {args.name}"
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s agent " + args.name + ": %(message)s",
    )
    try:
        secret = secret_of(args)
        hardware = hardware_of(args)
    except ValueError as e:
        print(f"agent {args.name}: {e}", file=sys.stderr)
        return 2
    # SIGTERM (systemctl stop) ends like Ctrl-C: gpiozero's exit handler releases the pins
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        Agent(args, secret, hardware).run()
    except KeyboardInterrupt:
        return 0
    return 0


def hardware_of(args: argparse.Namespace) -> Hardware:
    """The simulated lamp, or the pins of ``--gpio CONFIG``; ValueError for what is wrong."""
    if args.gpio is None:
        return Lamp(1.0 if args.interval is None else args.interval)
    from server.agent import gpio  # only here: the lamp needs no gpiozero (its import takes ~50 ms)

    if args.interval is not None:
        raise ValueError("--interval is for the lamp: GPIO inputs are sent when they change")
    return gpio.Pins(gpio.load_config(args.gpio), str(args.gpio))
