"""Sessions in a real Chromium: logging in with password and code, logging out from the
panel, and what the browser does next.

The person at the browser's login prompt is played through the DevTools protocol: with
``Fetch.enable(handleAuthRequests)`` Chromium hands each login prompt it would show to
``Prompts`` instead (``Fetch.authRequired``), which answers as a person would (types the
credentials, or presses Cancel) and counts the prompts. Playwright's own
``http_credentials`` would answer every prompt at once with the same password, which no
person does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from server.config import Account
from server.people import users
from server.people.auth import hash_password
from tests.browser.browser_support import CONNECTED
from tests.support import CHATTY, Vigil, password, write_config

IDLE = 10  # [auth] session_idle of the expiry test, its least

SECRET = pyotp.random_base32()
TINA_PW = "tina's long password"


class Prompts:
    """The browser's login prompts of one page, answered by ``answer`` (a (user, password)
    to type, or None: Cancel)."""

    def __init__(self, page: Any) -> None:
        self.answer: Callable[[], tuple[str, str] | None] = lambda: None
        self.urls: list[str] = []
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Fetch.requestPaused", self._paused)
        self.cdp.on("Fetch.authRequired", self._prompt)
        patterns = [{"urlPattern": "*"}]
        self.cdp.send("Fetch.enable", {"handleAuthRequests": True, "patterns": patterns})

    def _paused(self, event: dict[str, Any]) -> None:
        self.cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})

    def _prompt(self, event: dict[str, Any]) -> None:
        self.urls.append(event["request"]["url"])
        typed = self.answer()
        response: dict[str, str] = {"response": "CancelAuth"}
        if typed is not None:
            response = {"response": "ProvideCredentials", "username": typed[0]}
            response["password"] = typed[1]
        self.cdp.send(
            "Fetch.continueWithAuth",
            {"requestId": event["requestId"], "authChallengeResponse": response},
        )


@pytest.fixture
def tina_vigil(browser_cert: tuple[Path, Path], tmp_path: Path) -> Iterator[Vigil]:
    """The browser tests' vigil, and tina, an operator with a second factor."""
    yield from vigil_with_tina(browser_cert, tmp_path, {})


def vigil_with_tina(
    browser_cert: tuple[Path, Path], directory: Path, auth: dict[str, Any]
) -> Iterator[Vigil]:
    cert, key = browser_cert
    users.save(directory, [Account("tina", hash_password(TINA_PW), "operator", SECRET)])
    sections = {"tls": {"cert": str(cert), "key": str(key)}, "auth": auth, **CHATTY}
    vigil = Vigil(write_config(directory, sections))
    yield vigil
    vigil.stop()


def open_page(browser: Any) -> tuple[Any, Prompts]:
    ctx = browser.new_context()  # no saved credentials: the prompts come to ``Prompts``
    ctx.set_default_timeout(15000)
    page = ctx.new_page()
    return page, Prompts(page)


def test_log_out_then_the_browser_asks_again(browser: Any, tina_vigil: Vigil) -> None:
    page, prompts = open_page(browser)
    alice = ("alice", password("alice"))
    prompts.answer = lambda: alice
    page.goto(tina_vigil.https + "/")
    page.wait_for_selector(CONNECTED)
    assert len(prompts.urls) == 1  # one prompt; the browser resends what was typed
    expect(page.locator("#session")).to_contain_text(re.compile(r"Signed in since .* 127\.0\.0\.1"))
    expect(page.locator("#logout")).to_be_visible()

    page.locator("#logout").click()
    expect(page.locator("#signedout")).to_be_visible()
    expect(page.locator("#signedout-text")).to_have_text(
        "Your session has ended on the server: this browser's saved password no longer works."
    )
    expect(page.locator("#main")).to_be_hidden()
    page.wait_for_timeout(500)
    assert len(prompts.urls) == 1  # logging out asked nothing: this tab closed its stream

    prompts.answer = lambda: None  # the person presses Cancel at the prompt
    page.locator("#signedout-again").click()
    page.wait_for_load_state()
    assert len(prompts.urls) == 2  # the saved password got 401: the browser asked
    expect(page.locator("body")).to_contain_text("signed out: you logged out; log in again")

    page.wait_for_timeout(2100)  # a person takes a while to type
    prompts.answer = lambda: alice
    page.reload()
    page.wait_for_selector(CONNECTED)
    assert len(prompts.urls) == 3
    expect(page.locator("#me-user")).to_have_text("alice")


def test_password_and_code_in_the_password_field(browser: Any, tina_vigil: Vigil) -> None:
    page, prompts = open_page(browser)
    typed: list[str] = []

    def person() -> tuple[str, str]:
        typed.append(pyotp.TOTP(SECRET).now())
        return "tina", TINA_PW + typed[-1]

    prompts.answer = person
    page.goto(tina_vigil.https + "/")
    page.wait_for_selector(CONNECTED)
    expect(page.locator("#me-user")).to_have_text("tina")
    expect(page.locator("#session")).to_contain_text("Signed in with a code since")
    expect(page.locator("#people-list .role", has_text="2FA")).to_be_visible()  # operators see
    assert len(typed) == 1
    page.reload()  # the browser resends the same header: the same session, no prompt
    page.wait_for_selector(CONNECTED)
    assert len(typed) == 1

    page.locator("#logout").click()
    expect(page.locator("#signedout")).to_be_visible()
    totp = pyotp.TOTP(SECRET)
    prompts.answer = lambda: ("tina", TINA_PW + totp.at(time.time() + 30))  # the next code
    page.locator("#signedout-again").click()  # the saved header is refused for good: asked
    page.wait_for_selector(CONNECTED)
    assert len(prompts.urls) == 2
    expect(page.locator("#me-user")).to_have_text("tina")


@pytest.fixture
def idle_vigil(browser_cert: tuple[Path, Path], tmp_path: Path) -> Iterator[Vigil]:
    yield from vigil_with_tina(browser_cert, tmp_path, {"session_idle": IDLE})


def test_an_idle_session_ends_and_the_browser_asks_again(browser: Any, idle_vigil: Vigil) -> None:
    page, prompts = open_page(browser)
    totp = pyotp.TOTP(SECRET)
    prompts.answer = lambda: ("tina", TINA_PW + totp.now())
    page.goto(idle_vigil.https + "/")
    page.wait_for_selector(CONNECTED)
    # watching is not using: the open event stream does not keep the session; vigil says
    # why on it before it ends, and the panel stops there: no prompt yet
    expect(page.locator("#signedout-text")).to_have_text(
        "Your session has ended: idle for 10 seconds.", timeout=(IDLE + 10) * 1000
    )
    page.wait_for_timeout(1500)  # the stream's reconnect delay is 1 s: nothing reconnects
    assert len(prompts.urls) == 1
    # the next step's code (vigil takes ±1 step): a later step than the login's, so unused
    prompts.answer = lambda: ("tina", TINA_PW + totp.at(time.time() + 30))
    page.locator("#signedout-again").click()  # then the browser asks
    page.wait_for_selector(CONNECTED)
    assert len(prompts.urls) == 2


def test_an_operator_ends_someones_sessions_and_they_see_why(panel: Callable[..., Any]) -> None:
    alice, bob = panel("alice"), panel("bob")
    row = alice.locator("#people-list li", has_text="bob")
    expect(row.locator(".role", has_text="2FA")).to_have_count(0)  # bob has no second factor
    row.get_by_role("button", name="End sessions").click()
    expect(bob.locator("#signedout-text")).to_have_text("Your session has ended: ended by alice.")
    expect(bob.locator("#main")).to_be_hidden()
    own = alice.locator("#people-list li", has_text="alice")
    expect(own.get_by_role("button", name="End sessions")).to_have_count(0)  # that is Log out
    assert panel("vera").locator(".end-sessions").count() == 0  # viewers see no such button
