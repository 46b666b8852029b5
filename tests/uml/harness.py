"""Run a command inside a User-Mode Linux guest whose kernel has SCTP.

The build machines' kernel has no SCTP; Debian's ``user-mode-linux`` kernel
has it as a module and boots off the host's own root filesystem (hostfs) in a
few seconds. The guest sees the host's files, /tmp included, so the job runs
with the same Python, venv and checkout as the host.

How a run works:

1. a job directory is made under /tmp with ``job.sh`` (cd CWD, set ENV, run
   the command) and a copy of ``init.sh`` (executable whatever the checkout's
   file modes are);
2. ``linux.uml ... init=JOBDIR/init.sh VIGIL_UML_JOB=JOBDIR </dev/null`` boots;
   init mounts proc/sys/tmpfs, loads the SCTP modules, brings ``lo`` up, runs
   job.sh and prints ``VIGIL-UML-EXIT=<status>`` before ``poweroff -f``;
3. the guest's console (linux.uml's stdout) is streamed to our stdout and the
   marker line gives the job's exit status (linux.uml's own status means
   nothing).

Optional tap network (root only): ``with Tap("vigil0"): run(..., tap="vigil0")``
gives the host 10.213.1.1/30 on the tap and the guest 10.213.1.2/30 on eth0,
so host clients reach a server in the guest; ``Tap.down()`` pulls the cable.

Command line: ``python tests/uml/harness.py [--cwd DIR] [--tap TAP] -- CMD...``
"""

from __future__ import annotations

import argparse
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

KERNEL = "linux.uml"
INIT = Path(__file__).with_name("init.sh")
MARKER = re.compile(r"VIGIL-UML-EXIT=(\d+)")
HOST_ADDR = "10.213.1.1/30"
GUEST_ADDR = "10.213.1.2/30"
GUEST_IP = GUEST_ADDR.split("/")[0]
# Environment variables worth carrying into the guest when env is not given.
PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "PYTHONPATH", "VIRTUAL_ENV", "CI")


class UmlError(Exception):
    """The guest could not be booted, timed out, or printed no exit marker."""


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
        mem: str = "256M",
        tap: str | None = None,
        echo: bool = True,
    ) -> None:
        if shutil.which(KERNEL) is None:
            raise UmlError(f"{KERNEL} not found: apt-get install user-mode-linux")
        if env is None:
            env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        self.job = Path(tempfile.mkdtemp(prefix="vigil-uml-"))
        (self.job / "job.sh").write_text(_job_script(argv, Path(cwd).absolute(), env))
        init = self.job / "init.sh"
        shutil.copyfile(INIT, init)
        init.chmod(0o755)
        cmd = [
            KERNEL,
            f"mem={mem}",
            "root=/dev/root",
            "rootfstype=hostfs",
            "rootflags=/",
            "rw",
            "quiet",
            f"init={init}",
            "con=null",
            "con0=fd:0,fd:1",
            f"VIGIL_UML_JOB={self.job}",
        ]
        if tap:
            cmd += [f"eth0=tuntap,{tap}", f"VIGIL_UML_ADDR={GUEST_ADDR}"]
        self.echo = echo
        self.lines: list[str] = []
        self.status: int | None = None
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # UML forks helpers: kill them as one group
        )
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
            elif self.echo:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def wait(self, timeout: float = 600) -> int:
        """Wait for the guest to power off; return the job's exit status."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise UmlError(f"UML guest still running after {timeout:.0f} s; killed") from None
        self._reader.join(5)
        shutil.rmtree(self.job, ignore_errors=True)
        if self.status is None:
            tail = "\n".join(self.lines[-20:])
            raise UmlError(f"UML guest printed no exit marker; last output:\n{tail}")
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
    tap: str | None = None,
    echo: bool = True,
) -> int:
    """Boot a guest, run ``argv`` in ``cwd`` with ``env``; return its exit status."""
    return Guest(argv, cwd, env, tap=tap, echo=echo).wait(timeout)


class Tap:
    """A host tap device for a guest's eth0 (root only); a context manager."""

    def __init__(self, name: str = "vigil0", addr: str = HOST_ADDR) -> None:
        self.name = name
        self.addr = addr

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True)

    def __enter__(self) -> Tap:
        self._ip("tuntap", "add", "dev", self.name, "mode", "tap")
        self._ip("addr", "add", self.addr, "dev", self.name)
        self.up()
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.name], check=False)

    def up(self) -> None:
        self._ip("link", "set", self.name, "up")

    def down(self) -> None:
        """Pull the cable: packets stop, no FIN or RST is sent."""
        self._ip("link", "set", self.name, "down")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run a command inside a UML guest with SCTP.")
    p.add_argument("--cwd", default=".", help="directory to run the command in")
    p.add_argument("--tap", help="host tap device to attach as the guest's eth0")
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
