"""A real vigil with the control channel on, device agents, curl and an SSE listener.

``Panel`` starts ``python -m server`` (tests/support.Vigil) with ``[control]``
on a random SCTP port and reference agents as subprocesses (optionally
inside a network namespace, tests/uml/guestnet.py). ``Events`` follows a
user's ``/api/events`` stream in a thread and timestamps every event, so a
test can tell when a browser would have seen it. Used by tests/sctp and by
the control bench (bench/section_control.py), inside UML or natively.

The devices of ``devicekeys.DEVICES`` are declared before vigil starts and
``agent()`` gives each agent its secret; an agent with another id is
declared on the spot (devices.local.toml, then SIGHUP, as after
``python -m server add-device``). ``control.allow`` lets in loopback and
the network namespaces of tests/uml/guestnet.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

from tests.sctp.devicekeys import DEVICES, agent_env, declare  # noqa: E402
from tests.support import Vigil, basic, password, write_config  # noqa: E402
from tests.wire import Event, sse_events  # noqa: E402


class Panel:
    """A vigil with the control channel on, and device agents talking to it."""

    def __init__(
        self,
        tmp: Path,
        command_timeout: float = 5,
        control_host: str = "127.0.0.1",
        **sections: dict[str, Any],
    ) -> None:
        self.sctp_port = random.randrange(20000, 60000)
        control = {
            "enabled": True,
            "host": control_host,
            "port": self.sctp_port,
            "command_timeout": command_timeout,
            "allow": ["127.0.0.0/8", "::1/128", "10.213.0.0/24"],  # guestnet's namespaces
        }
        self.tmp = tmp
        self.declared = set(DEVICES)
        declare(tmp, DEVICES)
        self.vigil = Vigil(write_config(tmp, {"control": control, **sections}))
        self.agents: list[subprocess.Popen[bytes]] = []

    def curl(
        self, method: str, path: str, user: str = "alice", body: Any = None
    ) -> tuple[int, Any]:
        cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]
        cmd += ["-u", f"{user}:{password(user)}", self.vigil.base + path]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=30).stdout.decode()
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text) if text.strip() else None

    def post_later(self, device: str, entity: str, value: Any, user: str = "alice") -> Pending:
        """Start a command in a curl process; ``Pending.result()`` waits for its answer."""
        cmd = ["curl", "-s", "-w", "\n%{http_code}", "-u", f"{user}:{password(user)}"]
        cmd += ["-X", "POST", "-H", "Content-Type: application/json"]
        cmd += ["--data-binary", json.dumps({"entity": entity, "value": value})]
        cmd += [f"{self.vigil.base}/api/devices/{device}/commands"]
        return Pending(subprocess.Popen(cmd, stdout=subprocess.PIPE))

    def agent(
        self,
        name: str,
        *extra: str,
        host: str = "127.0.0.1",
        wrap: Sequence[str] = (),
        key: bytes | None = None,
        module: str = "server.agent",
    ) -> subprocess.Popen[bytes]:
        """Start an agent (``python -m`` ``module``) with the secret of ``name`` (or ``key``)."""
        if name not in self.declared:
            self.declare(name)
        argv = [sys.executable, "-m", module, "--name", name, "--host", host]
        argv += ["--port", str(self.sctp_port), *extra]
        proc = subprocess.Popen(
            [*wrap, *argv], cwd=ROOT, env=agent_env(name, key), stderr=subprocess.DEVNULL
        )
        self.agents.append(proc)
        return proc

    def declare(self, name: str) -> None:
        """Declare device ``name`` to the running vigil (devices.local.toml, SIGHUP)."""
        declare(self.tmp, [name])
        self.declared.add(name)
        since = len(self.vigil.log())
        self.vigil.signal(signal.SIGHUP)
        self.vigil.wait_for_log("reloaded", since)

    def events(self, user: str = "bob") -> Events:
        return Events(self.vigil.host, self.vigil.port, user)

    def wait(self, cond: Callable[[], bool], timeout: float = 10) -> float:
        start = time.monotonic()
        while not cond():
            assert time.monotonic() - start < timeout, f"not within {timeout} s"
            time.sleep(0.05)
        return time.monotonic() - start

    def online(self, device: str) -> bool:
        _, devices = self.curl("GET", "/api/devices")
        return any(d["id"] == device and d["online"] for d in devices)

    def close(self) -> None:
        for proc in self.agents:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.vigil.stop()


class Pending:
    """A command sent by curl in the background."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def result(self, timeout: float = 15) -> tuple[float, int, dict[str, Any]]:
        """(monotonic time the answer came, status, body)."""
        out, _ = self.proc.communicate(timeout=timeout)
        when = time.monotonic()
        text, _, status = out.decode().rpartition("\n")
        return when, int(status), json.loads(text) if text.strip() else {}


class Events:
    """A user's ``GET /api/events`` stream, read in a thread; a context manager."""

    def __init__(self, host: str, port: int, user: str) -> None:
        self.received: list[Event] = []
        self._cond = threading.Condition()
        self._conn = http.client.HTTPConnection(host, port, timeout=60)
        self._conn.request("GET", "/api/events", headers={"Authorization": basic(user)})
        resp = self._conn.getresponse()
        assert resp.status == 200, resp.status
        self._resp = resp
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        lines = (raw.decode().rstrip("\r\n") for raw in self._resp)
        try:
            for ev in sse_events(lines):
                if ev.type == "comment":
                    continue
                with self._cond:
                    self.received.append(ev)
                    self._cond.notify_all()
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 10) -> Event:
        """The first event (already received or coming) for which ``match`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for ev in self.received:
                    if match(ev):
                        return ev
                left = deadline - time.monotonic()
                assert left > 0, f"no such event within {timeout} s: {self.received[-5:]}"
                self._cond.wait(left)

    def device(self, kind: str, device: str, after: float = 0) -> Callable[[Event], bool]:
        """Matches a ``device`` event of ``kind`` about ``device`` that came after ``after``."""
        return lambda ev: (
            ev.type == "device"
            and ev.at >= after
            and ev.data["kind"] == kind
            and ev.data["device"]["id"] == device
        )

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # the reader sees the end of the stream
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        self._conn.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
