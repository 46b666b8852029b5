"""The systemd VM's disk and kernel, and the wheels its pip installs from: built once, cached.

A small Debian 12 (bookworm) with systemd as PID 1 and Debian's own kernel
(``linux-image-amd64``: SCTP is a module, loaded by ``modprobe sctp`` as on a
Pi), made from Debian's packages only:

1. ``mmdebstrap`` (variant ``apt``: the Essential packages and apt) with
   ``PACKAGES``: systemd, the kernel, what ``make install`` needs (make, the
   system's Python with venv and headers, gcc, libsctp-dev: pysctp is built
   from source, as on a Pi), openssl (vigil's certificate), curl, and
   ``qemu-guest-agent``, the tests' way in (tests/vm/machine.py), from the
   Debian mirror this host's apt uses;
2. ``mkfs.ext4 -d`` makes the root file system image from that tree (no loop
   device, no mount), and the kernel and initramfs are copied out beside it:
   qemu boots them directly (no boot loader).

The guest has no network, so its pip installs from a wheelhouse made here
(``wheelhouse``): ``pip download`` of pyproject's dependencies and build
requirements, with the markers evaluated for the guest (aarch64 has lgpio)
and wheels for its platform (CPython 3.11, glibc 2.36), and pysctp as its
source (it has no wheels; the guest compiles it as a Pi does).

The cache is ``$VIGIL_VM_CACHE``, else /var/cache/vigil-vm as root, else
``${XDG_CACHE_HOME:-~/.cache}/vigil-vm``. An image lives in
``bookworm-ARCH-HASH`` (HASH: of ``PACKAGES``, so a changed list builds a
new one), a wheelhouse in ``wheels/ARCH-HASH`` (HASH: of the requirements);
each is built in a scratch directory and renamed into place last, so what
is there is complete, and nothing is fetched again (delete it to rebuild).
``python3 -m tests.vm.image [ARCH]`` (``make vm-image``) builds what is
missing and says in one line each which image and which wheels.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

from tests.uml.kernel import UmlError, debian_mirror

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's
GLIBC = 36  # bookworm's 2.36: wheels for manylinux_2_17 … manylinux_2_36
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "kmod", "passwd", "qemu-guest-agent",
    "make", "python3", "python3-venv", "python3-dev", "gcc", "libsctp-dev",
    "openssl", "procps", "curl",
)  # fmt: skip
SOURCE_ONLY = frozenset({"pysctp"})  # no wheels on PyPI: the guest builds them
BINFMT = Path("/proc/sys/fs/binfmt_misc")
SIZE = "3G"  # the root file system (sparse on disk: ~1 GB used)


class VmError(Exception):
    """No image, or the guest died, timed out or a command in it failed."""


@dataclass(frozen=True, slots=True)
class Arch:
    """A Debian architecture and how qemu runs it."""

    name: str  # Debian's: amd64, arm64
    machine: str  # platform.machine() there, and the wheel tags': x86_64, aarch64
    kernel: str  # Debian's kernel package
    qemu: tuple[str, ...]  # qemu-system-… and its machine, CPU
    console: str  # the serial console's device in the guest


ARCHES = {
    "amd64": Arch("amd64", "x86_64", "linux-image-amd64", ("qemu-system-x86_64",), "ttyS0"),
    "arm64": Arch(
        "arm64",
        "aarch64",
        "linux-image-arm64",
        ("qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72"),
        "ttyAMA0",
    ),
}


@dataclass(frozen=True, slots=True)
class Image:
    """A root file system image with the kernel and initramfs to boot it."""

    arch: Arch
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.raw"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    def __str__(self) -> str:
        origin = (self.directory / "origin").read_text().strip()
        return f"{origin}: {self.directory}"


def cache_dir() -> Path:
    if os.environ.get("VIGIL_VM_CACHE"):
        return Path(os.environ["VIGIL_VM_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/vigil-vm")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil-vm"


def unsupported(arch: Arch) -> str | None:
    """Why this host cannot build or boot ``arch``'s image, or None."""
    if platform.machine() != "x86_64":
        return f"the VM tests run on x86-64 hosts (this is {platform.machine()})"
    missing = [t for t in ("mmdebstrap", "mkfs.ext4", arch.qemu[0]) if not shutil.which(t)]
    if missing:
        return f"no {', '.join(missing)} (make test-deps installs them)"
    if os.geteuid() != 0:
        return "building the VM image needs root (mmdebstrap's chroot)"
    return None


def _foreign_binaries(arch: Arch) -> None:
    """mmdebstrap runs ``arch``'s maintainer scripts in a chroot through qemu-user-static,
    which the kernel's binfmt_misc must know: systemd-binfmt registers it at boot where
    qemu-user-static is installed; where binfmt_misc was not even mounted (containers),
    mount it and register that one architecture here, and say so."""
    entry = BINFMT / f"qemu-{arch.machine}"
    if arch.machine == platform.machine() or entry.exists():
        return
    conf = Path(f"/usr/lib/binfmt.d/qemu-{arch.machine}.conf")
    if not conf.exists():
        raise VmError(f"no {conf}: apt-get install qemu-user-static")
    if not (BINFMT / "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    _say(f"registering {conf} with binfmt_misc")
    _run(["/lib/systemd/systemd-binfmt", str(conf)])
    if not entry.exists():
        raise VmError(f"binfmt_misc has no {entry.name} after systemd-binfmt {conf}")


def _say(line: str) -> None:
    print(f"vigil-vm: {line}", file=sys.stderr, flush=True)


def _run(argv: Sequence[str], log: Path | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode:
        why = (out.stderr.strip() or out.stdout.strip()).splitlines() or ["failed"]
        raise VmError(f"{Path(argv[0]).name}: {why[-1]}" + (f" (log: {log})" if log else ""))
    return out.stdout


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _built(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, made by ``build(scratch)`` under a lock if it is not there yet."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time
        if not target.exists():
            scratch = target.parent / f".{target.name}.build"
            shutil.rmtree(scratch, ignore_errors=True)  # what an interrupted build left
            scratch.mkdir()
            build(scratch)
            scratch.rename(target)  # last: from now on it is complete
    return target


def image(arch: Arch) -> Image:
    """``arch``'s image (built on first use); says which, in one line on stderr."""
    packages = (*PACKAGES, arch.kernel)
    target = cache_dir() / f"{SUITE}-{arch.name}-{_digest(*packages)}"
    found = Image(arch, _built(target, lambda scratch: _build_image(arch, packages, scratch)))
    _say(str(found))
    return found


def _build_image(arch: Arch, packages: Sequence[str], into: Path) -> None:
    if reason := unsupported(arch):
        raise VmError(reason)
    try:
        mirror = debian_mirror()
    except UmlError as e:
        raise VmError(str(e)) from None
    _foreign_binaries(arch)
    _say(f"building Debian {SUITE} {arch.name} with mmdebstrap from {mirror} into {into}")
    started = time.monotonic()
    tree = into / "root"
    setup = (  # a root file system on the first virtio disk; the name people see
        'echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$1/etc/fstab"; '
        'echo vigil-vm > "$1/etc/hostname"; echo "127.0.1.1 vigil-vm" >> "$1/etc/hosts"'
    )
    excluded = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale")]
    mmdebstrap = ["mmdebstrap", "--variant=apt", f"--architectures={arch.name}"]
    mmdebstrap += [f"--include={','.join(packages)}", *excluded, f"--customize-hook={setup}"]
    _run([*mmdebstrap, SUITE, str(tree), mirror], log=into / "mmdebstrap.log")
    boot = tree / "boot"
    shutil.copy(next(boot.glob("vmlinuz-*")), into / "vmlinuz")
    shutil.copy(next(boot.glob("initrd.img-*")), into / "initrd.img")
    fmt = "${Package} ${Version}\\n"
    query = ["dpkg-query", f"--admindir={tree}/var/lib/dpkg", "-W", f"--showformat={fmt}"]
    versions = dict(
        line.split(" ", 1) for line in _run([*query, "systemd", "python3"]).splitlines()
    )
    kernel = next(boot.glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
    _run(["mkfs.ext4", "-q", "-F", "-L", "vigil", "-d", str(tree), str(into / "disk.raw"), SIZE])
    shutil.rmtree(tree)
    took = time.monotonic() - started
    (into / "origin").write_text(
        f"Debian {SUITE} {arch.name}, kernel {kernel}, systemd {versions['systemd']}, "
        f"python3 {versions['python3']} (built in {took:.0f} s)\n"
    )


def requirements(arch: Arch) -> list[str]:
    """What the guest's pip installs vigil from: pyproject's dependencies for ``arch``
    (markers evaluated for it, then dropped) and the build requirements (setuptools;
    wheel too, for pysctp's setup.py)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = {"platform_machine": arch.machine, "python_version": PYTHON, "sys_platform": "linux"}
    wanted = [*project["build-system"]["requires"], "wheel"]
    for spec in project["project"]["dependencies"]:
        req = Requirement(spec)
        if req.marker is None or Marker(str(req.marker)).evaluate(env):
            req.marker = None
            wanted.append(str(req))
    return wanted


def wheelhouse(arch: Arch) -> Path:
    """The directory the guest's pip finds everything in (built on first use); says which."""
    wanted = requirements(arch)
    target = cache_dir() / "wheels" / f"{arch.name}-{_digest(arch.name, *wanted)}"
    _built(target, lambda scratch: _download(arch, wanted, scratch))
    _say(f"wheels for Python {PYTHON} {arch.machine}: {', '.join(wanted)}: {target}")
    return target


def _download(arch: Arch, wanted: Sequence[str], into: Path) -> None:
    pip = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(into)]
    binary = [r for r in wanted if Requirement(r).name not in SOURCE_ONLY]
    source = [r for r in wanted if Requirement(r).name in SOURCE_ONLY]
    tags = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp"]
    tags += ["--abi", f"cp{PYTHON.replace('.', '')}", "--abi", "abi3", "--abi", "none"]
    tags += ["--platform", f"manylinux2014_{arch.machine}"]
    for minor in range(17, GLIBC + 1):
        tags += ["--platform", f"manylinux_2_{minor}_{arch.machine}"]
    _run([*pip, *tags, *binary])
    if source:
        _run([*pip, "--no-binary=:all:", "--no-deps", *source])


def main(argv: Sequence[str]) -> int:
    names = argv or ["amd64"]
    try:
        for name in names:
            arch = ARCHES[name]
            if reason := unsupported(arch):
                _say(f"{reason}: nothing to build")
                continue
            image(arch)
            wheelhouse(arch)
    except (VmError, KeyError) as e:
        _say(f"{e}" if isinstance(e, VmError) else f"no such architecture: {e} ({list(ARCHES)})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
