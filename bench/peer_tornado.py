"""Peer: tornado, the server Moonraker and OctoPrint serve their panels through.

Tornado as such a panel runs it: one process on asyncio's default event loop
(epoll), ``RequestHandler`` subclasses routed by ``web.Application``,
keep-alive on; tornado toggles TCP_NODELAY itself around the end of each
response. The handlers do the bare h11 loop's work (``bench/peer_h11.py``):
Basic auth is a dict lookup of the Authorization header (given with
``--authorization``; vigil too caches a verified header), anything else
gets 401; ``/index.html`` is read once into memory, ``/api/me`` is the same
small JSON body, pre-encoded; both carry Date, Content-Type and
Content-Length, the file the same ETag too (mtime and size, so tornado
does not hash each body into one); no Server header. Unknown paths get
404, other methods 405, with the same JSON bodies (405 on unknown paths
too, for methods tornado does not know). No access log.
``python -m bench.peer_tornado --port P --root DIR --authorization VALUE``;
stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from tornado import httputil, web

ME = json.dumps({"user": "bench", "role": "operator"}, separators=(",", ":")).encode()
JSON = "application/json"
GET_ONLY = (405, b'{"error":"GET only"}', ("Allow", "GET"))

Answer = tuple[str, bytes, str | None]  # Content-Type, body, ETag


class Handler(web.RequestHandler):
    """What every answer shares: no Server header, no computed ETag, JSON errors."""

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # as the bare h11 loop, which sends none

    def compute_etag(self) -> str | None:
        return None  # the file brings its own; tornado would hash every body for one

    def fail(self, status: int, body: bytes, *headers: tuple[str, str]) -> None:
        """Finish with ``status``, a JSON ``body`` and ``headers``."""
        self.set_status(status)
        self.set_header("Content-Type", JSON)
        for name, value in headers:
            self.set_header(name, value)
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors tornado answers itself (405 for a method it does not know) in JSON too."""
        if status_code == 405:
            self.fail(*GET_ONLY)
        else:
            reason = httputil.responses.get(status_code, "error").lower()
            self.fail(status_code, json.dumps({"error": reason}).encode())


class Page(Handler):
    """``GET`` of one path for a user whose Authorization header is known."""

    def initialize(self, users: dict[str, str], answer: Answer) -> None:
        self.users = users  # verified Authorization header -> user
        self.answer = answer

    def prepare(self) -> None:
        if self.request.method != "GET":
            self.fail(*GET_ONLY)
        elif self.request.headers.get("Authorization") not in self.users:
            challenge = ("WWW-Authenticate", 'Basic realm="bench"')
            self.fail(401, b'{"error":"login required"}', challenge)

    def get(self) -> None:
        content_type, body, etag = self.answer
        self.set_header("Content-Type", content_type)
        if etag is not None:
            self.set_header("ETag", etag)
        self.finish(body)


class NotFound(Handler):
    """Every path but the served ones, whatever the method."""

    def prepare(self) -> None:
        self.fail(404, b'{"error":"not found"}')


def make_app(index: Path, authorization: str) -> web.Application:
    """The application: ``/index.html`` and ``/api/me`` for the one accepted header."""
    users = {authorization: "bench"}
    st = index.stat()
    etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    pages: dict[str, Answer] = {
        "/index.html": ("text/html", index.read_bytes(), etag),
        "/api/me": (JSON, ME, None),
    }
    routes = [(path, Page, {"users": users, "answer": answer}) for path, answer in pages.items()]
    return web.Application(
        routes, default_handler_class=NotFound, log_function=lambda _handler: None
    )


async def serve(port: int, index: Path, authorization: str) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM."""
    make_app(index, authorization).listen(port, "127.0.0.1", backlog=128)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--authorization", required=True, help="the header value to accept")
    args = parser.parse_args()
    asyncio.run(serve(args.port, Path(args.root) / "index.html", args.authorization))


if __name__ == "__main__":
    main()
