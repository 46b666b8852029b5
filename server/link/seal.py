"""The sealed control channel: a Noise handshake, then every message sealed (README, Devices).

Device (initiator) and vigil (responder) prove the device's secret to each
other and agree fresh keys per association with the Noise pattern
``Noise_NNpsk0_25519_ChaChaPoly_SHA256`` (noiseprotocol.org, revision 34);
every message after it is sealed with ChaCha20-Poly1305, both ways, on both
streams. The primitives are the ``cryptography`` package's (X25519,
ChaCha20-Poly1305, HKDF-SHA256); this module only runs Noise's state
machine over them.

Handshake, two messages (``Initiator`` / ``Responder``, bytes in, bytes out):

- device -> vigil: ``0x01`` (version), one byte n, the device id (n ASCII
  bytes, in clear: vigil needs it to pick the secret), then Noise message 1
  (``psk, e``: 32 bytes of ephemeral key and a 16-byte tag over an empty
  payload);
- vigil -> device: Noise message 2 (``e, ee``: 32 + 16 bytes).

The prologue is ``PROLOGUE_LABEL`` followed by the clear header (version,
n, id), so both ends bind the protocol version and the device id. The PSK
is the device's secret when it has 32 bytes, else SHA-256 of it
(``psk_of``). A wrong secret on either side fails a tag: vigil cannot open
message 1 of a rogue device, the device cannot open message 2 of a rogue
vigil, and neither gets a ``Session``.

Transport (``Session``), keys from the final chaining key ``ck``:

- control stream (ordered): Noise's ``Split()`` keys, ``HKDF(ck, "")``,
  first for device -> vigil, second for vigil -> device; an implicit
  counter from 0 (the Noise ``CipherState``). The wire message is the
  ciphertext alone (plaintext + 16 bytes). A message replayed, dropped or
  out of order fails to open.
- telemetry stream (may be unordered): ``HKDF(ck, TELEMETRY_LABEL)``, in the
  same order; each wire message is its 64-bit counter (8 bytes, little
  endian) then the ciphertext (plaintext + 24 bytes in all). The receiver
  accepts a counter at most ``WINDOW - 1`` below the highest it has opened,
  never twice (a sliding bitmap, as WireGuard and IPsec do).

AEAD nonce: 4 zero bytes then the 64-bit counter little endian (Noise's
ChaChaPoly); associated data empty. ``HKDF(ck, ikm)`` is Noise's: RFC 5869
HKDF-SHA256 with salt ``ck``, input ``ikm``, empty info, two 32-byte
outputs. Keys per direction and per stream are distinct, so every (key,
nonce) pair is used once.

Anything that fails raises ``Unsealed`` with a one-line reason; after a
failure to open, the session refuses everything (the association must end).

Pure: no socket, no clock (randomness comes from the OS through
``cryptography``'s key generation).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL_NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
VERSION = 1
PROLOGUE_LABEL = b"vigil sealed channel\x00"
TELEMETRY_LABEL = b"vigil telemetry"

CONTROL = 0  # = codec.Stream.CONTROL
TELEMETRY = 1  # = codec.Stream.TELEMETRY

KEY = 32  # bytes of an X25519 public key, a ChaCha20 key, a PSK
TAG = 16  # bytes of a Poly1305 tag
COUNTER = 8  # bytes of the telemetry stream's explicit counter
# codec.DEVICE_ID (a test ties them: seal imports no other server module, so codec may use it)
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ - (not first: . _ -)"
WINDOW = 64  # telemetry: how far below the highest counter opened one may still open
# Noise caps any message at 65535 bytes; the plaintext of one sealed message is therefore
# at most 65535 - 16 (codec.MAX_MESSAGE must not exceed it).
MAX_NOISE_MESSAGE = 65535
MAX_PLAINTEXT = MAX_NOISE_MESSAGE - TAG
OVERHEAD = {CONTROL: TAG, TELEMETRY: COUNTER + TAG}
HANDSHAKE_REPLY = KEY + TAG  # bytes of message 2
_LAST_COUNTER = 2**64 - 1  # reserved by Noise: a counter never reaches it
_ZEROS4 = bytes(4)


class Unsealed(Exception):
    """A handshake or a message that fails: the association must end. ``str()`` is one line."""


def psk_of(secret: bytes) -> bytes:
    """The Noise PSK of a device's secret: itself if it has 32 bytes, else its SHA-256."""
    return secret if len(secret) == KEY else hashlib.sha256(secret).digest()


def _hkdf(ck: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """Noise's HKDF: RFC 5869 HKDF-SHA256, salt ``ck``, empty info, ``outputs`` x 32 bytes."""
    okm = HKDF(algorithm=hashes.SHA256(), length=KEY * outputs, salt=ck, info=b"").derive(ikm)
    return [okm[i : i + KEY] for i in range(0, len(okm), KEY)]


def _nonce(n: int) -> bytes:
    return _ZEROS4 + n.to_bytes(8, "little")


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _ephemeral(private: bytes | None) -> X25519PrivateKey:
    if private is None:
        return X25519PrivateKey.generate()
    return X25519PrivateKey.from_private_bytes(private)


class _Symmetric:
    """Noise's SymmetricState with its CipherState (handshake only)."""

    def __init__(self, prologue: bytes) -> None:
        self.h = hashlib.sha256(PROTOCOL_NAME).digest()  # the name has more than 32 bytes
        self.ck = self.h
        self.k: ChaCha20Poly1305 | None = None
        self.n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, k = _hkdf(self.ck, ikm, 2)
        self.k, self.n = ChaCha20Poly1305(k), 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.k, self.n = ChaCha20Poly1305(k), 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None  # psk0: a key from the first token on
        ciphertext = self.k.encrypt(_nonce(self.n), plaintext, self.h)
        self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        plaintext = self.k.decrypt(_nonce(self.n), ciphertext, self.h)  # InvalidTag
        self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self, initiator: bool) -> Session:
        c1, c2 = _hkdf(self.ck, b"", 2)
        t1, t2 = _hkdf(self.ck, TELEMETRY_LABEL, 2)
        if initiator:
            return Session(c1, c2, t1, t2, self.h)
        return Session(c2, c1, t2, t1, self.h)


def _header(device_id: str) -> bytes:
    if not DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"a device id has {DEVICE_ID_RULE}")
    raw = device_id.encode("ascii")
    return bytes((VERSION, len(raw))) + raw


def peek_device(first: bytes) -> str | None:
    """The device id a handshake's first message claims (safe for a log line), or None."""
    if len(first) < 2 or first[0] != VERSION or len(first) < 2 + first[1]:
        return None
    claimed = first[2 : 2 + first[1]].decode("ascii", errors="replace")
    return claimed if DEVICE_ID.fullmatch(claimed) else None


class Initiator:
    """The device's side: ``first()`` to send, then ``finish(reply)`` gives the session.

    ``ephemeral`` fixes the ephemeral private key: for test vectors only.
    """

    def __init__(self, secret: bytes, device_id: str, *, ephemeral: bytes | None = None) -> None:
        self._psk = psk_of(secret)
        self._header = _header(device_id)
        self._e = _ephemeral(ephemeral)
        self._state: _Symmetric | None = None
        self._done = False

    def first(self) -> bytes:
        """Message 1: the clear header, then ``psk, e`` and an empty sealed payload."""
        if self._state is not None:
            raise Unsealed("handshake: the first message was already made")
        s = self._state = _Symmetric(PROLOGUE_LABEL + self._header)
        s.mix_key_and_hash(self._psk)  # psk
        e = _public(self._e)  # e
        s.mix_hash(e)
        s.mix_key(e)  # psk modes mix e into the key too
        return self._header + e + s.encrypt_and_hash(b"")

    def finish(self, reply: bytes) -> Session:
        """Read message 2 (``e, ee``): the session if vigil proved the secret; else Unsealed."""
        s = self._state
        if s is None or self._done:
            raise Unsealed("handshake: not waiting for a reply")
        self._done = True
        if len(reply) != HANDSHAKE_REPLY:
            raise Unsealed(f"handshake: reply of {len(reply)} bytes, not {HANDSHAKE_REPLY}")
        re = reply[:KEY]
        s.mix_hash(re)  # e
        s.mix_key(re)
        try:
            s.mix_key(self._e.exchange(X25519PublicKey.from_public_bytes(re)))  # ee
            s.decrypt_and_hash(reply[KEY:])
        except (InvalidTag, ValueError):
            raise Unsealed("handshake: the server did not prove the secret") from None
        return s.split(initiator=True)


class Responder:
    """vigil's side: ``answer(first)`` gives the session and message 2, or raises Unsealed.

    ``lookup`` gives a device's secret by id (None: unknown device). ``device`` is the id
    the first message claimed, once read (even when the handshake then fails).
    """

    def __init__(
        self, lookup: Callable[[str], bytes | None], *, ephemeral: bytes | None = None
    ) -> None:
        self._lookup = lookup
        self._e = _ephemeral(ephemeral)
        self._done = False
        self.device: str | None = None

    def answer(self, first: bytes) -> tuple[Session, bytes]:
        if self._done:
            raise Unsealed("handshake: already answered")
        self._done = True
        device = self.device = peek_device(first)
        if device is None:
            raise Unsealed("handshake: not a vigil sealed-channel hello (version 1, a device id)")
        header = _header(device)
        body = first[len(header) :]
        if len(body) != KEY + TAG:
            raise Unsealed(
                f"handshake: message of {len(first)} bytes, not {len(header) + KEY + TAG}"
            )
        secret = self._lookup(device)
        # An unknown id costs the same work as a wrong secret (its timing does not tell).
        psk = psk_of(secret) if secret is not None else secrets.token_bytes(KEY)
        s = _Symmetric(PROLOGUE_LABEL + header)
        s.mix_key_and_hash(psk)  # psk
        re = body[:KEY]
        s.mix_hash(re)  # e
        s.mix_key(re)
        try:
            s.decrypt_and_hash(body[KEY:])
        except InvalidTag:
            if secret is None:
                raise Unsealed(f"handshake: unknown device {device}") from None
            raise Unsealed(f"handshake: device {device} did not prove its secret") from None
        e = _public(self._e)  # e
        s.mix_hash(e)
        s.mix_key(e)
        try:
            s.mix_key(self._e.exchange(X25519PublicKey.from_public_bytes(re)))  # ee
        except ValueError:  # a low-order point: all-zero shared secret
            raise Unsealed(f"handshake: device {device} sent a bad ephemeral key") from None
        reply = e + s.encrypt_and_hash(b"")
        return s.split(initiator=False), reply


class Session:
    """Transport after the handshake: ``seal`` to send, ``open`` to receive, per stream."""

    def __init__(
        self, send_c: bytes, recv_c: bytes, send_t: bytes, recv_t: bytes, handshake_hash: bytes
    ) -> None:
        self._keys = (send_c, recv_c, send_t, recv_t)  # tests compare them
        self._send_c, self._recv_c = ChaCha20Poly1305(send_c), ChaCha20Poly1305(recv_c)
        self._send_t, self._recv_t = ChaCha20Poly1305(send_t), ChaCha20Poly1305(recv_t)
        self.handshake_hash = handshake_hash  # Noise's h: for channel binding, not a key
        self._sent_c = 0  # next counter to seal on the control stream
        self._next_c = 0  # next counter to open on the control stream
        self._sent_t = 0  # next counter to seal on the telemetry stream
        self._high_t = 0  # 1 + highest telemetry counter opened (0: none yet)
        self._seen_t = 0  # bit i: counter _high_t - 1 - i was opened
        self._broken: str | None = None

    def seal(self, stream: int, plaintext: bytes) -> bytes:
        """The wire bytes of ``plaintext`` on ``stream``; Unsealed if too large or closed."""
        if self._broken is not None:
            raise Unsealed(f"session closed: {self._broken}")
        if len(plaintext) > MAX_PLAINTEXT:
            raise Unsealed(
                f"message too large to seal: {len(plaintext)} bytes (at most {MAX_PLAINTEXT})"
            )
        if stream == CONTROL:
            n = self._sent_c
            if n >= _LAST_COUNTER:
                raise Unsealed("control stream: counter exhausted")
            self._sent_c = n + 1
            return self._send_c.encrypt(_nonce(n), plaintext, None)
        if stream == TELEMETRY:
            n = self._sent_t
            if n >= _LAST_COUNTER:
                raise Unsealed("telemetry stream: counter exhausted")
            self._sent_t = n + 1
            counter = n.to_bytes(COUNTER, "little")
            return counter + self._send_t.encrypt(_ZEROS4 + counter, plaintext, None)
        raise Unsealed(f"no stream {stream}")

    def open(self, stream: int, data: bytes) -> bytes:
        """The plaintext of wire bytes ``data`` from ``stream``; Unsealed (and closed) if not."""
        if self._broken is not None:
            raise Unsealed(f"session closed: {self._broken}")
        try:
            return self._open(stream, data)
        except Unsealed as e:
            self._broken = str(e)
            raise

    def _open(self, stream: int, data: bytes) -> bytes:
        if stream == CONTROL:
            if len(data) < TAG or len(data) > MAX_NOISE_MESSAGE:
                raise Unsealed(f"control stream: message of {len(data)} bytes")
            try:
                plaintext = self._recv_c.decrypt(_nonce(self._next_c), data, None)
            except InvalidTag:
                raise Unsealed(
                    f"control stream: message {self._next_c} fails to open"
                    " (tampered, replayed, dropped or out of order)"
                ) from None
            self._next_c += 1
            return plaintext
        if stream == TELEMETRY:
            if len(data) < COUNTER + TAG or len(data) > COUNTER + MAX_NOISE_MESSAGE:
                raise Unsealed(f"telemetry stream: message of {len(data)} bytes")
            counter = data[:COUNTER]
            n = int.from_bytes(counter, "little")
            if n == _LAST_COUNTER:
                raise Unsealed("telemetry stream: reserved counter")
            behind = self._high_t - 1 - n  # < 0: newer than any opened
            if behind >= WINDOW:
                raise Unsealed(f"telemetry stream: message {n} is older than the window")
            if behind >= 0 and self._seen_t >> behind & 1:
                raise Unsealed(f"telemetry stream: message {n} replayed")
            try:
                plaintext = self._recv_t.decrypt(_ZEROS4 + counter, data[COUNTER:], None)
            except InvalidTag:
                raise Unsealed(f"telemetry stream: message {n} fails to open (tampered)") from None
            if behind < 0:
                shift = -behind  # never shift by more than the window (a huge jump)
                seen = self._seen_t << shift | 1 if shift < WINDOW else 1
                self._seen_t = seen & ((1 << WINDOW) - 1)
                self._high_t = n + 1
            else:
                self._seen_t |= 1 << behind
            return plaintext
        raise Unsealed(f"no stream {stream}")
