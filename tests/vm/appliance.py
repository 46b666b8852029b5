"""vigil installed in a VM as a person installs it on a Pi; helpers the VM tests share.

``installed(arch, workdir)`` boots ``arch``'s image (tests/vm/image.py) and
does what README's "Running as a service on a Pi" says, as root in the
guest: the checkout (a tarball of it as it is, uncommitted changes too, over
9p) unpacked in ``SRC``, ``make install`` with pip handed the wheelhouse
(``PIP_NO_INDEX``/``PIP_FIND_LINKS``: the test's way, the guest has no
network), ``vigil user add admin``, ``systemctl enable --now vigil``; it
says in one line how long each step took. ``curl`` asks the guest's vigil
over HTTPS, checking the certificate vigil made.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import ROOT
from tests.vm.image import Arch, image, wheelhouse
from tests.vm.machine import Machine

SRC = "/root/vigil"  # where the checkout is unpacked in the guest
ADMIN_PW = "correct horse battery"
INSTALL_SECONDS = 1800  # make install under emulation on a busy machine


def checkout_tarball(into: Path) -> Path:
    """The checkout as it is (git's tracked and new files, uncommitted changes too)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tarball = into / "vigil.tar"
    with tarfile.open(tarball, "w") as tar:
        for name in sorted(n.decode() for n in listed if n):
            if (ROOT / name).exists():
                tar.add(ROOT / name, arcname=name, recursive=False)
    return tarball


class Stopwatch:
    """How long each step took, in words: ``booted in 31 s, make install in 95 s``."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._laps: list[str] = []

    def lap(self, what: str) -> None:
        now = time.monotonic()
        self._laps.append(f"{what} in {now - self._last:.0f} s")
        self._last = now

    def __str__(self) -> str:
        return ", ".join(self._laps)


def installed(arch: Arch, workdir: Path) -> Machine:
    """A booted ``arch`` VM with vigil installed, a user ``admin`` and the service running."""
    img, wheels = image(arch), wheelhouse(arch)
    (workdir / "src").mkdir()
    checkout_tarball(workdir / "src")
    machine = Machine(img, workdir, {"wheels": wheels, "src": workdir / "src"})
    took = Stopwatch()
    try:
        machine.wait_booted()
        took.lap("booted")
        machine.mount_9p("wheels", "/mnt/wheels")
        machine.mount_9p("src", "/mnt/src")
        machine.check(f"mkdir {SRC} && tar -xf /mnt/src/vigil.tar -C {SRC}")
        env = "PIP_NO_INDEX=1 PIP_FIND_LINKS=/mnt/wheels"
        machine.check(f"cd {SRC} && {env} make install", timeout=INSTALL_SECONDS)
        took.lap("make install")
        machine.check("vigil user add admin", stdin=ADMIN_PW + "\n")
        machine.check("systemctl enable --now vigil", timeout=300)
        took.lap("user add, enable --now")
    except BaseException:
        machine.close()
        raise
    print(f"vigil-vm: {arch.name}: {took}", file=sys.stderr, flush=True)
    return machine


def curl(vm: Machine, path: str, user: str = "admin", pw: str = ADMIN_PW, *extra: str) -> str:
    """``curl`` in the guest over HTTPS, checking the certificate vigil made: the HTTP status
    and the body, e.g. ``200 {"user": …}``."""
    argv = ["curl", "-s", "--cacert", "/var/lib/vigil/tls.local.crt", "-u", f"{user}:{pw}"]
    argv += ["-w", r"\n%{http_code}", *extra, f"https://localhost:8443{path}"]
    body, _, status = vm.check(shlex.join(argv)).rpartition("\n")
    return f"{status} {body}"


def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``probe()`` is true; fails the test after ``timeout``."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < timeout, f"not within {timeout:.0f} s: {what}"
        time.sleep(1)
    return time.monotonic() - started


def device_online(vm: Machine, device: str) -> bool:
    devices = json_body(curl(vm, "/api/devices"))
    return any(d["id"] == device and d["online"] for d in devices)


def json_body(answer: str) -> Any:
    """The body of a ``curl`` answer, parsed."""
    return json.loads(answer.partition(" ")[2])
