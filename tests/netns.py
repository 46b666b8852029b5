"""A pulled cable, for real: a network namespace joined to the host by a veth pair.

``Namespace`` (a context manager) creates namespace ``vigil-e2e`` with one
veth pair, addresses only in 10.213.0.0/30 (host side ``HOST`` 10.213.0.1,
namespace side ``PEER`` 10.213.0.2), runs client processes inside it with
``ip netns exec``, and pulls the cable with ``ip link set DEV down`` on the
namespace side or with an nftables table that drops everything in the
namespace (no FIN, no RST ever reaches the server). ``loss(percent)`` drops
that share of the namespace's packets at random instead. Everything is torn
down on exit, even after a failure, and a namespace left behind by a killed
run is removed first. A lock file keeps two runs (tests, bench) from using
the one subnet at once.

``python -m tests.netns client URL AUTH {idle,sse} [CAFILE]`` is the client
run in the namespace (stdlib only): it makes one authenticated request on a
keep-alive connection, prints ``ready`` and then either sits idle or reads
the event stream, printing ``event ID TYPE`` per event. An ``https://`` URL
is verified against ``CAFILE`` (the test vigil's certificate), name included.
``Namespace.run`` runs one command there to its end (curl).

``serving_sections`` is the config of a vigil on the host's end (``HOST``,
plain and HTTPS ports of its own) that lets the namespace in.

``EventWatcher`` reads another user's event stream (loopback) in a thread
and timestamps every event, to see ``presence`` leaves and measure when
they arrived; events are parsed by tests/wire.py's one SSE parser. The
bench imports this file too (stdlib only, on purpose; so are wire.py and
support.py at import).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support import ROOT, free_port
from tests.wire import Event, sse_events

NAME = "vigil-e2e"
HOST_DEV = "vgl-h"
PEER_DEV = "vgl-n"
HOST = "10.213.0.1"
PEER = "10.213.0.2"
SUBNET = "10.213.0.0/30"
LOCK = "/run/vigil-netns.lock"
LOCK_WAIT = 900.0  # s to wait for another run (tests, bench) to give the subnet back
PULL_TABLE = "vigil_pull"
LOSS_TABLE = "vigil_loss"


def serving_sections() -> dict[str, dict[str, Any]]:
    """Config sections for a vigil on ``HOST`` (free ports) that the namespace may reach."""
    return {
        "http": {"host": HOST, "port": free_port(HOST)},
        "tls": {"port": free_port(HOST)},
        "auth": {"allow": ["127.0.0.0/8", SUBNET]},
    }


def available() -> tuple[bool, str]:
    """(usable, why not): root, iproute2 and nftables present."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed (apt-get install iproute2 nftables)"
    return True, ""


def _run(*argv: str, check: bool = True, stdin: str | None = None) -> None:
    out = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip() or out.returncode}")


class Namespace:
    """The namespace, its veth pair and the client processes started in it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self._lock: int | None = None

    def __enter__(self) -> Namespace:
        self._lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self._lock)
                    self._lock = None
                    raise RuntimeError(f"{LOCK}: {SUBNET} in use by another run") from None
                time.sleep(0.2)
        try:
            self._teardown()
            _run("ip", "netns", "add", NAME)
            _run(
                "ip",
                "link",
                "add",
                HOST_DEV,
                "type",
                "veth",
                "peer",
                "name",
                PEER_DEV,
                "netns",
                NAME,
            )
            _run("ip", "addr", "add", f"{HOST}/30", "dev", HOST_DEV)
            _run("ip", "link", "set", HOST_DEV, "up")
            _run("ip", "-n", NAME, "addr", "add", f"{PEER}/30", "dev", PEER_DEV)
            _run("ip", "-n", NAME, "link", "set", PEER_DEV, "up")
            _run("ip", "-n", NAME, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
        self.procs.clear()
        self._teardown()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    @staticmethod
    def _teardown() -> None:
        # Deleting the namespace destroys its veth end, and with it the pair.
        _run("ip", "netns", "del", NAME, check=False)
        _run("ip", "link", "del", HOST_DEV, check=False)

    # -- processes in the namespace ------------------------------------------
    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace; it is killed on exit."""
        proc = subprocess.Popen(["ip", "netns", "exec", NAME, *argv], text=True, **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace to its end; its output and status."""
        return subprocess.run(
            ["ip", "netns", "exec", NAME, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def client(
        self, url: str, auth: str, mode: str, timeout: float = 5.0, cafile: Path | None = None
    ) -> Client:
        """A ``client`` (see the module doc) connected and authenticated, ready."""
        ca = [str(cafile)] if cafile is not None else []
        proc = self.popen(
            [sys.executable, "-m", "tests.netns", "client", url, auth, mode, *ca],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        client = Client(proc)
        line = client.line(timeout)
        if line is None or not line.startswith("ready"):
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"namespace client not ready: {line!r} {err.strip()[-300:]}")
        return client

    # -- the cable ---------------------------------------------------------------
    def pull(self, how: str = "link") -> float:
        """Pull the cable (``link``: namespace side down; ``nft``: drop all); monotonic time."""
        started = time.monotonic()
        if how == "link":
            _run("ip", "-n", NAME, "link", "set", PEER_DEV, "down")
        elif how == "nft":
            rules = (
                f"table inet {PULL_TABLE} {{\n"
                " chain in { type filter hook input priority -10; policy drop; }\n"
                " chain out { type filter hook output priority -10; policy drop; }\n}\n"
            )
            _run("ip", "netns", "exec", NAME, "nft", "-f", "-", stdin=rules)
        else:
            raise ValueError(f"unknown way to pull the cable: {how!r}")
        return started

    def plug(self) -> None:
        """Undo ``pull`` (either way)."""
        _run("ip", "netns", "exec", NAME, "nft", "delete", "table", "inet", PULL_TABLE, check=False)
        _run("ip", "-n", NAME, "link", "set", PEER_DEV, "up")

    def loss(self, percent: int) -> None:
        """Drop ``percent`` % of the namespace's packets, each direction, at random."""
        if 100 % percent:
            raise ValueError("percent must divide 100")
        mod = 100 // percent
        rules = (
            f"table inet {LOSS_TABLE} {{\n"
            f" chain in {{ type filter hook input priority 0; numgen random mod {mod} 0 "
            "counter drop; }\n"
            f" chain out {{ type filter hook output priority 0; numgen random mod {mod} 0 "
            "counter drop; }\n}\n"
        )
        _run("ip", "netns", "exec", NAME, "nft", "-f", "-", stdin=rules)

    def loss_counters(self) -> str:
        out = subprocess.run(
            ["ip", "netns", "exec", NAME, "nft", "list", "table", "inet", LOSS_TABLE],
            capture_output=True,
            text=True,
            check=False,
        )
        return " ".join(line.strip() for line in out.stdout.splitlines() if "counter" in line)


class Client:
    """A client process in the namespace; its stdout lines arrive through a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(2)


# -- reading an event stream ------------------------------------------------------


def connect(
    url: str, timeout: float, cafile: str | Path | None = None
) -> http.client.HTTPConnection:
    """An HTTP(S) connection to ``url``; HTTPS trusts ``cafile`` (the name is checked)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def open_stream(
    url: str,
    auth: str,
    last_id: str | None = None,
    timeout: float = 5.0,
    cafile: str | Path | None = None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """GET /api/events on ``url`` (``http(s)://host:port``); raises if not 200."""
    conn = connect(url, timeout, cafile)
    headers = {"Authorization": auth, "Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    conn.request("GET", "/api/events", headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"GET /api/events: {resp.status} {resp.read()[:200]!r}")
    return conn, resp


class EventWatcher:
    """Another user's event stream, read in a thread; every event timestamped."""

    def __init__(
        self, url: str, auth: str, last_id: str | None = None, cafile: str | Path | None = None
    ) -> None:
        self.conn, self.resp = open_stream(url, auth, last_id, cafile=cafile)
        assert self.conn.sock is not None
        self.conn.sock.settimeout(None)  # heartbeats may be rare; close() ends the thread
        self.events: queue.Queue[Event] = queue.Queue()
        self.seen: list[Event] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _lines(self) -> Iterator[str]:
        while True:
            raw = self.resp.readline()
            if not raw:
                return
            yield raw.decode("utf-8").rstrip("\r\n")

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            for event in sse_events(self._lines()):
                self.events.put(event)

    def wait_for(self, match: Callable[[Event], bool], timeout: float) -> Event | None:
        """The next event (after those already consumed) that ``match``es, or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                return None
            self.seen.append(event)
            if match(event):
                return event

    def drain(self) -> list[Event]:
        """Every event received so far and not yet consumed."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                self.seen += out
                return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.conn.sock is not None
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(2)
        self.conn.close()


def presence(kind: str, user: str, reason: str | None = None) -> Callable[[Event], bool]:
    """A matcher for ``EventWatcher.wait_for``: a presence ``kind`` of ``user``."""

    def match(event: Event) -> bool:
        data = event.data
        return (
            event.type == "presence"
            and isinstance(data, dict)
            and data.get("kind") == kind
            and data.get("user") == user
            and (reason is None or data.get("reason") == reason)
        )

    return match


# -- the client run inside the namespace ---------------------------------------------


def _client(url: str, auth: str, mode: str, cafile: str | None = None) -> int:
    conn = connect(url, 10, cafile)
    path = "/api/events" if mode == "sse" else "/api/me"
    conn.request("GET", path, headers={"Authorization": auth})
    resp = conn.getresponse()
    if resp.status != 200:
        print(f"status {resp.status}", flush=True)
        return 1
    if mode == "idle":
        resp.read()
        print("ready", flush=True)
        assert conn.sock is not None
        conn.sock.settimeout(None)
        conn.sock.recv(1)  # sits here until the server closes (or forever)
        return 0
    print("ready", flush=True)
    assert conn.sock is not None
    conn.sock.settimeout(None)

    def lines() -> Iterator[str]:
        while raw := resp.readline():
            yield raw.decode("utf-8").rstrip("\r\n")

    for event in sse_events(lines()):
        if event.type != "comment":
            print(f"event {event.id} {event.type}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (5, 6) and sys.argv[1] == "client" and sys.argv[4] in ("idle", "sse"):
        sys.exit(_client(*sys.argv[2:]))
    print("usage: netns.py client URL AUTH {idle,sse} [CAFILE]", file=sys.stderr)
    sys.exit(2)
