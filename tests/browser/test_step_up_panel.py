"""Step-up in a real Chromium: the confirm dialog asks for the code, and vigil refuses the
command without it.

vigil must know the device to know that an entity asks to confirm, and these machines
have no kernel SCTP; the UML test host runs only the reference lamp, which asks for
nothing. So this vigil runs in the test process, in a thread of its own (its one loop,
listening on loopback over HTTPS like a real one), with a ``FakeDevice`` on its control
channel's message-level seam (tests/fakedevice.py): every request of the browser goes
through the real parser, gate, sessions, step-up check and command path.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.sync_api import expect

from server import config as configmod
from server.app import Server
from server.base.loop import Loop
from server.config import Account
from server.people import users
from server.people.auth import hash_password
from tests.browser.browser_support import CONNECTED
from tests.fakedevice import FakeDevice, described
from tests.support import write_config

SECRET = pyotp.random_base32()
TINA_PW = "tina's long password"
HEATER = described(
    {"key": "heater", "kind": "switch", "label": "Heater", "confirm": "Switch the heater?"},
)


class Threaded:
    """A vigil in a thread of this process: ``server``, ``loop``, ``https``; ``pump`` runs
    passes before the thread starts (``FakeDevice`` comes online with them)."""

    def __init__(self, directory: Path, cert: Path, key: Path) -> None:
        sections = {"tls": {"cert": str(cert), "key": str(key)}}
        self.loop = Loop("select")
        self.server = Server(configmod.load(write_config(directory, sections)), self.loop)
        # start() takes SIGTERM, SIGINT and SIGHUP for its loop: pytest's own come back after
        self.signals = {
            n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        self.server.start()
        self.https = f"https://127.0.0.1:{self.server.tls_port}"
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def pump(self, passes: int = 5) -> None:
        for _ in range(passes):
            self.loop.run_once(0)

    def close(self) -> None:
        self.loop.stop()  # seen at its next wake-up: the sweep, within a second
        self.thread.join(5)
        self.server.close()
        self.loop.close()
        for signum, handler in self.signals.items():
            signal.signal(signum, handler)


@pytest.fixture
def heater_vigil(tmp_path: Path, browser_cert: tuple[Path, Path]) -> Iterator[Threaded]:
    users.save(tmp_path, [Account("tina", hash_password(TINA_PW), "operator", SECRET)])
    vigil = Threaded(tmp_path, *browser_cert)
    FakeDevice(vigil, "boiler", HEATER)  # it uses what an App has: server, loop, pump
    vigil.thread.start()
    yield vigil
    vigil.close()


def test_the_confirm_dialog_asks_for_the_code(browser: Any, heater_vigil: Threaded) -> None:
    totp = pyotp.TOTP(SECRET)
    login = totp.at(time.time() - 30)  # the last step's code (±1 step): the current one is new
    ctx = browser.new_context(http_credentials={"username": "tina", "password": TINA_PW + login})
    ctx.set_default_timeout(15000)
    page = ctx.new_page()
    page.goto(heater_vigil.https + "/")
    page.wait_for_selector(CONNECTED)
    heater = page.get_by_role("switch", name="Heater")
    dialog = page.locator("#confirm")
    message = page.locator('.entity[data-key="heater"] .ent-msg')

    heater.click()
    expect(page.get_by_role("dialog", name="Switch the heater?")).to_be_visible()
    proof = dialog.get_by_label("Your current 6-digit code")
    expect(proof).to_be_visible()
    dialog.get_by_role("button", name="Turn on").click()  # sent without the code: refused
    expect(message).to_have_attribute("data-kind", "fail")
    expect(message).to_contain_text("confirm with your current 6-digit code")
    expect(heater).not_to_be_checked()

    heater.click()
    proof.fill("000000" if login != "000000" else "111111")
    dialog.get_by_role("button", name="Turn on").click()
    expect(message).to_contain_text("refused: not your current 6-digit code")

    heater.click()
    proof.fill(totp.now())  # a later step than the login's (the one-use rule)
    dialog.get_by_role("button", name="Turn on").click()
    expect(message).to_contain_text("on: ok")
    expect(heater).to_be_checked()

    heater.click()  # within the step-up window the dialog asks only whether
    expect(page.get_by_role("dialog", name="Switch the heater?")).to_be_visible()
    expect(proof).to_be_hidden()
    dialog.get_by_role("button", name="Turn off").click()
    expect(heater).not_to_be_checked()
    records = heater_vigil.server.audit.newest_json(50).decode()
    assert records.count('"type":"step_up"') == 2
