"""Run a command inside a User-Mode Linux guest whose kernel has SCTP.

The build machines' kernel has no SCTP; the User-Mode Linux kernel of
``tests/uml/kernel.py`` (Debian testing's, set up on first use and cached)
has it as a module and boots off the host's own root filesystem (hostfs) in
about a second. The guest sees the host's files, /tmp included, so the job
runs with the same Python, venv and checkout as the host.

How a run works:

1. a job directory is made under /tmp with ``job.sh`` (cd CWD, set ENV, run
   the command) and a copy of ``init.sh`` (executable whatever the checkout's
   file modes are);
2. ``linux.uml ... init=JOBDIR/init.sh VIGIL_UML_JOB=JOBDIR </dev/null`` boots;
   init mounts proc/sys/tmpfs, loads SCTP (``modprobe -d``, the kernel's own
   module tree), brings ``lo`` up, runs job.sh and prints
   ``VIGIL-UML-EXIT=<status>`` before ``poweroff -f``;
3. the guest's console (linux.uml's stdout) is streamed to our stdout and the
   marker line gives the job's exit status (linux.uml's own status means
   nothing). A guest that dies first (a kernel panic, init's own error, an
   exit without the marker) raises ``UmlError`` at once, its first line the
   console line that says why.

Optional tap network (root only): ``with Tap() as tap: run(..., tap=tap)``
gives the host 10.213.1.1/30 on the tap and the guest 10.213.1.2/30 on its
``vec0`` (UML's vector driver, tap transport), so host clients reach a server
in the guest; ``Tap.down()`` pulls the cable.
Taps are allocated one /30 each of 10.213.1.0/24 (slot 0 is the pair above,
slot k is 10.213.1.4k+1 / 4k+2), so several guests can run at once.
``tests/uml/testhost.py`` builds a whole test host (vigil and agents in a
guest, reachable from the host) on this.

Command line: ``python -m tests.uml.harness [--cwd DIR] [--tap TAP] -- CMD...``
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.uml.kernel import UmlError, kernel

INIT = Path(__file__).with_name("init.sh")
MARKER = re.compile(r"VIGIL-UML-EXIT=(\d+)")
# Console lines that say why a guest died: UML's own fatal errors (on hosts it
# cannot run on: "userspace - ptrace set fp regs failed, errno = 14"), the
# panic that follows, and init.sh's "vigil-uml: ..." when it cannot run the job.
# A panic before the console is up comes in a dump of the kernel log ("<0>...").
FATAL = re.compile(r"^(<\d>)?Kernel panic - |failed, errno = |^vigil-uml: ")
PANIC = re.compile(r"^(<\d>)?Kernel panic - ")
TAP_NET = ipaddress.ip_network("10.213.1.0/24")  # one /30 per tap
TAP_SLOTS = TAP_NET.num_addresses // 4
GUEST_ADDR = "10.213.1.2/30"  # slot 0
TAP_LOCK = Path(tempfile.gettempdir()) / "vigil-uml-tap.lock"
# Environment variables worth carrying into the guest when env is not given.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "PYTHONPATH", "VIRTUAL_ENV", "CI")


def _job_script(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    lines = ["cd " + shlex.quote(str(cwd)) + " || exit 125"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


class Guest:
    """One booted UML guest running one command; ``wait()`` gives its status."""

    def __init__(
        self,
        argv: Sequence[str],
        cwd: str | Path = ".",
        env: Mapping[str, str] | None = None,
        *,
        mem: str = "512M",  # pytest, vigil and a dozen agents at once: 256M ran out once
        tap: str | Tap | None = None,
        echo: bool = True,
    ) -> None:
        linux = kernel()
        if env is None:
            env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        self.job = Path(tempfile.mkdtemp(prefix="vigil-uml-"))
        (self.job / "job.sh").write_text(_job_script(argv, Path(cwd).absolute(), env))
        init = self.job / "init.sh"
        shutil.copyfile(INIT, init)
        init.chmod(0o755)
        cmd = [
            str(linux.path),
            f"mem={mem}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            "quiet",
            f"init={init}",
            "con=null",
            "con0=fd:0,fd:1",
            f"uml_dir={self.job}",  # UML's pid file and sockets; not ~/.uml
            f"VIGIL_UML_JOB={self.job}",
            f"VIGIL_UML_MODULES={linux.modules}",
        ]
        if tap:
            name, cidr = (tap.name, tap.guest_cidr) if isinstance(tap, Tap) else (tap, GUEST_ADDR)
            cmd += [f"vec0:transport=tap,ifname={name}", f"VIGIL_UML_ADDR={cidr}"]
        self.echo = echo
        self.lines: list[str] = []
        self.status: int | None = None
        self.fatal: list[str] = []  # the console lines that say why it died, up to the panic
        self._over = threading.Event()  # the console closed, or the kernel panicked
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # UML forks helpers: kill them as one group
            )
        except OSError as e:
            shutil.rmtree(self.job, ignore_errors=True)
            raise UmlError(f"cannot run {linux.path}: {e.strerror}") from None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            m = MARKER.search(line)
            if m:
                self.status = int(m.group(1))
                continue
            if FATAL.search(line) and not self._over.is_set():
                self.fatal.append(line)
                if PANIC.match(line):
                    self._over.set()
            if self.echo:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        self._over.set()

    def ended(self) -> str | None:
        """None while the guest runs; once it is gone (or panicked), one line saying how."""
        if not self._over.is_set():
            if self._proc.poll() is None:
                return None
            self._reader.join(2)  # the console's last lines
        if self.fatal:
            return "; ".join(self.fatal)
        if self.status is not None:
            return f"the guest's job exited with status {self.status}"
        last = next((line for line in reversed(self.lines) if line.strip()), "no output")
        return f"UML guest exited without the exit marker: {last}"

    def wait(self, timeout: float = 600) -> int:
        """Wait for the guest to power off; return the job's exit status."""
        deadline = time.monotonic() + timeout
        while self.ended() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise UmlError(f"UML guest still running after {timeout:.0f} s; killed")
            time.sleep(0.05)
        self.kill()  # a panicked kernel may linger
        self._reader.join(5)
        if self.status is None:
            tail = "\n".join(self.lines[-20:])
            raise UmlError(f"{self.ended()}\nlast output:\n{tail}")
        return self.status

    def kill(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        shutil.rmtree(self.job, ignore_errors=True)


def run(
    argv: Sequence[str],
    cwd: str | Path = ".",
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 600,
    tap: str | Tap | None = None,
    echo: bool = True,
) -> int:
    """Boot a guest, run ``argv`` in ``cwd`` with ``env``; return its exit status."""
    return Guest(argv, cwd, env, tap=tap, echo=echo).wait(timeout)


class Tap:
    """A host tap device for a guest's vec0 (root only); a context manager.

    ``Tap()`` takes the first free slot: device ``vigiltapK`` with the host's
    address ``host_ip`` and the guest's ``guest_ip`` (``guest_cidr`` for its
    vec0). A name or slot may be given; entering fails if that tap exists.
    """

    def __init__(self, name: str | None = None, slot: int | None = None) -> None:
        self._name = name
        self.slot = slot
        self.created = False

    @property
    def name(self) -> str:
        return self._name or f"vigiltap{self.slot}"

    def _addr(self, n: int) -> ipaddress.IPv4Address:
        assert self.slot is not None, "not entered yet"
        return ipaddress.IPv4Address(int(TAP_NET.network_address) + 4 * self.slot + n)

    @property
    def host_ip(self) -> str:
        return str(self._addr(1))

    @property
    def guest_ip(self) -> str:
        return str(self._addr(2))

    @property
    def guest_cidr(self) -> str:
        return f"{self.guest_ip}/30"

    @staticmethod
    def _ip(*args: str) -> None:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if out.returncode:
            raise UmlError(f"ip {' '.join(args)}: {out.stderr.strip()}")

    @staticmethod
    def _used_slots() -> set[int]:
        out = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
        )
        used = set()
        for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out.stdout):
            addr = ipaddress.IPv4Address(m.group(1))
            if addr in TAP_NET:
                used.add((int(addr) - int(TAP_NET.network_address)) // 4)
        return used

    def __enter__(self) -> Tap:
        # One allocator at a time (tests may start guests in parallel).
        with TAP_LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.slot is None:
                used = self._used_slots()
                free = [
                    k
                    for k in range(TAP_SLOTS)
                    if k not in used and not Path(f"/sys/class/net/{self.name_for(k)}").exists()
                ]
                if not free:
                    raise UmlError(f"no free tap slot in {TAP_NET}")
                self.slot = free[0]
            if Path(f"/sys/class/net/{self.name}").exists():
                raise UmlError(f"tap {self.name} exists already (another guest, or left over)")
            self._ip("tuntap", "add", "dev", self.name, "mode", "tap")
            self.created = True
            try:
                # While the tap is down its connected route is gone: this keeps
                # packets for the guest from leaving by the default route.
                self._ip("route", "add", "blackhole", self.guest_net, "metric", "4242")
                self._ip("addr", "add", f"{self.host_ip}/30", "dev", self.name)
                self.up()
            except UmlError:
                self.__exit__()
                raise
        return self

    def name_for(self, slot: int) -> str:
        return self._name or f"vigiltap{slot}"

    @property
    def guest_net(self) -> str:
        return f"{self._addr(0)}/30"

    def __exit__(self, *_exc: object) -> None:
        if self.created:
            subprocess.run(["ip", "link", "del", self.name], check=False, capture_output=True)
            route = ["ip", "route", "del", "blackhole", self.guest_net, "metric", "4242"]
            subprocess.run(route, check=False, capture_output=True)
            self.created = False

    def up(self) -> None:
        self._ip("link", "set", self.name, "up")

    def down(self) -> None:
        """Pull the cable: packets stop (into a blackhole route), no FIN or RST is sent."""
        self._ip("link", "set", self.name, "down")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a command inside a UML guest with SCTP.")
    p.add_argument("--cwd", default=".", help="directory to run the command in")
    p.add_argument("--tap", help="host tap device (with 10.213.1.1/30) as the guest's vec0")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("command", nargs="+", help="the command (put it after --)")
    args = p.parse_args(argv)
    try:
        return run(args.command, args.cwd, timeout=args.timeout, tap=args.tap)
    except UmlError as e:
        sys.stderr.write(f"uml: {e}\n")
        return 125


if __name__ == "__main__":
    sys.exit(main())
