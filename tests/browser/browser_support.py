"""Helpers for the browser tests: plain HTTP calls beside the browser, SSE holders."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable
from typing import Any

from support import Vigil, basic

# Debian's chromium, headless, with the flags this closed network needs (DESIGN.md).
CHROMIUM = os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def call(
    vigil: Vigil,
    method: str,
    path: str,
    user: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request as ``user`` (no Origin: like curl); (status, headers, JSON or text)."""
    conn = http.client.HTTPConnection(vigil.host, vigil.port, timeout=10)
    try:
        hdrs = {"Authorization": basic(user), "Accept": "application/json", **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        res = conn.getresponse()
        text = res.read().decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text)
        except ValueError:
            parsed = text
        return res.status, {k.lower(): v for k, v in res.getheaders()}, parsed
    finally:
        conn.close()


class EventStream:
    """A held-open GET /api/events as ``user``: keeps that user online."""

    def __init__(self, vigil: Vigil, user: str) -> None:
        self.user = user
        self.conn = http.client.HTTPConnection(vigil.host, vigil.port, timeout=10)
        self.conn.request(
            "GET",
            "/api/events",
            headers={"Authorization": basic(user), "Accept": "text/event-stream"},
        )
        self.res = self.conn.getresponse()
        if self.res.status != 200:
            raise AssertionError(f"{user}: /api/events answered {self.res.status}")

    def close(self) -> None:
        self.res.close()
        self.conn.close()


def eventually(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def sse_body(events: list[tuple[str, Any]], retry_ms: int = 600000) -> str:
    """A finished text/event-stream body (for page.route stubs)."""
    out = [f"retry: {retry_ms}\n\n"]
    for i, (kind, data) in enumerate(events, 1):
        out.append(f"id: {i}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")
    return "".join(out)
