"""Fixtures for tests that need kernel SCTP (run them with tests/run_sctp_tests.sh).

Without SCTP these tests FAIL, loudly: a skipped SCTP suite looks green.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sctp.panel import Panel
from tests.sctp.sctpbench import Bench


def _sctp_problem() -> str | None:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_SEQPACKET, socket.IPPROTO_SCTP).close()
    except OSError as e:
        return (
            f"no SCTP in this kernel ({errno.errorcode.get(e.errno or 0, e.errno)}): run "
            "tests/run_sctp_tests.sh, which uses User-Mode Linux here (sudo modprobe sctp on a Pi)"
        )
    try:
        import sctp
    except ImportError:
        sctp = None
    if not hasattr(sctp, "sctpsocket_udp"):  # tests/sctp itself is importable as "sctp"
        return f"pysctp is not installed for {sys.executable}"
    return None


@pytest.fixture(autouse=True)
def _require_sctp() -> None:
    problem = _sctp_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture
def bench() -> Iterator[Bench]:
    b = Bench().start()
    yield b
    b.close()


@pytest.fixture
def panel(tmp_path: Path) -> Iterator[Panel]:
    """A vigil with the control channel on, closed after the test."""
    p = Panel(tmp_path)
    yield p
    p.close()
