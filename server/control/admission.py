"""Which device agents may join: declared secrets, one challenge per association, the proof.

Strategy: pure, like ``server.control.registry``. ``server.control.channel`` does the I/O
and hands in what only it can know: the peer's address, a fresh random
nonce, and ``now`` (monotonic seconds, the loop's clock).

The exchange (README, "Devices"):

1. an association comes up (``arrive``): a peer whose address is outside
   ``control.allow`` is refused at once; any other gets
   ``{"type": "challenge", "nonce": "<64 hex digits>"}`` (``server.link.codec.Challenge``),
   32 random bytes made for this association alone;
2. within ``control.hello_timeout`` seconds it says hello with
   ``"hmac": HMAC-SHA256(key = its secret, message = the nonce's 32 bytes +
   the device id in UTF-8)``, as 64 hex digits (``server.link.secret.proof``);
3. ``prove`` computes the same with the secret declared for that id and
   compares in constant time.

The secret never crosses the wire, and a proof is worth one association:

- a nonce serves one hello: the first hello on an association consumes its
  challenge, right or wrong, so nobody gets a second guess;
- a hello captured from an earlier association carries a proof over that
  association's nonce, never the current one. Among the last
  ``RECENT_NONCES`` challenges it is recognised and called "replayed";
  older captures are refused all the same, as a wrong hmac;
- a hello after the deadline is "late"; an association that never says
  hello is refused at the deadline ("no hello");
- with no device declared every hello is refused, with a hint to
  ``python -m server add-device``.

Every refusal is a ``Denial``: the shell sends ``reply`` in an ``error``
message, aborts the association, logs ``detail`` and writes a
``device_refused`` audit record with ``reason``. The reply does not say
whether an id is declared; the log does. A proven hello is the device:
``control.Registry.hello`` lets it replace an older association of the same
id (an agent that restarted before SCTP noticed its old association die);
an unproven one never reaches the registry, so it can displace nobody.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from server.base.addresses import AllowList
from server.config import DeviceKey
from server.link.entities import PROTOCOL
from server.link.secret import proof, same

RECENT_NONCES = 64  # challenges remembered to tell a replay from a wrong secret


class Reason(enum.Enum):
    """Why a device was refused: the ``reason`` of its audit record."""

    NOT_ALLOWED = "not allowed"  # its address is outside control.allow
    UNKNOWN = "unknown device"  # no such id declared
    NO_HMAC = "no hmac"  # a hello without proof
    WRONG = "wrong hmac"  # not made with the declared secret over this nonce
    REPLAYED = "replayed"  # the proof of an earlier association's challenge
    LATE = "late"  # hello after the deadline
    NO_HELLO = "no hello"  # nothing proven by the deadline
    PROTOCOL = "protocol"  # proven, but a hello of another protocol than vigil's


@dataclass(frozen=True, slots=True)
class Denial:
    reason: Reason
    detail: str  # for the log line: what exactly was wrong
    reply: str  # for the device's error message
    device: str | None = None  # the id it claimed, if it said hello
    addr: str | None = None  # the peer's address, if known


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    issued: float  # monotonic
    deadline: float  # monotonic
    addr: str


REFUSED = "hello refused: authentication failed"  # the reply for unknown, wrong, replayed


class Admission:
    """Challenges of associations that have not proven themselves yet, and who may try."""

    def __init__(self, keys: Iterable[DeviceKey], allow: AllowList, window: float) -> None:
        self.keys = {k.id: k.secret for k in keys}
        self.allow = allow
        self.window = window  # seconds from challenge to hello
        self.open: dict[int, Challenge] = {}  # association -> its unanswered challenge
        self.addrs: dict[int, str] = {}  # association -> peer address, while it is let in
        self._recent: deque[bytes] = deque(maxlen=RECENT_NONCES)

    def knows(self, assoc: int) -> bool:
        """Was ``assoc`` let in (challenged or proven) and not refused or gone since?"""
        return assoc in self.addrs

    def arrive(self, assoc: int, addr: str | None, nonce: bytes, now: float) -> Challenge | Denial:
        """An association came up from ``addr``: its challenge, or a refusal."""
        if addr is None or not self.allow.allows(addr):
            where = addr or "an unknown address"
            return Denial(
                Reason.NOT_ALLOWED,
                f"{where} is not in control.allow",
                "this address may not connect (control.allow)",
                addr=addr,
            )
        ch = Challenge(nonce, now, now + self.window, addr)
        self.open[assoc] = ch
        self.addrs[assoc] = addr
        self._recent.append(nonce)
        return ch

    def prove(
        self, assoc: int, device: str, given: str | None, protocol: int | None, now: float
    ) -> Denial | None:
        """Check the hello of ``assoc`` (``given``: its hmac; ``protocol``: the version it
        speaks); None if it proved ``device`` in vigil's protocol. Only a device that proved
        its secret learns which protocol vigil speaks."""
        ch = self.open.pop(assoc, None)  # one hello per challenge, right or wrong
        addr = self.addrs.get(assoc)

        def deny(reason: Reason, detail: str, reply: str = REFUSED) -> Denial:
            return Denial(reason, detail, reply, device, addr)

        if ch is None or now > ch.deadline:
            after = "" if ch is None else f" {now - ch.issued:.1f} s after the challenge"
            return deny(
                Reason.LATE,
                f"hello{after}, later than {self.window:g} s",
                f"hello refused: later than {self.window:g} s after the challenge",
            )
        secret = self.keys.get(device)
        if secret is None:
            hint = "no devices declared" if not self.keys else "not declared"
            return deny(Reason.UNKNOWN, f"{hint}: python -m server add-device {device}")
        if given is None:
            return deny(
                Reason.NO_HMAC,
                "hello without hmac (does the agent have its secret?)",
                "hello refused: no hmac (this vigil wants proof of the device's secret)",
            )
        answer = given.lower().encode()
        if same(proof(secret, ch.nonce, device), answer):
            if protocol == PROTOCOL:
                return None
            spoken = "no protocol" if protocol is None else f"protocol {protocol}"
            return deny(
                Reason.PROTOCOL,
                f"hello of {spoken}; vigil speaks protocol {PROTOCOL} (an older agent?)",
                f"hello refused: vigil speaks protocol {PROTOCOL} "
                f'("protocol": {PROTOCOL} and "entities"; README, Devices); '
                f"this hello says {spoken}",
            )
        if any(same(proof(secret, n, device), answer) for n in self._recent if n != ch.nonce):
            return deny(Reason.REPLAYED, "the hmac answers an earlier association's challenge")
        return deny(Reason.WRONG, "wrong hmac (not this device's secret?)")

    def due(self, assoc: int, now: float) -> Denial | None:
        """The deadline of ``assoc``'s challenge passed: a refusal if it is still unanswered."""
        ch = self.open.get(assoc)
        if ch is None or now < ch.deadline:
            return None
        del self.open[assoc]
        detail = f"no hello within {self.window:g} s of the challenge"
        return Denial(Reason.NO_HELLO, detail, "no hello in time", addr=ch.addr)

    def leave(self, assoc: int) -> None:
        """``assoc`` is gone (or was refused)."""
        self.open.pop(assoc, None)
        self.addrs.pop(assoc, None)

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
