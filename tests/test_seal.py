"""The sealed channel's pure core (server/link/seal.py): handshake, transport, test vector."""

from __future__ import annotations

import warnings

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from noise import connection

from server.link import codec, seal
from server.link.seal import CONTROL, TELEMETRY, Initiator, Responder, Session, Unsealed

SECRET = bytes(range(32))
DEVICE = "bench-1"


def handshake(
    device_secret: bytes = SECRET, server_secret: bytes = SECRET, device: str = DEVICE
) -> tuple[Session, Session]:
    """(device's session, vigil's session) after a full handshake."""
    ini = Initiator(device_secret, device)
    vigil, reply = Responder(lambda d: server_secret if d == device else None).answer(ini.first())
    return ini.finish(reply), vigil


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


# -- handshake ---------------------------------------------------------------------


def test_handshake_then_messages_both_ways_on_both_streams() -> None:
    dev, vig = handshake()
    for stream in (CONTROL, TELEMETRY):
        for i in range(3):
            up = f'{{"type":"result","n":{i}}}'.encode()
            down = f'{{"type":"command","n":{i}}}'.encode()
            assert vig.open(stream, dev.seal(stream, up)) == up
            assert dev.open(stream, vig.seal(stream, down)) == down
    assert dev.handshake_hash == vig.handshake_hash


def test_sizes_on_the_wire() -> None:
    ini = Initiator(SECRET, DEVICE)
    first = ini.first()
    assert len(first) == 2 + len(DEVICE) + 32 + 16
    assert seal.peek_device(first) == DEVICE
    dev_r = Responder(lambda d: SECRET)
    vig, reply = dev_r.answer(first)
    assert len(reply) == seal.HANDSHAKE_REPLY == 48
    assert dev_r.device == DEVICE
    dev = ini.finish(reply)
    control, telemetry = dev.seal(CONTROL, b"x" * 200), dev.seal(TELEMETRY, b"x" * 200)
    assert len(control) == 200 + seal.OVERHEAD[CONTROL] == 216
    assert len(telemetry) == 200 + seal.OVERHEAD[TELEMETRY] == 224
    assert vig.open(CONTROL, control) == vig.open(TELEMETRY, telemetry) == b"x" * 200
    assert vig.open(CONTROL, dev.seal(CONTROL, b"")) == b""


def test_a_rogue_device_with_the_wrong_secret_gets_no_session() -> None:
    with pytest.raises(Unsealed, match="device bench-1 did not prove its secret"):
        handshake(device_secret=bytes(32))


def test_a_rogue_server_with_the_wrong_secret_gets_no_session() -> None:
    """vigil's side with another secret cannot even read message 1; a rogue that answers
    anyway (its own handshake from its own secret) fails at the device."""
    ini = Initiator(SECRET, DEVICE)
    first = ini.first()
    with pytest.raises(Unsealed):
        Responder(lambda d: bytes(32)).answer(first)
    # The rogue knows the device's message 1 but not the secret: it builds its reply from a
    # handshake of its own with its own secret, the best it can do.
    rogue_ini = Initiator(bytes(32), DEVICE)
    _, rogue_reply = Responder(lambda d: bytes(32)).answer(rogue_ini.first())
    with pytest.raises(Unsealed, match="the server did not prove the secret"):
        ini.finish(rogue_reply)


def test_a_replayed_reply_from_an_earlier_handshake_fails() -> None:
    ini1 = Initiator(SECRET, DEVICE)
    _, old_reply = Responder(lambda d: SECRET).answer(ini1.first())
    ini2 = Initiator(SECRET, DEVICE)
    ini2.first()
    with pytest.raises(Unsealed):
        ini2.finish(old_reply)


def test_unknown_device_and_malformed_first_messages() -> None:
    first = Initiator(SECRET, DEVICE).first()
    with pytest.raises(Unsealed, match="unknown device bench-1"):
        Responder(lambda d: None).answer(first)
    for bad in (b"", b"\x02" + first[1:], first[:-1], first + b"\x00", b"\x01\x00" + first[2:]):
        with pytest.raises(Unsealed):
            Responder(lambda d: SECRET).answer(bad)
    with pytest.raises(ValueError):
        Initiator(SECRET, "x" * 65)
    for bad_id in ("", "-x", "a b", "a\nb", "é"):
        with pytest.raises(ValueError):
            Initiator(SECRET, bad_id)
    # An id that is no device id is never passed on (lookup, log lines).
    looked_up: list[str] = []

    def lookup(device: str) -> bytes:
        looked_up.append(device)
        return SECRET

    r = Responder(lookup)
    with pytest.raises(Unsealed, match="not a vigil sealed-channel hello"):
        r.answer(b"\x01\x03a\nb" + first[2 + len(DEVICE) :])
    assert r.device is None and looked_up == []


def test_a_flipped_bit_anywhere_in_message_1_fails() -> None:
    """A flipped id bit names another device (whose secret lookup gives None or whose
    prologue differs); a flipped key or tag bit fails the tag."""
    first = Initiator(SECRET, DEVICE).first()
    for bit in range(len(first) * 8):
        with pytest.raises(Unsealed):
            Responder(lambda d: SECRET).answer(flip(first, bit))


def test_a_flipped_bit_anywhere_in_message_2_fails() -> None:
    for bit in range(seal.HANDSHAKE_REPLY * 8):
        ini = Initiator(SECRET, DEVICE)
        _, reply = Responder(lambda d: SECRET).answer(ini.first())
        with pytest.raises(Unsealed):
            ini.finish(flip(reply, bit))


def test_a_replayed_message_1_gets_an_answer_but_proves_nothing() -> None:
    """NNpsk0 gives vigil no proof that message 1 is fresh: a recorded one replayed gets an
    answer (a session on vigil's side), but nothing sealed from the replayer ever opens. So
    vigil believes the device only once its first sealed control message opens (NOTES.md)."""
    ini = Initiator(SECRET, DEVICE)
    first = ini.first()
    real_vig, reply = Responder(lambda d: SECRET).answer(first)
    dev = ini.finish(reply)
    hello = dev.seal(CONTROL, b'{"type":"hello"}')
    assert real_vig.open(CONTROL, hello) == b'{"type":"hello"}'
    replayed_vig, _ = Responder(lambda d: SECRET).answer(first)  # a fresh vigil ephemeral
    with pytest.raises(Unsealed):
        replayed_vig.open(CONTROL, hello)  # the recorded hello does not open either


def test_a_low_order_ephemeral_key_is_refused() -> None:
    """A device that knows the secret but sends a low-order point (all zero) as its
    ephemeral key, which would make the DH output all zero: message 1 built by hand."""
    header = bytes((seal.VERSION, len(DEVICE))) + DEVICE.encode()
    s = seal._Symmetric(seal.PROLOGUE_LABEL + header)
    s.mix_key_and_hash(SECRET)
    e = bytes(32)
    s.mix_hash(e)
    s.mix_key(e)
    with pytest.raises(Unsealed, match="bad ephemeral key"):
        Responder(lambda d: SECRET).answer(header + e + s.encrypt_and_hash(b""))


def test_each_handshake_object_runs_once() -> None:
    ini = Initiator(SECRET, DEVICE)
    first = ini.first()
    with pytest.raises(Unsealed):
        ini.first()
    r = Responder(lambda d: SECRET)
    _, reply = r.answer(first)
    with pytest.raises(Unsealed):
        r.answer(first)
    ini.finish(reply)
    with pytest.raises(Unsealed):
        ini.finish(reply)


def test_fresh_keys_per_association() -> None:
    """Two handshakes with the same secret and id have different keys (the ephemeral DH),
    and all four keys of a session differ from each other and from the PSK."""
    a, a_vig = handshake()
    b, _ = handshake()
    assert set(a._keys).isdisjoint(b._keys)
    assert len(set(a._keys)) == 4 and SECRET not in a._keys
    assert a._keys == (a_vig._keys[1], a_vig._keys[0], a_vig._keys[3], a_vig._keys[2])
    assert a.handshake_hash != b.handshake_hash
    # A message of one association does not open in another.
    with pytest.raises(Unsealed):
        b_vig = handshake()[1]
        b_vig.open(CONTROL, a.seal(CONTROL, b"{}"))


def test_psk_of_a_secret() -> None:
    assert seal.psk_of(SECRET) == SECRET
    short = bytes(16)
    assert len(seal.psk_of(short)) == 32 and seal.psk_of(short) != short
    dev, vig = handshake(device_secret=short, server_secret=short)
    assert vig.open(CONTROL, dev.seal(CONTROL, b"ok")) == b"ok"


# -- control stream ------------------------------------------------------------------


def test_control_flipped_bit_anywhere_fails_and_the_session_is_closed() -> None:
    msg = b'{"type":"command","id":1}'
    for bit in range((len(msg) + seal.TAG) * 8):
        dev, vig = handshake()
        wire = vig.seal(CONTROL, msg)
        with pytest.raises(Unsealed, match="control stream: message 0 fails to open"):
            dev.open(CONTROL, flip(wire, bit))
        with pytest.raises(Unsealed, match="session closed"):
            dev.open(CONTROL, wire)  # not even the genuine one afterwards
        with pytest.raises(Unsealed, match="session closed"):
            dev.seal(CONTROL, b"{}")


def test_control_replay_fails() -> None:
    dev, vig = handshake()
    wire = dev.seal(CONTROL, b"one")
    assert vig.open(CONTROL, wire) == b"one"
    with pytest.raises(Unsealed, match="replayed"):
        vig.open(CONTROL, wire)


def test_control_dropped_message_makes_the_next_fail() -> None:
    dev, vig = handshake()
    dev.seal(CONTROL, b"lost")
    with pytest.raises(Unsealed, match="dropped"):
        vig.open(CONTROL, dev.seal(CONTROL, b"next"))


def test_control_out_of_order_fails() -> None:
    dev, vig = handshake()
    first, second = dev.seal(CONTROL, b"1"), dev.seal(CONTROL, b"2")
    with pytest.raises(Unsealed):
        vig.open(CONTROL, second)
    del first


def test_streams_and_directions_do_not_cross() -> None:
    dev, vig = handshake()
    with pytest.raises(Unsealed):
        vig.open(TELEMETRY, dev.seal(CONTROL, b"x" * 30))
    dev, vig = handshake()
    with pytest.raises(Unsealed):
        vig.open(CONTROL, dev.seal(TELEMETRY, b"x" * 30)[seal.COUNTER :])
    dev, vig = handshake()
    with pytest.raises(Unsealed):
        dev.open(CONTROL, dev.seal(CONTROL, b"reflected"))  # its own message sent back
    with pytest.raises(Unsealed, match="no stream 2"):
        handshake()[0].seal(2, b"")


def test_sizes_are_bounded() -> None:
    dev, vig = handshake()
    big = b"x" * seal.MAX_PLAINTEXT
    assert vig.open(CONTROL, dev.seal(CONTROL, big)) == big
    assert vig.open(TELEMETRY, dev.seal(TELEMETRY, big)) == big
    with pytest.raises(Unsealed, match="too large"):
        dev.seal(CONTROL, big + b"x")
    with pytest.raises(Unsealed, match="too large"):
        dev.seal(TELEMETRY, big + b"x")
    with pytest.raises(Unsealed, match="message of 65536 bytes"):
        vig.open(CONTROL, bytes(seal.MAX_NOISE_MESSAGE + 1))
    for short in (b"", bytes(15)):
        with pytest.raises(Unsealed):
            handshake()[1].open(CONTROL, short)
        with pytest.raises(Unsealed):
            handshake()[1].open(TELEMETRY, short + bytes(8))
    # Noise's 65535-byte cap leaves 65519 bytes of plaintext: the largest JSON message
    assert seal.MAX_PLAINTEXT == 65519 == codec.MAX_MESSAGE


def test_stream_numbers_are_codecs() -> None:
    assert (CONTROL, TELEMETRY) == (codec.Stream.CONTROL, codec.Stream.TELEMETRY)
    assert handshake()[0].seal(codec.Stream.TELEMETRY, b"")[:8] == bytes(8)


# -- telemetry stream -------------------------------------------------------------------


def test_telemetry_reordered_within_the_window_opens() -> None:
    dev, vig = handshake()
    wires = [dev.seal(TELEMETRY, b"t%d" % i) for i in range(200)]
    order = [5, 0, 3, 1, 2, 4, 70, 7, 69, 8, 100, 40, 99, 199, 136, 198, 150]
    for i in order:
        assert vig.open(TELEMETRY, wires[i]) == b"t%d" % i


def test_telemetry_duplicate_fails() -> None:
    for order in ([0, 0], [3, 1, 3], [3, 1, 1], [64, 1, 1], [0, 1, 2, 0]):
        dev, vig = handshake()
        wires = [dev.seal(TELEMETRY, b"t") for _ in range(100)]
        for i in order[:-1]:
            vig.open(TELEMETRY, wires[i])
        with pytest.raises(Unsealed, match=f"message {order[-1]} replayed"):
            vig.open(TELEMETRY, wires[order[-1]])


def test_telemetry_older_than_the_window_fails() -> None:
    dev, vig = handshake()
    wires = [dev.seal(TELEMETRY, b"t") for _ in range(seal.WINDOW + 2)]
    vig.open(TELEMETRY, wires[seal.WINDOW])  # highest: 64; 1 is the oldest that may open
    vig.open(TELEMETRY, wires[1])
    with pytest.raises(Unsealed, match="message 0 is older than the window"):
        vig.open(TELEMETRY, wires[0])


def test_telemetry_a_huge_jump_forward_is_cheap_and_safe() -> None:
    """A genuine counter far ahead (the sender is free to skip) moves the window at once."""
    dev, vig = handshake()
    early = dev.seal(TELEMETRY, b"early")
    dev._sent_t = 2**63
    late = dev.seal(TELEMETRY, b"late")
    assert vig.open(TELEMETRY, late) == b"late"
    with pytest.raises(Unsealed, match="older than the window"):
        vig.open(TELEMETRY, early)


def test_telemetry_flipped_bit_anywhere_fails_and_does_not_move_the_window() -> None:
    msg = b'{"type":"telemetry"}'
    for bit in range((seal.COUNTER + len(msg) + seal.TAG) * 8):
        dev, vig = handshake()
        wire = dev.seal(TELEMETRY, msg)
        with pytest.raises(Unsealed):
            vig.open(TELEMETRY, flip(wire, bit))
        assert vig._high_t == 0 and vig._seen_t == 0
    dev, vig = handshake()
    with pytest.raises(Unsealed, match="reserved counter"):
        vig.open(TELEMETRY, b"\xff" * 8 + bytes(20))


# -- the test vector (README, "Sealed": for someone writing an agent) -----------------

VECTOR_SECRET = bytes(range(32))  # 000102...1f
VECTOR_DEVICE = "bench-1"
VECTOR_E_DEVICE = bytes([0x11] * 32)  # ephemeral private keys, X25519 (clamped on use)
VECTOR_E_VIGIL = bytes([0x22] * 32)
# send control, receive control, send telemetry, receive telemetry (device's side)
VECTOR_KEYS = (
    "db72db7b88aa6a8223bac741154c7881c10c92ab4a4b7a9c36d0f107e18695a4",
    "3963f3cddd9ae1ba54b5617120c40b1292120b671eb5ccbd9ce7b550122eec41",
    "f65cf05495d8d696353bc38fcf08e6ce38b9613d028a5dc6ab59bdc710c67702",
    "51ed4bcc52dc439fc9c1946b36e49b1ab838bdb4f7154899dbbe271dd83de57c",
)
VECTOR = {
    "message 1": "010762656e63682d31"  # version 1, id length 7, "bench-1"
    "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13"  # e
    "8376898dd8815f70c8e3da435479a2aa",  # tag of the empty payload
    "message 2": "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20"  # e
    "aa09aeb35c80f2d2232961b4d5bac990",
    "handshake hash": "9d96d0b033bd862476ddab93ba1b2436b102580798f73e10b8bbe53b176d94b5",
    # device -> vigil, control stream, counter 0: {"type":"hello"}
    "control 0": "730ffcad3d3297651affffe92c1b856965f65f090c9d9b2832a2cda3d33fff97",
    # device -> vigil, telemetry stream, counter 0: {"type":"telemetry"}
    "telemetry 0": "0000000000000000"
    "e4e06b1ace87e205defed6793ca8f3b6445cf9b729ea110e10a6d51e9fc0ed6c8c5bdff7",
    # vigil -> device, control stream, counter 0: {"type":"welcome"}
    "welcome 0": "a2684f8df770a928d35472ab09a9a7495961ebb358e426860e0b2890946af72451d5",
}


def test_vector() -> None:
    ini = Initiator(VECTOR_SECRET, VECTOR_DEVICE, ephemeral=VECTOR_E_DEVICE)
    first = ini.first()
    assert first.hex() == VECTOR["message 1"]
    vig, reply = Responder(lambda d: VECTOR_SECRET, ephemeral=VECTOR_E_VIGIL).answer(first)
    assert reply.hex() == VECTOR["message 2"]
    dev = ini.finish(reply)
    assert dev.handshake_hash.hex() == vig.handshake_hash.hex() == VECTOR["handshake hash"]
    assert tuple(k.hex() for k in dev._keys) == VECTOR_KEYS
    hello, telemetry = b'{"type":"hello"}', b'{"type":"telemetry"}'
    assert dev.seal(CONTROL, hello).hex() == VECTOR["control 0"]
    assert dev.seal(TELEMETRY, telemetry).hex() == VECTOR["telemetry 0"]
    assert vig.seal(CONTROL, b'{"type":"welcome"}').hex() == VECTOR["welcome 0"]
    assert vig.open(CONTROL, bytes.fromhex(VECTOR["control 0"])) == hello
    assert vig.open(TELEMETRY, bytes.fromhex(VECTOR["telemetry 0"])) == telemetry


def test_vector_against_an_independent_noise_implementation() -> None:
    """noiseprotocol (what aioesphomeapi uses) agrees on the handshake, the handshake hash
    and the control stream; the telemetry keys from its chaining key."""
    hdr = bytes.fromhex(VECTOR["message 1"])[: 2 + len(VECTOR_DEVICE)]
    sides = []
    for role, e in (("initiator", VECTOR_E_DEVICE), ("responder", VECTOR_E_VIGIL)):
        n = connection.NoiseConnection.from_name(seal.PROTOCOL_NAME)
        getattr(n, f"set_as_{role}")()
        n.set_psks(psk=VECTOR_SECRET)
        n.set_prologue(seal.PROLOGUE_LABEL + hdr)
        n.set_keypair_from_private_bytes(connection.Keypair.EPHEMERAL, e)
        with warnings.catch_warnings():  # "OK for testing, but should NEVER happen in production"
            warnings.simplefilter("ignore", UserWarning)
            n.start_handshake()
        sides.append(n)
    ni, nr = sides
    first = ni.write_message(b"")
    assert hdr + first == bytes.fromhex(VECTOR["message 1"])
    nr.read_message(first)
    reply = nr.write_message(b"")
    assert reply.hex() == VECTOR["message 2"]
    symmetric = ni.noise_protocol.symmetric_state  # internal; dropped by the library after
    ni.read_message(reply)
    assert ni.get_handshake_hash().hex() == VECTOR["handshake hash"]
    assert ni.encrypt(b'{"type":"hello"}').hex() == VECTOR["control 0"]
    assert nr.encrypt(b'{"type":"welcome"}').hex() == VECTOR["welcome 0"]
    ck = symmetric.ck  # the final chaining key
    t_device, _ = seal._hkdf(ck, seal.TELEMETRY_LABEL, 2)
    wire = bytes.fromhex(VECTOR["telemetry 0"])
    assert ChaCha20Poly1305(t_device).decrypt(bytes(4) + wire[:8], wire[8:], None) == (
        b'{"type":"telemetry"}'
    )
