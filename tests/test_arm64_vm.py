"""vigil on arm64 (a 64-bit Pi's architecture): Debian 12's own arm64 kernel under emulation.

The image of tests/test_systemd_vm.py built for arm64 (mmdebstrap runs its
maintainer scripts through qemu-user-static) and booted by
qemu-system-aarch64 (``-M virt``, TCG): the same install as a person does
(tests/vm/appliance.py), then a smoke test: pysctp was compiled in the
guest and imports, gpiozero imports with lgpio (a Pi's default pin
factory, a wheel only for aarch64), vigil serves HTTPS, and the GPIO agent
of dist/agents/gpio-example.toml runs as ``vigil-agent@pins`` on gpiozero's
mock pins and comes online over the guest kernel's SCTP.

Emulating a whole arm64 machine is slow (README: "What was verified"), so
every ``make test`` runs it when what the install is made of changed: a
passing run writes the hash of the Makefile, pyproject.toml and dist/ with
its date to ``tests/vm/arm64.verified``, which is committed with them; a run
with that same hash skips, saying which hash was verified and when; a
changed hash (or ``VIGIL_VM_ARM64=always``) runs it, and says that too. The
record is the checkout's, not a machine's: a fresh machine knows it too.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support import ROOT, require
from tests.vm.appliance import curl, device_online, installed, wait_for
from tests.vm.image import ARCHES, unsupported
from tests.vm.machine import Machine

ARCH = ARCHES["arm64"]
INSTALL_PATH = ("Makefile", "pyproject.toml", "dist")
VENV_PYTHON = "/usr/local/lib/vigil/venv/bin/python"
VERIFIED = ROOT / "tests/vm/arm64.verified"  # "HASH DATE" of the last passing run


def install_path_hash() -> str:
    """SHA-256 of the files the install is made of (names and contents)."""
    digest = hashlib.sha256()
    for top in INSTALL_PATH:
        path = ROOT / top
        for file in sorted([path] if path.is_file() else path.rglob("*")):
            if file.is_file():
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def vm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    reason = unsupported(ARCH)
    require(reason is None, f"no arm64 VM: {reason}")
    marker, current = VERIFIED, install_path_hash()
    last = marker.read_text().split() if marker.exists() else []
    if os.environ.get("VIGIL_VM_ARM64") != "always" and last[:1] == [current]:
        pytest.skip(
            f"arm64 VM: Makefile, pyproject.toml, dist/ unchanged ({current}) since its last"
            f" passing run ({' '.join(last[1:])}); VIGIL_VM_ARM64=always runs it anyway"
        )
    why = (
        "no passing run recorded"
        if not last
        else "VIGIL_VM_ARM64=always"
        if last[0] == current
        else f"the install path changed since {last[0]}"
    )
    print(f"vigil-vm: arm64: running ({why}: {current})", file=sys.stderr, flush=True)
    failed = request.session.testsfailed
    machine = installed(ARCH, tmp_path_factory.mktemp("arm64"))
    try:
        yield machine
    finally:
        machine.close()
    if request.session.testsfailed == failed:
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        marker.write_text(f"{current} {stamp}\n")


def test_it_is_arm64_with_pysctp_built_there_and_gpiozero_on_lgpio(vm: Machine) -> None:
    assert vm.check("uname -m").strip() == "aarch64"
    probe = (
        "import sctp, _sctp, gpiozero, lgpio; from gpiozero.pins.lgpio import LGPIOFactory;"
        "print(_sctp.__file__)"
    )
    built = vm.check(f"{VENV_PYTHON} -c '{probe}'").strip()
    assert built.endswith("aarch64-linux-gnu.so"), built  # compiled in the guest


def test_vigil_serves_https(vm: Machine) -> None:
    assert vm.check("systemctl is-active vigil").strip() == "active"
    assert curl(vm, "/api/me") == '200 {"user":"admin","role":"operator"}'


def test_the_gpio_agent_runs_on_mock_pins(vm: Machine) -> None:
    vm.check("vigil add-device pins")
    vm.check("install -m 0600 /var/lib/vigil/devices.local/pins.secret /etc/vigil/agents/")
    vm.check("install -m 0644 /usr/local/lib/vigil/gpio-example.toml /etc/vigil/agents/pins.toml")
    env = "VIGIL_AGENT_ARGS=--gpio /etc/vigil/agents/pins.toml\nGPIOZERO_PIN_FACTORY=mock\n"
    vm.check("cat > /etc/vigil/agents/pins.env", stdin=env)
    vm.check("systemctl reload vigil && systemctl enable --now vigil-agent@pins", timeout=300)
    wait_for("the GPIO agent online", lambda: device_online(vm, "pins"), 300)
