"""Peer: the stdlib's ThreadingHTTPServer, HTTP/1.1 keep-alive, TCP_NODELAY.

Serves ``--root`` with ``SimpleHTTPRequestHandler`` (from disk, like vigil)
and ``GET /api/me`` as a tiny JSON document. No access log, no auth.
``python -m bench.peer_stdlib --port P --root DIR``; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import socket
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ME = json.dumps({"user": "bench", "role": "operator"}).encode()


class Handler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        if self.path != "/api/me":
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ME)))
        self.end_headers()
        self.wfile.write(ME)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # vigil is measured with its access log off too


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops SYNs when wrk connects 50 at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # wrk resets at the end
            super().handle_error(request, client_address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), functools.partial(Handler, directory=args.root))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
