"""vigil under systemd: the notify protocol seen from systemd's side, and journald's log lines.

The test plays systemd: it binds the datagram socket ``$NOTIFY_SOCKET``
names, starts the real server with it, and reads what arrives.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.base.notify import address, watchdog_interval
from tests.support import Vigil, write_config
from tests.wire import Remote


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/1", b"\0/org/freedesktop/systemd1/notify/1"),
    ],
)
def test_notify_socket_address(value: str, want: str | bytes) -> None:
    assert address(value) == want


@pytest.mark.parametrize(
    ("environ", "want"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # someone else's
    ],
)
def test_watchdog_interval_is_half_the_timeout_and_only_ours(
    environ: dict[str, str], want: float | None
) -> None:
    assert watchdog_interval(environ, 4242) == want


class FakeSystemd:
    """The datagram socket of $NOTIFY_SOCKET; records (monotonic time, message) as they come.

    On READY=1, it connects to vigil's HTTP port at once and records whether it could.
    """

    def __init__(self, name: str | bytes, port: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(name)
        self.sock.settimeout(0.1)
        self.port = port
        self.messages: list[tuple[float, str]] = []
        self.connected_at_ready: list[bool] = []
        self._done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._done:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            text = data.decode()
            if "READY=1" in text.split("\n"):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    self.connected_at_ready.append(True)
                except OSError:
                    self.connected_at_ready.append(False)
            self.messages.append((time.monotonic(), text))

    def wait_for(self, field: str, since: int = 0, timeout: float = 10.0) -> int:
        """The index of the first message from ``since`` with line ``field``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, text) in enumerate(self.messages[since:], since):
                if field in text.split("\n"):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {field} in {self.messages[since:]}")

    def close(self) -> None:
        self._done = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, Path, str]]:
    config = write_config(tmp_path)
    port = tomllib.loads(config.read_text())["http"]["port"]
    path = tmp_path / "notify"
    fake = FakeSystemd(str(path), port)
    yield fake, config, str(path)
    fake.close()


def test_ready_watchdog_reload_and_stop(systemd: tuple[FakeSystemd, Path, str]) -> None:
    fake, config, path = systemd
    vigil = Vigil(config, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        ready = fake.wait_for("READY=1")
        assert fake.connected_at_ready == [True]  # it listens when it says so
        assert "STATUS=serving on port" in fake.messages[ready][1]
        assert "READY=1" not in "".join(text for _, text in fake.messages[:ready])

        # WATCHDOG=1 every 0.2 s (half of WATCHDOG_USEC)
        start = len(fake.messages)
        time.sleep(2.0)
        pings = [t for t, text in fake.messages[start:] if text == "WATCHDOG=1"]
        assert 6 <= len(pings) <= 14, pings

        # SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again
        mark = len(fake.messages)
        vigil.signal(signal.SIGHUP)
        reloading = fake.wait_for("RELOADING=1", mark)
        fields = dict(line.split("=", 1) for line in fake.messages[reloading][1].split("\n"))
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now_usec - int(fields["MONOTONIC_USEC"]) < 5_000_000
        fake.wait_for("READY=1", reloading + 1)
        vigil.wait_for_log("reloaded")
        with Remote.of(vigil) as client:
            assert client.me().status == 200  # still serving

        # SIGTERM: STOPPING=1, then a clean exit
        mark = len(fake.messages)
        assert vigil.stop() == 0
        fake.wait_for("STOPPING=1", mark, timeout=1.0)
    finally:
        vigil.stop()


def test_abstract_socket_and_a_watchdog_that_is_not_ours(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = tomllib.loads(config.read_text())["http"]["port"]
    name = f"vigil-test-{secrets.token_hex(6)}"
    fake = FakeSystemd(b"\0" + name.encode(), port)
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    vigil = Vigil(config, env=env)
    try:
        fake.wait_for("READY=1")
        time.sleep(0.5)
        assert not [text for _, text in fake.messages if "WATCHDOG=1" in text]
    finally:
        vigil.stop()
        fake.close()


def test_a_notify_socket_that_is_gone_costs_one_warning(tmp_path: Path) -> None:
    vigil = Vigil(write_config(tmp_path), env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    try:
        vigil.signal(signal.SIGHUP)  # RELOADING=1 and READY=1 fail too
        vigil.wait_for_log("reloaded")
        with Remote.of(vigil) as client:
            assert client.me().status == 200
        assert vigil.log().count("systemd notify (READY=1) failed: No such file") == 1
        assert vigil.log().count("systemd notify") == 1
    finally:
        vigil.stop()


def test_log_lines_under_journald_carry_a_priority_and_no_time(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    log = tmp_path / "vigil.log"  # Vigil sends stderr here: this is "journald's stream"
    log.touch()
    st = os.stat(log)
    vigil = Vigil(config, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        vigil.signal(signal.SIGHUP)
        line = vigil.wait_for_log("reloaded")
        assert line.startswith("<6>INFO server.app: reloaded"), line
        assert not re.search(r"\d\d:\d\d:\d\d", line)
        assert vigil.wait_for_log("listening on http").startswith("<6>")
    finally:
        vigil.stop()


def test_log_lines_elsewhere_keep_their_time(tmp_path: Path) -> None:
    other = os.stat(tmp_path)  # a JOURNAL_STREAM inherited from elsewhere: not our stderr
    vigil = Vigil(write_config(tmp_path), env={"JOURNAL_STREAM": f"{other.st_dev}:{other.st_ino}"})
    try:
        line = vigil.wait_for_log("listening on http")
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO server.app: listening", line)
    finally:
        vigil.stop()
