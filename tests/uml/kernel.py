"""The kernel the UML guests boot: Debian testing's User-Mode Linux, set up once, cached.

Debian stable's ``user-mode-linux`` kernels (bookworm's 6.1, trixie's 6.12)
die at the first exec of init on hosts whose CPU has AMX (``ptrace set fp
regs failed, errno = 14``); testing's (7.2um1 when this was written) boots on
x86-64 hosts with and without AMX. It needs testing's glibc, so the setup
changes nothing system-wide:

1. a temporary apt source for the testing suite of the Debian mirror this
   host's apt already uses, and ``apt-get download user-mode-linux libc6``;
2. ``dpkg-deb -x`` of both into the cache, and ``patchelf`` points linux.uml
   (its ELF interpreter and library path) at that glibc;
3. ``lib/modules/VERSION`` in the cache links the kernel's module tree, so
   the guest loads SCTP with its dependencies by ``modprobe -d CACHE``.

The cache is ``$VIGIL_UML_CACHE``, else /var/cache/vigil-uml as root, else
``${XDG_CACHE_HOME:-~/.cache}/vigil-uml``; once it holds ``linux.uml`` nothing
is fetched again (delete it to get testing's newest). ``VIGIL_UML_KERNEL=PATH``
boots another linux.uml instead, with its module tree in
``dirname(PATH)/lib/modules``, and sets nothing up.

``python3 -m tests.uml.kernel`` (``make uml-kernel``) sets it up and says in
one line which kernel it is.
"""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = "testing"
PACKAGES = ("user-mode-linux", "libc6")
LIBDIR = "usr/lib/x86_64-linux-gnu"
KEYRINGS = (  # debian-archive-keyring: .pgp since trixie, .gpg before
    Path("/usr/share/keyrings/debian-archive-keyring.pgp"),
    Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
)


class UmlError(Exception):
    """No kernel to boot, or the guest died, timed out or printed no exit marker."""


@dataclass(frozen=True, slots=True)
class Kernel:
    """A linux.uml and its module tree."""

    path: Path  # the linux.uml to run
    modules: Path  # for modprobe -d: holds lib/modules/VERSION
    origin: str  # where it comes from, in words

    def __str__(self) -> str:
        versions = " ".join(sorted(p.name for p in (self.modules / "lib" / "modules").glob("*")))
        return f"User-Mode Linux {versions or '(no module tree)'} ({self.origin}): {self.path}"


def cache_dir() -> Path:
    if os.environ.get("VIGIL_UML_CACHE"):
        return Path(os.environ["VIGIL_UML_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/vigil-uml")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil-uml"


def unsupported() -> str | None:
    """Why no UML guest can run on this host at all, or None."""
    machine = platform.machine()
    if machine != "x86_64":
        return f"no User-Mode Linux kernel for {machine} here (x86-64 only)"
    return None


def kernel() -> Kernel:
    """The kernel to boot (set up on first use); says which, in one line on stderr."""
    override = os.environ.get("VIGIL_UML_KERNEL")
    if override:
        path = Path(override).absolute()
        if not path.is_file():
            raise UmlError(f"kernel not found: {path} (VIGIL_UML_KERNEL)")
        found = Kernel(path, path.parent, "VIGIL_UML_KERNEL")
    else:
        found = _cached(cache_dir())
    _say(str(found))
    return found


def _say(line: str) -> None:
    print(f"vigil-uml: {line}", file=sys.stderr, flush=True)


def _cached(cache: Path) -> Kernel:
    linux = cache / "linux.uml"
    if not linux.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one setup at a time
            if not linux.exists():
                _set_up(cache, linux)
    return Kernel(linux, cache, (cache / "origin").read_text().strip())


def _run(argv: Sequence[str], cwd: Path | None = None) -> str:
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode:
        why = (out.stderr.strip() or out.stdout.strip()).splitlines() or ["failed"]
        raise UmlError(f"{Path(argv[0]).name}: {why[-1]}")
    return out.stdout


def debian_mirror() -> str:
    """The URI of the Debian mirror apt uses for this host's own release (tests/vm too)."""
    codename = platform.freedesktop_os_release().get("VERSION_CODENAME", "")
    fmt = "$(TARGET_OF) $(RELEASE) $(REPO_URI)"
    targets = _run(["apt-get", "indextargets", "--no-release-info", "--format", fmt])
    for target_of, release, uri in (line.split(" ", 2) for line in targets.splitlines()):
        if target_of == "deb" and release == codename:
            return uri
    raise UmlError(f"no Debian mirror for {codename or 'this release'} in the apt sources")


def _download(mirror: str, into: Path) -> list[Path]:
    """``PACKAGES`` of ``SUITE`` from ``mirror``, with apt state of our own in ``into``."""
    keyring = next((k for k in KEYRINGS if k.exists()), None)
    if keyring is None:
        raise UmlError("no Debian archive keyring: apt-get install debian-archive-keyring")
    sources = into / "sources.list"
    sources.write_text(f"deb [signed-by={keyring}] {mirror} {SUITE} main\n")
    (into / "lists" / "partial").mkdir(parents=True)
    apt = ["apt-get", "-qq", "-o", f"Dir::Etc::sourcelist={sources}"]
    apt += ["-o", "Dir::Etc::sourceparts=-", "-o", f"Dir::State::Lists={into}/lists"]
    apt += ["-o", f"Dir::Cache={into}/cache", "-o", "Acquire::Languages=none"]
    if os.geteuid() == 0:  # apt's _apt user may not write into our directory
        apt += ["-o", "APT::Sandbox::User=root"]
    _run([*apt, "update"])
    _run([*apt, "download", *(f"{p}/{SUITE}" for p in PACKAGES)], cwd=into)
    return [next(into.glob(f"{p}_*.deb")) for p in PACKAGES]


def _set_up(cache: Path, linux: Path) -> None:
    if reason := unsupported():
        raise UmlError(reason)
    _run([str(ROOT / "tools" / "ensure-debs.sh"), "patchelf", "kmod"])
    mirror = debian_mirror()
    _say(f"fetching {' and '.join(PACKAGES)} from {mirror} {SUITE} into {cache}")
    root, modules = cache / "root", cache / "lib" / "modules"
    shutil.rmtree(root, ignore_errors=True)  # what an interrupted setup left
    shutil.rmtree(modules, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="vigil-uml-apt-") as tmp:
        debs = _download(mirror, Path(tmp))
        names = []
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(root)])
            names.append(_run(["dpkg-deb", "-W", "--showformat=${Package} ${Version}", str(deb)]))
    (cache / "origin").write_text(f"Debian {SUITE}: {', '.join(names)}\n")
    modules.mkdir(parents=True)
    for tree in (root / "usr/lib/uml/modules").iterdir():
        (modules / tree.name).symlink_to(tree)
    built, libs = root / "usr/bin/linux.uml", root / LIBDIR
    interpreter = libs / "ld-linux-x86-64.so.2"
    _run(["patchelf", "--set-interpreter", str(interpreter), "--set-rpath", str(libs), str(built)])
    built.rename(linux)  # last: from now on the cache is complete


def main() -> int:
    if "VIGIL_UML_KERNEL" not in os.environ and (reason := unsupported()):
        _say(f"{reason}: nothing to set up")
        return 0
    try:
        kernel()
    except UmlError as e:
        _say(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
