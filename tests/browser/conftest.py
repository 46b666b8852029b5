"""Real-browser fixtures: Debian's chromium driven by Playwright against a real vigil.

Needs the Debian package ``chromium`` and the pip package ``playwright`` (its
Python API only: we never run ``playwright install``, the browser is
/usr/bin/chromium, or $VIGIL_CHROMIUM). Without them these tests skip (and
fail under CI=true, like every ``require``).

Run: ``python -m pytest tests/browser`` (about a minute). The device tests in
test_devices.py run against a vigil with real kernel SCTP inside the UML test
host (tests/uml/testhost.py), reached over a tap network.

``panel(user)`` opens the control panel in a fresh browser context (its own
cookie jar and connections: one person) that logs in with HTTP Basic as
``user`` and waits until the panel shows "connected".

Over HTTPS: every ``vigil`` here serves one certificate made for the
session (``browser_cert``, openssl, names localhost and 127.0.0.1), and the
session's chromium trusts exactly that one (browser_support.trusting).
test_devices.py launches a chromium of its own that trusts the certificate
the UML guest's vigil made for itself (``playwright`` is shared).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.browser_support import CHROMIUM, CONNECTED, chromium
from tests.support import CHATTY, USERS, Vigil, make_certificate, password, require


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """Playwright's sync API, once per session (it cannot be started twice at once)."""
    require(
        shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM),
        f"chromium not found at {CHROMIUM} (apt install chromium)",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "the playwright Python package is not installed (pip install playwright)")
        raise
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The certificate and key every ``vigil`` of the browser tests serves."""
    directory = tmp_path_factory.mktemp("browser-tls")
    return make_certificate(directory, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"], "browser")


@pytest.fixture(scope="session")
def browser(playwright: Any, browser_cert: tuple[Path, Path]) -> Iterator[Any]:
    """One headless chromium in English (en-US) for the whole session, trusting ``browser_cert``."""
    with chromium(playwright, browser_cert[0]) as b:
        yield b


@pytest.fixture(scope="session")
def zh_browser(playwright: Any, browser_cert: tuple[Path, Path]) -> Iterator[Any]:
    """A headless chromium in Simplified Chinese (--lang=zh-CN), trusting ``browser_cert``."""
    with chromium(playwright, browser_cert[0], lang="zh-CN") as b:
        yield b


@pytest.fixture
def vigil(start_vigil: Callable[..., Vigil], browser_cert: tuple[Path, Path]) -> Vigil:
    """A vigil with the default test config, serving ``browser_cert`` over HTTPS
    (chat not rationed: tests talk faster than people)."""
    cert, key = browser_cert
    return start_vigil(sections={"tls": {"cert": str(cert), "key": str(key)}, **CHATTY})


@pytest.fixture
def contexts(browser: Any) -> Iterator[Callable[..., Any]]:
    """``contexts(user, pw=None, **kw)`` → a browser context logged in as ``user``."""
    yield from logged_in(browser)


@pytest.fixture
def zh_contexts(zh_browser: Any) -> Iterator[Callable[..., Any]]:
    """``contexts`` of the browser in Simplified Chinese."""
    yield from logged_in(zh_browser)


def logged_in(browser: Any) -> Iterator[Callable[..., Any]]:
    """``new(user, pw=None, **kw)`` → a context of ``browser`` logged in as ``user``; all are
    closed afterwards."""
    opened: list[Any] = []

    def new(user: str, pw: str | None = None, **kw: Any) -> Any:
        creds = {"username": user, "password": pw if pw is not None else password(user)}
        ctx = browser.new_context(http_credentials=creds, **kw)
        ctx.set_default_timeout(15000)
        opened.append(ctx)
        return ctx

    yield new
    for ctx in opened:
        with contextlib.suppress(Exception):  # already closed by the test
            ctx.close()


class PageErrors:
    """Uncaught page errors and dialogs (alert() from injected markup) of one page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)


@pytest.fixture
def panel(vigil: Vigil, contexts: Callable[..., Any]) -> Callable[..., Any]:
    """``panel(user, **context_kw)`` → a Page showing the connected panel of ``vigil``."""

    def open_panel(user: str, **kw: Any) -> Any:
        assert user in USERS
        page = contexts(user, **kw).new_page()
        page.vigil_errors = PageErrors(page)
        page.goto(vigil.https + "/")
        page.wait_for_selector(CONNECTED)
        page.wait_for_selector("#me-user", state="visible")
        return page

    return open_panel
