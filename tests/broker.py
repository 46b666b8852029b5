"""A real Mosquitto broker for tests, and its own command-line clients as the fleet.

``Broker(directory)`` writes a mosquitto.conf (no anonymous clients, a
password file made by ``mosquitto_passwd``, an ACL), listens on a free port
of ``host`` (loopback unless given: the UML test host's tap address) and
starts; ``kill()`` is ``kill -9``, ``start()`` brings it back on the same
port, with nothing retained (no persistence): what a subscriber then sees
was published again. ``tls=(cert, key)`` makes the listener TLS only.

Users (``USERS``; passwords are the names reversed, as in tests/support.py):
``vigil`` (the bridge: read and write under ``vigil/`` and
``homeassistant/``), ``fleet`` (reads everything, writes only
``vigil/+/devices/+/command``: a fleet tool cannot forge a vigil's status).

``Subscriber`` is ``mosquitto_sub -v`` as ``fleet``, read line by line
(``expect``: the first message matching a topic pattern and a predicate,
running an in-process vigil's loop meanwhile if given one);
``publish`` is one ``mosquitto_pub``. ``mqtt_sections`` is the ``[mqtt]``
of a vigil config that talks to this broker (also before it exists: the
UML test host's vigil is configured before the tap, and so the broker's
address, is there).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import free_port, password, require

USERS = ("vigil", "fleet")
ACL = """\
user vigil
topic readwrite vigil/#
topic readwrite homeassistant/#

user fleet
topic read vigil/#
topic read homeassistant/#
topic write vigil/+/devices/+/command
"""


def require_mosquitto() -> None:
    have = all(shutil.which(p) for p in ("mosquitto", "mosquitto_sub", "mosquitto_pub"))
    require(have, "Debian's mosquitto and mosquitto-clients are needed (make test-deps)")


@dataclass
class Message:
    topic: str
    payload: str
    retained: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Broker:
    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        tls: tuple[Path, Path] | None = None,
        port: int | None = None,
    ) -> None:
        require_mosquitto()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.tls = tls
        self.log_path = directory / "mosquitto.log"
        passwd = directory / "passwd"
        passwd.touch(0o600)
        for user in USERS:
            cmd = ["mosquitto_passwd", "-b", str(passwd), user, password(user)]
            subprocess.run(cmd, check=True, capture_output=True)
        (directory / "acl").write_text(ACL)
        lines = [
            f"listener {self.port} {host}",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {directory / 'acl'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type all",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
        ]
        if tls is not None:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 5.0) -> None:
        """Start (again, after ``kill``) and wait until it accepts connections."""
        since = len(self.log())
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while f"Opening ipv4 listen socket on port {self.port}" not in self.log()[since:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start:\n{self.log()[-2000:]}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """``kill -9``: clients see their connection reset or just silence."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.kill()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def client_args(self, user: str = "fleet") -> list[str]:
        args = ["-h", self.host, "-p", str(self.port), "-u", user, "-P", password(user)]
        if self.tls is not None:
            args += ["--cafile", str(self.tls[0])]
        return args

    def publish(self, topic: str, payload: str | dict[str, Any], *extra: str) -> None:
        """One message, as ``fleet`` (``extra``: more mosquitto_pub options, e.g. -r)."""
        text = payload if isinstance(payload, str) else json.dumps(payload)
        cmd = ["mosquitto_pub", *self.client_args(), "-q", "1", "-t", topic, "-m", text, *extra]
        subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    def subscribe(self, *topics: str) -> Subscriber:
        return Subscriber(self, topics)

    def mqtt_sections(self, **extra: Any) -> dict[str, dict[str, Any]]:
        """``[mqtt]`` for a vigil on this broker (``extra``: more keys; site "site-a")."""
        keys: dict[str, Any] = {"host": self.host, "port": self.port} | extra
        return mqtt_sections(self.dir, tls=self.tls, **keys)


def mqtt_sections(
    directory: Path, host: str, port: int, tls: tuple[Path, Path] | None = None, **extra: Any
) -> dict[str, dict[str, Any]]:
    """``[mqtt]`` of a vigil that logs in as ``vigil`` (password file in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    pw_file = directory / "vigil.password"
    pw_file.write_text(password("vigil") + "\n")
    pw_file.chmod(0o600)
    mqtt = {
        "enabled": True,
        "host": host,
        "port": port,
        "username": "vigil",
        "password_file": str(pw_file),
        "site": "site-a",
        "connect_timeout": 2,
    }
    if tls is not None:
        mqtt |= {"tls": True, "ca_file": str(tls[0])}
    return {"mqtt": mqtt | extra}


class Subscriber:
    """``mosquitto_sub`` as ``fleet`` on ``topics``, each line ``RETAIN TOPIC PAYLOAD``."""

    def __init__(self, broker: Broker, topics: tuple[str, ...]) -> None:
        cmd = ["mosquitto_sub", *broker.client_args(), "-F", "%r %t %p", "-q", "1"]
        for topic in topics:
            cmd += ["-t", topic]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._buf = b""
        self._pending: list[Message] = []  # read, not yet expected
        self.seen: list[Message] = []

    def _lines(self, timeout: float) -> list[Message]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if ready:
            data = os.read(fd, 65536)
            if not data:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"mosquitto_sub ended: {err}")
            self._buf += data
        out = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            retain, topic, payload = line.decode().split(" ", 2)
            out.append(Message(topic, payload, retain == "1"))
        self.seen += out
        return out

    def expect(
        self,
        topic: str,
        check: Callable[[Message], bool] = lambda _m: True,
        timeout: float = 10.0,
        pump: Callable[[], None] | None = None,
    ) -> Message:
        """The first message not yet expected whose topic matches the regex ``topic`` and
        that passes ``check`` (the others stay for later calls). ``pump``: run between
        short waits (the loop of a vigil in this process, which publishes only then)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self._pending):
                if re.fullmatch(topic, msg.topic) and check(msg):
                    del self._pending[i]
                    return msg
            if time.monotonic() > deadline:
                got = "\n".join(f"{m.topic} {m.payload[:200]}" for m in self.seen[-30:])
                raise AssertionError(f"no message on /{topic}/ within {timeout} s; got:\n{got}")
            wait = deadline - time.monotonic()
            if pump is not None:
                pump()
                wait = min(wait, 0.005)
            self._pending += self._lines(wait)

    def drain(self, seconds: float) -> list[Message]:
        """What was not yet expected, and everything that arrives within ``seconds``."""
        out, self._pending = self._pending, []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            out += self._lines(left)
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
