"""HTTP on the wire, for tests and bench/: request bytes, a response reader, SSE parsing.

Used over real sockets (end-to-end tests against a vigil process) and over a
socketpair driven in-process (``tests/testclient.py``): ``Reader`` calls
``pump`` before each read when one is given, so the in-process server gets
to run its loop.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from support import basic

AUTH = basic("alice")


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    method: str, target: str, headers: dict[str, str | None] | None = None, body: bytes = b""
) -> bytes:
    """The bytes of one request (Host and alice's credentials unless given; None drops one)."""
    hdrs = {"Host": "vigil.test", "Authorization": AUTH, **(headers or {})}
    if body and "Content-Length" not in hdrs:
        hdrs["Content-Length"] = str(len(body))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in hdrs.items() if v is not None
    )
    return head.encode("latin-1") + b"\r\n" + body


class Reader:
    """Reads responses one after another from one socket."""

    def __init__(self, sock: socket.socket, pump: Callable[[], bool] | None = None) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False
        self._pump = pump

    def more(self) -> bool:
        """Read more bytes; False at EOF."""
        try:
            data = self._recv()
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _recv(self) -> bytes:
        if self._pump is None:
            return self.sock.recv(65536)
        for _ in range(1000):
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                if not self._pump():
                    raise TimeoutError("the in-process server has nothing more to do") from None
        raise TimeoutError("no answer after 1000 passes")

    def response(self, head_only: bool = False) -> Resp:
        while b"\r\n\r\n" not in self.buf:
            if not self.more():
                raise AssertionError(f"connection closed before a response: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            return Resp(status, headers, b"")  # a stream: read it with chunks()
        size = 0 if head_only or status == 304 else int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            if not self.more():
                raise AssertionError("connection closed inside a body")
        body, self.buf = self.buf[:size], self.buf[size:]
        return Resp(status, headers, body)

    def chunk(self) -> bytes:
        """The next piece of a chunked body (b"" for the last)."""
        while b"\r\n" not in self.buf:
            if not self.more():
                raise AssertionError("connection closed inside a chunked body")
        size_line, _, rest = self.buf.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            if not self.more():
                raise AssertionError("connection closed inside a chunk")
            rest = self.buf.partition(b"\r\n")[2]
        self.buf = rest[size + 2 :]
        return rest[:size]

    def closed(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection (within ``timeout``), sending nothing more."""
        if self._pump is None:
            self.sock.settimeout(timeout)
        try:
            while self.more():
                pass
        except TimeoutError:
            return False
        return self.eof


def sse_messages(text: str) -> list[dict[str, str]]:
    """Server-Sent Events messages in ``text``: each a dict of its fields (comments dropped)."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            out.append(fields)
    return out
