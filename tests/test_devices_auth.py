"""Device authentication without sockets: server.devices, add-device, the agent's secret.

The SCTP side of the same rules (a real association refused and aborted,
the audit record, a restarted agent back at once) is tests/sctp/test_device_auth.py.
"""

from __future__ import annotations

import argparse
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
from server.control.admission import REFUSED, Admission, Arrival, Denial, Reason
from server.link.entities import PROTOCOL
from server.link.seal import Initiator, Session
from server.link.secret import parse_secret

ROOT = Path(__file__).resolve().parent.parent
SECRET = bytes(range(32))
LOOPBACK = AllowList([ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")])
ADDR = "127.0.0.1"


def admission(*keys: DeviceKey, window: float = 5.0) -> Admission:
    return Admission(keys or (DeviceKey("lamp-1", SECRET),), LOOPBACK, window)


def arrive(adm: Admission, assoc: int, now: float = 0.0) -> Arrival:
    arrival = adm.arrive(assoc, ADDR, now)
    assert isinstance(arrival, Arrival)
    return arrival


def shake(
    adm: Admission, assoc: int, device: str = "lamp-1", secret: bytes = SECRET, now: float = 1.0
) -> Session | Denial:
    """Message 1 from a device with ``secret``; the device's session if vigil proved it too."""
    initiator = Initiator(secret, device)
    answer = adm.handshake(assoc, initiator.first(), now)
    if isinstance(answer, Denial):
        return answer
    _, reply = answer
    return initiator.finish(reply)


def test_a_device_with_its_secret_is_admitted_once() -> None:
    adm = admission()
    arrival = arrive(adm, 7, now=10.0)
    assert arrival.deadline == 15.0 and adm.knows(7) and adm.addrs[7] == ADDR
    assert isinstance(shake(adm, 7, now=11.0), Session)  # and vigil proved it to the device
    assert 7 in adm.open  # not believed before its sealed hello
    assert adm.prove(7, "lamp-1", PROTOCOL, 14.9) is None
    assert adm.knows(7) and 7 not in adm.open and adm.devices[7] == "lamp-1"
    again = adm.prove(7, "lamp-1", PROTOCOL, 11.0)  # one hello per association
    assert again is not None and again.reason is Reason.LATE


@pytest.mark.parametrize(
    ("device", "secret", "reason", "in_detail"),
    [
        ("lamp-1", b"another secret!!", Reason.WRONG, "device lamp-1 did not prove its secret"),
        ("lamp-2", SECRET, Reason.UNKNOWN, "add-device lamp-2"),
    ],
)
def test_refusals(device: str, secret: bytes, reason: Reason, in_detail: str) -> None:
    adm = admission()
    arrive(adm, 7)
    d = shake(adm, 7, device, secret)
    assert isinstance(d, Denial) and d.reason is reason and in_detail in d.detail
    assert (d.device, d.addr) == (device, ADDR)
    assert d.reply == REFUSED  # the reply does not tell an unknown id from a wrong secret


def test_what_is_no_handshake_is_unsealed_and_names_no_device() -> None:
    adm = admission()
    arrive(adm, 7)
    d = adm.handshake(7, b'{"type": "hello", "device": "lamp-1"}', 1.0)
    assert isinstance(d, Denial) and d.reason is Reason.UNSEALED and d.device is None
    assert "not a vigil sealed-channel hello" in d.detail


def test_a_message_that_fails_to_open_is_unsealed_naming_the_device() -> None:
    adm = admission()
    arrive(adm, 7)
    assert isinstance(shake(adm, 7), Session)
    d = adm.unsealed(7, "control stream: message 0 fails to open")
    assert (d.reason, d.device, d.addr) == (Reason.UNSEALED, "lamp-1", ADDR)
    assert adm.prove(7, "lamp-1", PROTOCOL, 1.0) is None
    assert adm.unsealed(7, "x").device == "lamp-1"  # after the hello too


@pytest.mark.parametrize(
    ("protocol", "says"), [(None, "no protocol"), (1, "protocol 1"), (3, "protocol 3")]
)
def test_a_proven_hello_of_another_protocol_is_refused(protocol: int | None, says: str) -> None:
    adm = admission()
    arrive(adm, 7)
    assert isinstance(shake(adm, 7), Session)
    d = adm.prove(7, "lamp-1", protocol, 1.0)
    assert d == Denial(
        Reason.PROTOCOL,
        f"hello of {says}; vigil speaks protocol 2 (an older agent?)",
        'hello refused: vigil speaks protocol 2 ("protocol": 2 and "entities"; README, Devices); '
        f"this hello says {says}",
        "lamp-1",
        ADDR,
    )
    assert Reason.PROTOCOL.value == "protocol"  # the audit record's reason


def test_a_hello_without_a_handshake_or_of_another_id_learns_nothing() -> None:
    adm = admission(DeviceKey("lamp-1", SECRET), DeviceKey("lamp-2", SECRET))
    arrive(adm, 7)
    d = adm.prove(7, "lamp-1", None, 1.0)
    assert d is not None and d.reason is Reason.UNSEALED and "protocol" not in d.reply
    arrive(adm, 8)
    assert isinstance(shake(adm, 8, "lamp-1"), Session)
    d = adm.prove(8, "lamp-2", PROTOCOL, 1.0)
    assert d is not None and d.reason is Reason.OTHER_ID and d.reply == REFUSED
    assert d.detail == "hello as lamp-2 after a handshake as lamp-1"


def test_a_replayed_message_1_is_answered_but_never_proven() -> None:
    adm = admission()
    arrive(adm, 7)
    recorded = Initiator(SECRET, "lamp-1").first()
    assert not isinstance(adm.handshake(7, recorded, 1.0), Denial)
    arrive(adm, 8)
    assert not isinstance(adm.handshake(8, recorded, 2.0), Denial)  # answered again
    # ... but the replayer has no ephemeral key: it seals no hello, and the deadline refuses
    d = adm.due(8, 5.0)
    assert d is not None and d.reason is Reason.NO_HELLO and d.device == "lamp-1"
    assert d.detail == "a handshake but no sealed hello within 5 s"


def test_late_handshake_late_hello_and_no_hello() -> None:
    adm = admission(window=2.0)
    arrive(adm, 6, now=0.0)
    d = shake(adm, 6, now=2.5)
    assert isinstance(d, Denial) and d.reason is Reason.LATE
    assert "2.5 s after it came up" in d.detail
    arrive(adm, 7, now=0.0)
    assert isinstance(shake(adm, 7, now=1.0), Session)
    d = adm.prove(7, "lamp-1", PROTOCOL, 2.5)
    assert d is not None and d.reason is Reason.LATE and "2.5 s after it came up" in d.detail
    arrive(adm, 8, now=10.0)
    assert adm.due(8, 11.9) is None  # a timer that fires early changes nothing
    d = adm.due(8, 12.0)
    assert d is not None and d.reason is Reason.NO_HELLO and d.addr == ADDR and d.device is None
    assert d.detail == "no handshake within 2 s"
    assert adm.due(8, 13.0) is None  # once
    arrive(adm, 9, now=20.0)
    assert isinstance(shake(adm, 9, now=20.5), Session)
    assert adm.prove(9, "lamp-1", PROTOCOL, 21.0) is None
    assert adm.due(9, 22.0) is None  # proven in time: its timer finds nothing to refuse


@pytest.mark.parametrize("addr", ["10.1.2.3", "::ffff:192.168.1.1", None])
def test_peer_outside_control_allow_is_refused_before_any_handshake(addr: str | None) -> None:
    adm = admission()
    d = adm.arrive(7, addr, 0.0)
    assert isinstance(d, Denial) and d.reason is Reason.NOT_ALLOWED and d.addr == addr
    assert "control.allow" in d.detail and not adm.knows(7) and not adm.open


def test_ipv4_mapped_loopback_is_allowed() -> None:
    assert isinstance(admission().arrive(7, "::ffff:127.0.0.1", 0.0), Arrival)


def test_no_devices_declared_refuses_every_handshake_with_a_hint() -> None:
    adm = Admission((), LOOPBACK, 5.0)
    arrive(adm, 7)
    d = shake(adm, 7)
    assert isinstance(d, Denial) and d.reason is Reason.UNKNOWN
    assert d.detail.endswith("(no devices declared: python -m server add-device lamp-1)")


def test_reload_revokes_changed_and_removed_secrets_and_disallowed_peers() -> None:
    adm = admission(DeviceKey("a", SECRET), DeviceKey("b", SECRET), DeviceKey("c", SECRET))
    arrive(adm, 7)
    assert adm.arrive(8, "::1", 0.0) is not None
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
