"""A booted systemd VM for tests: qemu (TCG), a throwaway overlay, commands through qemu-ga.

``Machine(image, workdir, shares)`` boots the image's kernel and initramfs
directly (``-kernel``/``-initrd``, root on the first virtio disk) with
``-snapshot``: every write goes to a temporary overlay that dies with qemu,
so each run starts from the same clean image, and a reboot inside the guest
keeps what the run wrote (the overlay belongs to the qemu process). The
accelerator is TCG: on the machines this was written on ``/dev/kvm`` exists
but qemu dies setting an MSR (``kvm_buf_set_msrs``) or never leaves the
firmware, and TCG boots the image to a running systemd in about half a
minute. The guest has no network (``-nic none``); ``shares`` are host
directories it can mount read-only over 9p (``mount_9p``), and the serial
console goes to ``console.log`` in ``workdir`` (its tail is in every error).

Commands run through the QEMU guest agent (``qemu-guest-agent``, started by
udev when its virtio port appears) on a virtio-serial port that is a Unix
socket in ``workdir``: ``guest-exec`` with captured output, then
``guest-exec-status`` until it exits. Every exchange starts with
``guest-sync-delimited`` (a 0xFF byte, then a fresh id) so a reply left over
from before a reboot is never taken for the answer. ``run`` returns the exit
code and output; ``check`` fails with them unless it is 0. ``reboot`` waits
until the guest's boot id has changed and systemd has finished booting.
"""

from __future__ import annotations

import base64
import itertools
import json
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.vm.image import Image, VmError

MEMORY_MIB = 1024
BOOT_SECONDS = 180  # TCG on a busy two-core machine: ~30 s usually
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Result:
    rc: int
    out: str
    err: str


class Machine:
    """A running VM; ``close`` kills it (its overlay goes with it)."""

    def __init__(self, image: Image, workdir: Path, shares: Mapping[str, Path]) -> None:
        self.console = workdir / "console.log"
        self._agent_path = workdir / "qga.sock"
        arch = image.arch
        argv = [
            *arch.qemu, "-accel", "tcg", "-smp", "2", "-m", str(MEMORY_MIB),
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}",
            "-nic", "none", "-snapshot",
            "-drive", f"file={image.disk},format=raw,if=virtio",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", f"root=/dev/vda rw console={arch.console}",
            "-device", "virtio-serial",
            "-chardev", f"socket,path={self._agent_path},server=on,wait=off,id=agent",
            "-device", "virtserialport,chardev=agent,name=org.qemu.guest_agent.0",
        ]  # fmt: skip
        for tag, path in shares.items():
            share = f"local,path={path},mount_tag={tag},security_model=none,readonly=on"
            argv += ["-virtfs", share]
        self._log = (workdir / "qemu.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        self._sock: socket.socket | None = None
        self._buffer = b""

    # -- the guest agent's protocol

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(self._agent_path))
            except OSError:
                sock.close()
                raise
            self._sock, self._buffer = sock, b""
        return self._sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _read_reply(self, sock: socket.socket, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("the guest agent's socket closed")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line.lstrip(b"\xff") or b"{}")
        return reply

    def _sync(self, timeout: float) -> socket.socket:
        """A connection on which the agent just answered a fresh sync id."""
        sock = self._connect()
        ident = next(_ids)  # never one an earlier exchange on this socket used
        sync = {"execute": "guest-sync-delimited", "arguments": {"id": ident}}
        sock.sendall(b"\xff" + json.dumps(sync).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            if self._read_reply(sock, deadline).get("return") == ident:
                return sock

    def call(self, command: str, timeout: float = 10, **arguments: Any) -> Any:
        """One guest agent command; its ``return`` value. VmError for its ``error``."""
        self._alive()
        try:
            sock = self._sync(timeout)
            sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
            reply = self._read_reply(sock, time.monotonic() + timeout)
        except (OSError, ValueError):
            self._disconnect()
            raise
        if "error" in reply:
            raise VmError(f"guest agent {command}: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return")

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise VmError(f"qemu exited {self.proc.returncode}\n{self.tail()}")

    def wait_agent(self, timeout: float = BOOT_SECONDS) -> None:
        """Until the guest agent answers (the guest has booted far enough)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("guest-ping", timeout=3)
                return
            except (OSError, ValueError):
                if time.monotonic() > deadline:
                    raise VmError(f"no guest agent after {timeout:.0f} s\n{self.tail()}") from None
                time.sleep(0.5)

    def wait_booted(self, timeout: float = BOOT_SECONDS) -> None:
        """Until systemd has finished booting; VmError (with the failed units) if it failed."""
        started = time.monotonic()
        self.wait_agent(timeout)
        left = max(10.0, timeout - (time.monotonic() - started))
        state = self.run("systemctl is-system-running --wait", timeout=left).out.strip()
        if state != "running":
            failed = self.run("systemctl --failed --no-legend").out
            raise VmError(f"the guest's systemd is {state}: {failed}\n{self.tail()}")

    # -- commands

    def run(self, script: str, stdin: str | None = None, timeout: float = 60) -> Result:
        """``sh -c script`` as root in the guest, to its end."""
        args: dict[str, Any] = {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin.encode()).decode()
        pid = self.call("guest-exec", **args)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status["exited"]:
                break
            if time.monotonic() > deadline:
                raise VmError(f"still running after {timeout:.0f} s in the guest: {script}")
            time.sleep(0.1)

        def text(key: str) -> str:
            return base64.b64decode(status.get(key, "")).decode(errors="replace")

        code = status.get("exitcode", -status.get("signal", 0))
        return Result(code, text("out-data"), text("err-data"))

    def check(self, script: str, stdin: str | None = None, timeout: float = 60) -> str:
        """``run``, which must exit 0; its stdout."""
        done = self.run(script, stdin, timeout)
        if done.rc != 0:
            raise VmError(f"exit {done.rc} in the guest: {script}\n{done.out}{done.err}")
        return done.out

    def mount_9p(self, tag: str, at: str) -> None:
        self.check(f"mkdir -p {at} && mount -t 9p -o trans=virtio,version=9p2000.L,ro {tag} {at}")

    def pid(self, unit: str) -> int:
        return int(self.check(f"systemctl show -P MainPID {shlex.quote(unit)}"))

    def reboot(self, timeout: float = BOOT_SECONDS) -> None:
        """``systemctl reboot``; back when the new boot has finished booting."""
        boot_id = self.check("cat /proc/sys/kernel/random/boot_id")
        self.call("guest-exec", path="/bin/systemctl", arg=["reboot"])  # no waiting for it
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.run("cat /proc/sys/kernel/random/boot_id", timeout=5).out != boot_id:
                    break
            except (OSError, ValueError, VmError):
                self._alive()
            if time.monotonic() > deadline:
                raise VmError(f"not back from the reboot after {timeout:.0f} s\n{self.tail()}")
            time.sleep(1)
        self.wait_booted(max(10.0, deadline - time.monotonic()))

    def tail(self, lines: int = 30) -> str:
        text = self.console.read_text(errors="replace") if self.console.exists() else ""
        return "console: …\n" + "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        self._disconnect()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
