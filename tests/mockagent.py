"""The GPIO agent on gpiozero's mock pins, with its pins readable and drivable from outside.

    GPIOZERO_PIN_FACTORY=mock python -m tests.mockagent --mock-control SOCKET \\
        --name gpio-1 --gpio CONFIG [any other option of python -m server.agent]

Tests only (production has no such option): it serves gpiozero's mock pins
(PWM-capable ones, so ``pwm`` outputs work) on unix socket SOCKET
(``serve_mock_pins``), then runs the real agent, ``server.agent.run.main``,
with the other arguments. Through the socket a
test in another process (``tests.mockpins.MockPins``) reads the agent's
output pins and drives its input pins, as a person with a multimeter and a
finger would.
"""

from __future__ import annotations

import argparse
import logging
import os
import socketserver
import sys
import threading
from pathlib import Path

from gpiozero import Device, GPIOZeroError
from gpiozero.pins.mock import MockFactory, MockPWMPin

from server.agent import run

log = logging.getLogger("agent")


def serve_mock_pins(path: Path) -> socketserver.UnixStreamServer:
    """Serve gpiozero's mock pins on unix socket ``path``, in a thread.

    Only with gpiozero's ``MockFactory`` as the pin factory (ValueError
    otherwise), so a real pin can never be driven this way. One request a
    line: ``PIN`` answers the pin's state, ``PIN high`` or ``PIN low`` first
    drives an input (a button pressed to ground is ``low``); answers are
    ``0``, ``1``, a PWM pin's duty cycle (``0.4``) or ``error: …``. Driving
    a pin runs gpiozero's callbacks in this thread, as a real pin factory
    runs them in its own.
    """
    factory = Device.pin_factory
    if not isinstance(factory, MockFactory):
        raise ValueError("--mock-control needs GPIOZERO_PIN_FACTORY=mock (it is for tests)")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(answer(line.decode(errors="replace").split()).encode() + b"\n")

    def answer(words: list[str]) -> str:
        if not words:
            return "error: no pin"
        try:
            pin = factory.pin(int(words[0]) if words[0].isdigit() else words[0])
        except GPIOZeroError as e:
            return f"error: {e}"
        if words[1:] and pin.function != "input":
            return f"error: {pin} is an output"
        if words[1:] == ["high"]:
            pin.drive_high()
        elif words[1:] == ["low"]:
            pin.drive_low()
        elif words[1:]:
            return f"error: {' '.join(words[1:])!r} is not high or low"
        return f"{float(pin.state):g}"

    if path.is_socket():  # left by an earlier run
        path.unlink()
    try:
        server = socketserver.UnixStreamServer(str(path), Handler)
    except OSError as e:
        raise ValueError(f"--mock-control {path}: {e.strerror}") from None
    threading.Thread(target=server.serve_forever, name="mock-pins", daemon=True).start()
    log.warning("serving gpiozero's MOCK pins on %s (tests only)", path)
    return server


def main(argv: list[str] | None = None) -> int:
    """Serve the mock pins of ``--mock-control SOCKET``, then run the agent with the rest."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m tests.mockagent", add_help=False)
    p.add_argument("--mock-control", type=Path, metavar="SOCKET", required=True)
    p.add_argument("--gpio", type=Path)
    p.add_argument("--name", default="?")
    ours, _ = p.parse_known_args(argv)
    rest: list[str] = []  # the agent's arguments: all but --mock-control SOCKET
    drop_next = False
    for arg in argv:
        if drop_next:
            drop_next = False
        elif arg == "--mock-control":
            drop_next = True
        elif not arg.startswith("--mock-control="):
            rest.append(arg)
    try:
        if ours.gpio is None:
            raise ValueError("--mock-control needs --gpio CONFIG")
        if os.environ.get("GPIOZERO_PIN_FACTORY") == "mock":
            # gpiozero's MockFactory, which the agent's pins use; PWM-capable, as a Pi's pins
            Device.pin_factory = MockFactory(pin_class=MockPWMPin)
        serve_mock_pins(ours.mock_control)
    except ValueError as e:
        print(f"agent {ours.name}: {e}", file=sys.stderr)
        return 2
    return run.main(rest)


if __name__ == "__main__":
    sys.exit(main())
