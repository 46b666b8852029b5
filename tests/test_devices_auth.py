"""Device authentication without sockets: server.devices, add-device, the agent's secret.

The SCTP side of the same rules (a real association refused and aborted,
the audit record, a restarted agent back at once) is tests/sctp/test_device_auth.py.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server.agent.run import SECRET_ENV, secret_of
from server.base.addresses import AllowList
from server.config import LOCAL_DEVICES_FILE, DeviceKey, load
from server.control.admission import (
    RECENT_NONCES,
    REFUSED,
    Admission,
    Challenge,
    Denial,
    Reason,
)
from server.link import codec
from server.link.entities import PROTOCOL
from server.link.secret import parse_secret, proof

ROOT = Path(__file__).resolve().parent.parent
SECRET = bytes(range(32))
LOOPBACK = AllowList([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
ADDR = "127.0.0.1"


def nonce(n: int) -> bytes:
    return n.to_bytes(32, "big")


def admission(*keys: DeviceKey, window: float = 5.0) -> Admission:
    return Admission(keys or (DeviceKey("lamp-1", SECRET),), LOOPBACK, window)


def arrive(adm: Admission, assoc: int, n: int, now: float = 0.0) -> Challenge:
    ch = adm.arrive(assoc, ADDR, nonce(n), now)
    assert isinstance(ch, Challenge)
    return ch


def test_proof_is_hmac_sha256_over_nonce_then_id() -> None:
    expected = hmac.new(SECRET, nonce(1) + b"lamp-1", hashlib.sha256).hexdigest()
    assert proof(SECRET, nonce(1), "lamp-1") == expected and len(expected) == 64
    wire = codec.encode(codec.Challenge(nonce(1)))
    assert wire == b'{"type":"challenge","nonce":"' + nonce(1).hex().encode() + b'"}'


def test_correct_hmac_is_admitted_once() -> None:
    adm = admission()
    ch = arrive(adm, 7, 1, now=10.0)
    assert ch.deadline == 15.0 and adm.knows(7) and adm.addrs[7] == ADDR
    assert adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1").upper(), PROTOCOL, 14.9) is None
    assert adm.knows(7) and 7 not in adm.open
    # the challenge is spent: the same hello again on the same association is late
    again = adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1"), PROTOCOL, 11.0)
    assert again is not None and again.reason is Reason.LATE


@pytest.mark.parametrize(
    ("device", "given", "reason", "in_detail"),
    [
        ("lamp-1", proof(b"another secret!!", nonce(1), "lamp-1"), Reason.WRONG, "wrong hmac"),
        ("lamp-1", proof(SECRET, nonce(1), "lamp-2"), Reason.WRONG, "wrong hmac"),
        ("lamp-1", "not hex at all, ünicode", Reason.WRONG, "wrong hmac"),
        ("lamp-1", None, Reason.NO_HMAC, "without hmac"),
        ("lamp-2", proof(SECRET, nonce(1), "lamp-2"), Reason.UNKNOWN, "add-device lamp-2"),
    ],
)
def test_refusals(device: str, given: str | None, reason: Reason, in_detail: str) -> None:
    adm = admission()
    arrive(adm, 7, 1)
    d = adm.prove(7, device, given, PROTOCOL, 1.0)
    assert isinstance(d, Denial) and d.reason is reason and in_detail in d.detail
    assert (d.device, d.addr) == (device, ADDR)
    assert 7 not in adm.open  # no second guess on this association
    if reason is not Reason.NO_HMAC:  # the reply does not tell an unknown id from a wrong secret
        assert d.reply == "hello refused: authentication failed"


@pytest.mark.parametrize(
    ("protocol", "says"), [(None, "no protocol"), (1, "protocol 1"), (3, "protocol 3")]
)
def test_a_proven_hello_of_another_protocol_is_refused(protocol: int | None, says: str) -> None:
    adm = admission()
    arrive(adm, 7, 1)
    d = adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1"), protocol, 1.0)
    assert d == Denial(
        Reason.PROTOCOL,
        f"hello of {says}; vigil speaks protocol 2 (an older agent?)",
        'hello refused: vigil speaks protocol 2 ("protocol": 2 and "entities"; README, Devices); '
        f"this hello says {says}",
        "lamp-1",
        ADDR,
    )
    assert Reason.PROTOCOL.value == "protocol"  # the audit record's reason
    assert 7 not in adm.open  # the challenge is spent: an updated agent starts over
    again = adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1"), PROTOCOL, 1.5)
    assert again is not None and again.reason is Reason.LATE


@pytest.mark.parametrize(
    ("device", "given", "reason"),
    [
        ("lamp-2", proof(SECRET, nonce(1), "lamp-2"), Reason.UNKNOWN),
        ("lamp-1", proof(b"another secret!!", nonce(1), "lamp-1"), Reason.WRONG),
        ("lamp-1", None, Reason.NO_HMAC),
    ],
)
def test_only_a_proven_device_learns_the_protocol(
    device: str, given: str | None, reason: Reason
) -> None:
    adm = admission()
    arrive(adm, 7, 1)
    d = adm.prove(7, device, given, None, 1.0)
    assert d is not None and d.reason is reason and "protocol" not in d.reply
    if reason is not Reason.NO_HMAC:
        assert d.reply == REFUSED == "hello refused: authentication failed"


def test_a_replayed_hello_is_refused_and_named() -> None:
    adm = admission()
    arrive(adm, 7, 1)
    captured = proof(SECRET, nonce(1), "lamp-1")
    assert adm.prove(7, "lamp-1", captured, PROTOCOL, 1.0) is None
    arrive(adm, 8, 2)  # a later association replays association 7's hello
    d = adm.prove(8, "lamp-1", captured, PROTOCOL, 2.0)
    assert d is not None and d.reason is Reason.REPLAYED
    # a capture older than the remembered challenges is refused all the same
    for i in range(RECENT_NONCES):
        arrive(adm, 100 + i, 1000 + i)
    arrive(adm, 9, 3)
    d = adm.prove(9, "lamp-1", captured, PROTOCOL, 3.0)
    assert d is not None and d.reason is Reason.WRONG


def test_late_hello_and_no_hello() -> None:
    adm = admission(window=2.0)
    arrive(adm, 7, 1, now=0.0)
    d = adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1"), PROTOCOL, 2.5)
    assert d is not None and d.reason is Reason.LATE and "2.5 s after the challenge" in d.detail
    arrive(adm, 8, 2, now=10.0)
    assert adm.due(8, 11.9) is None  # a timer that fires early changes nothing
    d = adm.due(8, 12.0)
    assert d is not None and d.reason is Reason.NO_HELLO and d.addr == ADDR and d.device is None
    assert adm.due(8, 13.0) is None  # once
    arrive(adm, 9, 3, now=20.0)
    assert adm.prove(9, "lamp-1", proof(SECRET, nonce(3), "lamp-1"), PROTOCOL, 21.0) is None
    assert adm.due(9, 22.0) is None  # proven in time: its timer finds nothing to refuse


@pytest.mark.parametrize("addr", ["10.1.2.3", "::ffff:192.168.1.1", None])
def test_peer_outside_control_allow_is_refused_before_any_challenge(addr: str | None) -> None:
    adm = admission()
    d = adm.arrive(7, addr, nonce(1), 0.0)
    assert isinstance(d, Denial) and d.reason is Reason.NOT_ALLOWED and d.addr == addr
    assert "control.allow" in d.detail and not adm.knows(7) and not adm.open


def test_ipv4_mapped_loopback_is_allowed() -> None:
    assert isinstance(admission().arrive(7, "::ffff:127.0.0.1", nonce(1), 0.0), Challenge)


def test_no_devices_declared_refuses_every_hello_with_a_hint() -> None:
    adm = Admission((), LOOPBACK, 5.0)
    arrive(adm, 7, 1)
    d = adm.prove(7, "lamp-1", proof(SECRET, nonce(1), "lamp-1"), PROTOCOL, 1.0)
    assert d is not None and d.reason is Reason.UNKNOWN
    assert d.detail == "no devices declared: python -m server add-device lamp-1"


def test_reload_revokes_changed_and_removed_secrets_and_disallowed_peers() -> None:
    adm = admission(DeviceKey("a", SECRET), DeviceKey("b", SECRET), DeviceKey("c", SECRET))
    arrive(adm, 7, 1)
    assert adm.arrive(8, "::1", nonce(2), 0.0) is not None
    keys = [DeviceKey("a", SECRET), DeviceKey("b", b"new secret, 128+"), DeviceKey("d", SECRET)]
    v4_only = AllowList([ipaddress.ip_network("127.0.0.0/8")])
    revoked, outside = adm.reload(keys, v4_only, 1.0)
    assert revoked == {"b", "c"} and outside == [8]
    assert adm.window == 1.0 and set(adm.keys) == {"a", "b", "d"}
    adm.leave(8)
    adm.leave(8)  # twice: the COMM_LOST after our own ABORT
    assert not adm.knows(8)


def test_parse_secret() -> None:
    assert parse_secret(" " + SECRET.hex().upper() + "\n") == SECRET
    with pytest.raises(ValueError, match="at least 128"):
        parse_secret("ab" * 15)
    with pytest.raises(ValueError, match="hex digits"):
        parse_secret("zz" * 16)


# -- python -m server add-device ----------------------------------------------


def add_device(config: Path, dev_id: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server", "add-device", dev_id, "--config", str(config)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_add_device_stores_a_secret_and_prints_the_agent_command(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    config = tmp_path / "config.toml"
    config.write_text('[control]\nhost = "10.0.0.1"\nport = 9911\n')
    done = add_device(config, "lamp-1")
    assert done.returncode == 0, done.stderr
    secret_path = tmp_path / "devices.local" / "lamp-1.secret"
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / LOCAL_DEVICES_FILE).stat().st_mode) == 0o600
    secret = parse_secret(secret_path.read_text())
    assert len(secret) == 32
    assert secret.hex() not in done.stdout + done.stderr  # the secret is never printed
    (line,) = done.stdout.splitlines()  # stdout: exactly the agent's command line
    assert shlex.split(line) == [
        *(sys.executable, "-m", "server.agent", "--name", "lamp-1", "--host", "10.0.0.1"),
        *("--port", "9911", "--secret-file", str(secret_path)),
    ]
    assert str(secret_path) in done.stderr and "SIGHUP" in done.stderr
    assert add_device(config, "lamp-2").returncode == 0
    keys = load(config).control.devices
    assert [k.id for k in keys] == ["lamp-1", "lamp-2"] and keys[0].secret == secret

    again = add_device(config, "lamp-1")
    assert again.returncode == 1 and "already declared" in again.stderr and not again.stdout
    bad = add_device(config, "../etc")
    assert bad.returncode == 1 and "device id must be" in bad.stderr
    assert parse_secret(secret_path.read_text()) == secret  # nothing was overwritten


def test_add_device_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[control]\nport = 99999\n")
    done = add_device(config, "lamp-1")
    assert done.returncode == 1 and "[control] port" in done.stderr
    assert not (tmp_path / LOCAL_DEVICES_FILE).exists()


# -- the agent's secret ---------------------------------------------------------


def agent_args(secret_file: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(name="lamp-1", secret_file=secret_file)


def test_agent_secret_from_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s"
    path.write_text(SECRET.hex())
    os.chmod(path, 0o600)
    monkeypatch.setenv(SECRET_ENV, "ab" * 16)
    assert secret_of(agent_args(path)) == SECRET  # the file wins
    assert secret_of(agent_args()) == bytes.fromhex("ab" * 16)
    monkeypatch.setenv(SECRET_ENV, "ab")
    with pytest.raises(ValueError, match=f"{SECRET_ENV} the secret has 8 bits"):
        secret_of(agent_args())
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ValueError, match="no secret: give --secret-file"):
        secret_of(agent_args())
    os.chmod(path, 0o640)
    with pytest.raises(ValueError, match="other users may read it"):
        secret_of(agent_args(path))


def test_agent_without_secret_exits_at_once() -> None:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "server.agent", "--name", "lamp-1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "no secret" in done.stderr
