"""Peer: aiohttp, serving ``--root``/index.html from memory and ``GET /api/me`` as JSON.

No access log, no auth; aiohttp sets TCP_NODELAY itself.
``python -m bench.peer_aiohttp --port P --root DIR``; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web

ME = {"user": "bench", "role": "operator"}


def make_app(index: bytes) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html")

    async def me(request: web.Request) -> web.Response:
        return web.json_response(ME)

    app = web.Application()
    app.router.add_get("/index.html", page)
    app.router.add_get("/api/me", me)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    index = (Path(args.root) / "index.html").read_bytes()
    web.run_app(make_app(index), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
