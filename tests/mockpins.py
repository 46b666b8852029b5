"""The client of a GPIO agent's mock pins (``tests.mockagent --mock-control SOCKET``).

The agent runs with ``GPIOZERO_PIN_FACTORY=mock`` under ``python -m
tests.mockagent`` (``tests.mockagent.serve_mock_pins``); through this socket a test
in another process reads its output pins and drives its input pins, as a
person with a multimeter and a finger would.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path


class MockPins:
    """A connection to an agent's mock pins; waits up to ``timeout`` for the socket."""

    def __init__(self, path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                assert time.monotonic() < deadline, f"no mock pins on {path} within {timeout} s"
                time.sleep(0.05)
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile("rw")

    def ask(self, request: str) -> str:
        self._file.write(request + "\n")
        self._file.flush()
        return self._file.readline().strip()

    def state(self, pin: int | str) -> float:
        """The pin's level: 1 high, 0 low; a PWM pin's duty cycle (0.4: high 40 % of the time)."""
        return float(self.ask(str(pin)))

    def drive(self, pin: int | str, level: str) -> None:
        """Drive input ``pin`` ``"high"`` or ``"low"`` (a button to ground pressed: low)."""
        assert self.ask(f"{pin} {level}") == str(int(level == "high"))

    def close(self) -> None:
        self._file.close()
        self._sock.close()
