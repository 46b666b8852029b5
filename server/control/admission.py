"""Which device agents may join: declared secrets, the handshake, the sealed hello.

Strategy: pure, like ``server.control.registry``. ``server.control.channel`` does the I/O
and hands in what only it can know: the peer's address, the bytes of the
handshake, and ``now`` (monotonic seconds, the loop's clock).

The exchange (README, "Devices"; the handshake is ``server.link.seal``'s):

1. an association comes up (``arrive``): a peer whose address is outside
   ``control.allow`` is refused at once; any other has
   ``control.hello_timeout`` seconds from now to prove itself;
2. its first message is the handshake's message 1 (``handshake``): its id
   in clear, the device's proof of its secret; vigil answers message 2,
   its own proof, and both ends have the session keys;
3. the first sealed message is its hello (``prove``): only when it opens
   (which needs the real device's ephemeral key, not just a recording of
   message 1) and names the id of the handshake, in vigil's protocol, is
   the association that device.

So a recorded message 1 replayed gets an answer but can never seal a hello:
it is refused at the deadline (``due``: "no hello"), having displaced
nobody. A message that fails to open at any time (``unsealed``) ends the
association.

Every refusal is a ``Denial``: the shell aborts the association (sending
``reply`` in a sealed ``error`` first when there are keys), logs ``detail``
and writes a ``device_refused`` audit record with ``reason``. The reply
does not say whether an id is declared; the log does. A proven hello is the
device: ``control.Registry.hello`` lets it replace an older association of
the same id (an agent that restarted before SCTP noticed its old
association die); an unproven one never reaches the registry, so it can
displace nobody.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from server.base.addresses import AllowList
from server.config import DeviceKey
from server.link.entities import PROTOCOL
from server.link.seal import Responder, Session, Unsealed


class Reason(enum.Enum):
    """Why a device was refused: the ``reason`` of its audit record."""

    NOT_ALLOWED = "not allowed"  # its address is outside control.allow
    UNKNOWN = "unknown device"  # no such id declared
    WRONG = "wrong secret"  # its handshake was not made with the declared secret
    OTHER_ID = "other id"  # a sealed hello naming another id than its handshake
    UNSEALED = "unsealed"  # a message that is no handshake or fails to open
    LATE = "late"  # handshake or hello after the deadline
    NO_HELLO = "no hello"  # nothing proven by the deadline
    PROTOCOL = "protocol"  # proven, but a hello of another protocol than vigil's


@dataclass(frozen=True, slots=True)
class Denial:
    reason: Reason
    detail: str  # for the log line: what exactly was wrong
    reply: str  # for the device's error message (sent sealed, if there are keys)
    device: str | None = None  # the id it claimed, if it said one
    addr: str | None = None  # the peer's address, if known


@dataclass(slots=True)
class Arrival:
    """An association let in and not proven yet."""

    issued: float  # monotonic
    deadline: float  # monotonic
    addr: str
    device: str | None = None  # the id its handshake proved


REFUSED = "refused: authentication failed"  # the reply for unknown, wrong, other id


class Admission:
    """Associations that have not proven themselves yet, and who may try."""

    def __init__(self, keys: Iterable[DeviceKey], allow: AllowList, window: float) -> None:
        self.keys = {k.id: k.secret for k in keys}
        self.allow = allow
        self.window = window  # seconds from association up to a sealed hello
        self.open: dict[int, Arrival] = {}  # association -> its arrival, until its hello
        self.addrs: dict[int, str] = {}  # association -> peer address, while it is let in
        self.devices: dict[int, str] = {}  # association -> the id its handshake proved

    def knows(self, assoc: int) -> bool:
        """Was ``assoc`` let in (arrived or proven) and not refused or gone since?"""
        return assoc in self.addrs

    def arrive(self, assoc: int, addr: str | None, now: float) -> Arrival | Denial:
        """An association came up from ``addr``: its deadline, or a refusal."""
        if addr is None or not self.allow.allows(addr):
            where = addr or "an unknown address"
            return Denial(
                Reason.NOT_ALLOWED,
                f"{where} is not in control.allow",
                "this address may not connect (control.allow)",
                addr=addr,
            )
        arrival = self.open[assoc] = Arrival(now, now + self.window, addr)
        self.addrs[assoc] = addr
        return arrival

    def handshake(self, assoc: int, first: bytes, now: float) -> tuple[Session, bytes] | Denial:
        """Message 1 of ``assoc``: the session and message 2, or a refusal."""
        arrival = self.open.get(assoc)
        addr = self.addrs.get(assoc)
        responder = Responder(self.keys.get)
        try:
            session, reply = responder.answer(first)
        except Unsealed as e:
            device, reason, hint = responder.device, Reason.WRONG, ""
            if device is None:  # not a handshake at all
                reason = Reason.UNSEALED
            elif device not in self.keys:
                declared = "no devices declared" if not self.keys else "not declared"
                reason, hint = (
                    Reason.UNKNOWN,
                    f" ({declared}: python -m server add-device {device})",
                )
            return Denial(reason, f"{e}{hint}", REFUSED, device, addr)
        late = self._late("handshake", arrival, now, responder.device, addr)
        if late is not None:
            return late
        assert arrival is not None
        arrival.device = responder.device
        return session, reply

    def _late(
        self, what: str, arrival: Arrival | None, now: float, device: str | None, addr: str | None
    ) -> Denial | None:
        """A refusal if ``what`` (the handshake, the hello) came after the deadline."""
        if arrival is not None and now <= arrival.deadline:
            return None
        after = "" if arrival is None else f" {now - arrival.issued:.1f} s after it came up"
        refused = "hello refused" if what == "hello" else "refused"
        return Denial(
            Reason.LATE,
            f"{what}{after}, later than {self.window:g} s",
            f"{refused}: later than {self.window:g} s",
            device,
            addr,
        )

    def prove(self, assoc: int, device: str, protocol: int | None, now: float) -> Denial | None:
        """The first sealed message of ``assoc`` opened and is a hello of ``device`` in
        ``protocol``: None if that is the device its handshake proved, in vigil's protocol.
        Only a device that proved its secret learns which protocol vigil speaks."""
        arrival = self.open.pop(assoc, None)  # one hello per association, right or wrong
        addr = self.addrs.get(assoc)

        def deny(reason: Reason, detail: str, reply: str = REFUSED) -> Denial:
            return Denial(reason, detail, reply, device, addr)

        late = self._late("hello", arrival, now, device, addr)
        if late is not None:
            return late
        assert arrival is not None
        if arrival.device is None:
            return deny(Reason.UNSEALED, "a hello before the handshake")
        if device != arrival.device:
            return deny(Reason.OTHER_ID, f"hello as {device} after a handshake as {arrival.device}")
        if protocol == PROTOCOL:
            self.devices[assoc] = device
            return None
        spoken = "no protocol" if protocol is None else f"protocol {protocol}"
        return deny(
            Reason.PROTOCOL,
            f"hello of {spoken}; vigil speaks protocol {PROTOCOL} (an older agent?)",
            f"hello refused: vigil speaks protocol {PROTOCOL} "
            f'("protocol": {PROTOCOL} and "entities"; README, Devices); '
            f"this hello says {spoken}",
        )

    def unsealed(self, assoc: int, why: str) -> Denial:
        """A message of ``assoc`` failed to open (``why``: ``seal.Unsealed``'s text)."""
        arrival = self.open.get(assoc)
        device = self.devices.get(assoc) or (arrival.device if arrival else None)
        return Denial(
            Reason.UNSEALED, why, "refused: a message failed to open", device, self.addrs.get(assoc)
        )

    def due(self, assoc: int, now: float) -> Denial | None:
        """The deadline of ``assoc`` passed: a refusal if it has not said a proven hello."""
        arrival = self.open.get(assoc)
        if arrival is None or now < arrival.deadline:
            return None
        del self.open[assoc]
        done = "a handshake but no sealed hello" if arrival.device else "no handshake"
        detail = f"{done} within {self.window:g} s"
        return Denial(Reason.NO_HELLO, detail, "no hello in time", arrival.device, arrival.addr)

    def leave(self, assoc: int) -> None:
        """``assoc`` is gone (or was refused)."""
        self.open.pop(assoc, None)
        self.addrs.pop(assoc, None)
        self.devices.pop(assoc, None)

    def reload(
        self, keys: Iterable[DeviceKey], allow: AllowList, window: float
    ) -> tuple[set[str], list[int]]:
        """New secrets, allow-list and window (SIGHUP).

        Returns the ids whose secret changed or went away (their devices must
        prove themselves again) and the associations whose address is no
        longer allowed.
        """
        old = self.keys
        self.keys = {k.id: k.secret for k in keys}
        self.allow, self.window = allow, window
        revoked = {i for i, secret in old.items() if self.keys.get(i) != secret}
        outside = [a for a, addr in self.addrs.items() if not allow.allows(addr)]
        return revoked, outside
