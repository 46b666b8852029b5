"""tests/uml: the guest has SCTP and veth; a guest that dies says why at once."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, require, write_config
from tests.uml.harness import run
from tests.uml.kernel import UmlError, kernel, unsupported
from tests.uml.testhost import uml_test_host

# What bookworm's and trixie's UML print on a host with AMX, then they die.
AMX_DEATH = [
    "userspace - ptrace set fp regs failed, errno = 14",
    "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
]

GUEST_CHECK = """
import socket, sys
from tests.uml.guestnet import AgentNet
s = socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP)
s.bind(("127.0.0.1", 0))
s.listen(5)
with AgentNet() as net:
    print("sctp listens on", s.getsockname(), "veth up to", net.agent_ip)
"""


def require_uml() -> None:
    reason = unsupported()
    require(reason is None, reason or "")


@pytest.fixture
def dying_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """VIGIL_UML_KERNEL: a 'kernel' that prints AMX_DEATH and then hangs, as a panic may."""
    fake = tmp_path / "linux.uml"
    lines = "\n".join(f"echo '{line}'" for line in AMX_DEATH)
    fake.write_text(f"#!/bin/sh\n{lines}\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setenv("VIGIL_UML_KERNEL", str(fake))
    return fake


def test_a_panic_fails_the_guest_at_once_and_says_why(dying_kernel: Path) -> None:
    start = time.monotonic()
    with pytest.raises(UmlError) as e:
        run(["true"], echo=False)
    assert time.monotonic() - start < 2
    assert str(e.value).splitlines()[0] == "; ".join(AMX_DEATH)


def test_the_test_host_stops_waiting_for_a_dead_guest(dying_kernel: Path, tmp_path: Path) -> None:
    require(os.geteuid() == 0 and os.path.exists("/dev/net/tun"), "a tap device needs root")
    config = write_config(tmp_path, {"control": {"enabled": True}}).read_text()
    start = time.monotonic()
    with pytest.raises(UmlError) as e, uml_test_host(config, timeout=60):
        pass
    assert time.monotonic() - start < 3
    assert str(e.value).splitlines()[0] == "; ".join(AMX_DEATH)


def test_a_missing_kernel_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_UML_KERNEL", str(tmp_path / "linux.uml"))
    with pytest.raises(UmlError) as e:
        run(["true"], echo=False)
    assert str(e.value).startswith(f"kernel not found: {tmp_path}/linux.uml")


def test_a_kernel_without_its_modules_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_uml()
    monkeypatch.delenv("VIGIL_UML_KERNEL", raising=False)
    (tmp_path / "linux.uml").symlink_to(kernel().path)  # but no lib/modules beside it
    monkeypatch.setenv("VIGIL_UML_KERNEL", str(tmp_path / "linux.uml"))
    with pytest.raises(UmlError) as e:
        run(["true"], echo=False, timeout=60)
    assert str(e.value).startswith("vigil-uml: cannot load SCTP: modprobe: FATAL")


def test_the_guest_has_sctp_and_veth(monkeypatch: pytest.MonkeyPatch) -> None:
    require_uml()
    monkeypatch.delenv("VIGIL_UML_KERNEL", raising=False)
    start = time.monotonic()
    assert run([sys.executable, "-c", GUEST_CHECK], ROOT, timeout=60) == 0
    assert time.monotonic() - start < 30
