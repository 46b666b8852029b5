"""Helpers for the browser tests: requests beside the browser (tests/wire.py), SSE holders.

The browser reaches vigil over HTTPS and trusts exactly one certificate:
``trusting(cert)`` is the flag that pins its public key (Chromium's
``--ignore-certificate-errors-spki-list``; any other certificate still
fails). Requests beside the browser (``call``, ``EventStream``) go over
HTTPS too, trusting the same certificate, so Origin and Host agree with
the browser's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.support import Vigil, spki_sha256
from tests.wire import Remote

CONNECTED = "#conn[data-state=connected]"  # the panel's live event stream is up

# Debian's chromium, headless, with the flags this closed network needs (docs/design.md, "Testing").
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


def trusting(cert: Path) -> str:
    """The chromium flag that trusts ``cert`` (by its public key) and no other certificate."""
    return f"--ignore-certificate-errors-spki-list={spki_sha256(cert)}"


def speaking(lang: str) -> list[str]:
    """The chromium flags for a browser whose language is ``lang`` (navigator.languages and
    Accept-Language; on Linux headless chromium takes the second from --accept-lang)."""
    return [f"--lang={lang}", f"--accept-lang={lang}"]


@contextlib.contextmanager
def chromium(playwright: Any, cert: Path, lang: str = "en-US") -> Iterator[Any]:
    """A headless chromium (Playwright's ``playwright``) in ``lang`` that trusts ``cert`` and
    no other."""
    # Playwright gives the browser a fresh temporary profile (--user-data-dir) itself.
    args = [*CHROMIUM_ARGS, *speaking(lang), trusting(cert)]
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
        yield b
    finally:
        b.close()


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
    """One HTTPS request as ``user`` (no Origin: like curl); (status, headers, JSON or text).

    ``vigil``: a ``support.Vigil``, or anything with ``host``, ``tls_port`` and ``ssl_context()``.
    """
    resp = Remote.of(vigil, keep_alive=False, secure=True).request(
        method,
        path,
        user,
        headers={"Accept": "application/json", **(headers or {})},
        body=raw or b"",
        json_body=body,
    )
    text = resp.body.decode("utf-8", "replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return resp.status, resp.headers, parsed


class EventStream:
    """A held-open GET /api/events as ``user`` (HTTPS): keeps that user online."""

    def __init__(self, vigil: Vigil, user: str) -> None:
        self.user = user
        self.remote = Remote.of(vigil, secure=True)
        head = self.remote.get("/api/events", user, headers={"Accept": "text/event-stream"})
        if head.status != 200:
            raise AssertionError(f"{user}: /api/events answered {head.status}")

    def close(self) -> None:
        self.remote.close()


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


class StubEvents:
    """A page's event stream, played by the test (page.route): devices where there is no SCTP.

    The panel takes its devices from the stream's first ``reset`` and keeps
    them current from ``device`` and ``command`` events. Each connection of
    the page's EventSource gets the events queued since the last one (the
    first: a ``reset`` with ``devices`` and ``user`` online), numbered on
    from there, and ends with ``retry: 200``: the browser comes back 0.2 s
    later with Last-Event-ID, as after a dropped connection, for what
    ``send`` queued meanwhile. Everything else (/api/me: the role, the
    commands) goes to the real vigil unless the test routes it too.
    """

    def __init__(self, page: Any, user: str, devices: list[dict[str, Any]]) -> None:
        online = [{"user": user, "since": "2026-11-21T06:12:03Z", "addr": "127.0.0.1"}]
        self.queue: list[tuple[str, Any]] = [("reset", {"online": online, "devices": devices})]
        self.last_id = 0
        page.route(re.compile(r"/api/events(\?.*)?$"), self._answer)

    def send(self, kind: str, data: Any) -> None:
        """An event for the page's next connection (within 0.2 s)."""
        self.queue.append((kind, data))

    def _answer(self, route: Any) -> None:
        events, self.queue = self.queue, []
        out = ["retry: 200\n\n"]
        for kind, data in events:
            self.last_id += 1
            out.append(f"id: {self.last_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n")
        route.fulfill(status=200, content_type="text/event-stream", body="".join(out))


def open_stubbed(
    vigil: Vigil, contexts: Callable[..., Any], user: str, devices: list[dict[str, Any]], **kw: Any
) -> tuple[Any, StubEvents]:
    """A panel of ``vigil`` as ``user`` whose event stream is ``StubEvents`` with ``devices``."""
    page = contexts(user, **kw).new_page()
    stub = StubEvents(page, user, devices)
    page.goto(vigil.https + "/")
    page.wait_for_selector("#me-role:not(:empty)")
    page.wait_for_selector("#device-list .device")
    return page, stub


# Sums the layout shifts that had no recent input, as CLS does (web.dev/cls), from the start.
CLS_OBSERVER = """
window.__cls = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) if (!e.hadRecentInput) window.__cls += e.value;
}).observe({ type: "layout-shift", buffered: true });
"""

# Browser context options of the screens a panel must load well on.
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "tablet": {"viewport": {"width": 900, "height": 1000}},
    "phone": {
        "viewport": {"width": 360, "height": 740},
        "is_mobile": True,
        "has_touch": True,
        "color_scheme": "dark",
    },
}


class LoadWatch:
    """Console errors and the cumulative layout shift of a page, from before it loads."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(CLS_OBSERVER)
        page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.console.append(str(e)))

    def check(self, what: str) -> None:
        """Once everything has filled in: no console error, CLS under 0.1 (Lighthouse's good)."""
        self.page.wait_for_load_state("networkidle")
        self.page.wait_for_timeout(1500)  # anything still to fill in
        assert self.console == [], self.console
        cls = self.page.evaluate("window.__cls")
        assert cls < 0.1, f"cumulative layout shift {cls:.3f} on {what}"


# axe-core's rules (the engine of Lighthouse's accessibility audits): WCAG 2.1 A and AA and
# axe's best practices. None failing is at least Lighthouse's accessibility score of 1.0.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def accessibility_violations(page: Any) -> list[str]:
    """What axe-core finds wrong on the page as it is now: "rule: target, …" each."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
    results = Axe().run(page, options=options)
    return [
        f"{v['id']}: {', '.join(str(n['target']) for n in v['nodes'])}"
        for v in results.response["violations"]
    ]
