"""Regenerate docs/panel-desktop.png and docs/panel-phone.png (the README shows them).

    sudo .venv/bin/python docs/screenshots.py [--out DIR] [--lang zh-CN]

Boots the UML test host (tests/uml/testhost.py: vigil with real SCTP and the
reference agent lamp-1 in a User-Mode Linux guest; needs root, /dev/net/tun,
``linux.uml``), opens the panel in Debian's chromium as two people, alice on
a 1280x800 desktop and bob on a 360x780 phone, lets bob switch the lamp on
and dim it (which gives him the lamp's lease: alice sees it held) and both chat, waits
for the temperature chart to fill in, and saves what each of them sees (in
docs/, or ``--out DIR``). ``--lang zh-CN``: chromium in Simplified Chinese, the
chat in Chinese, saved as panel-desktop.zh-CN.png and panel-phone.zh-CN.png
(README.zh-CN.md shows them).
The panel is opened over HTTPS, chromium trusting the certificate vigil
made for itself in the guest. Run it by hand after the panel changes and
commit the PNGs; the tests do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT)]  # run as a file: the tests package is the repository's

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.browser.browser_support import chromium  # noqa: E402
from tests.browser.uml_support import entity, message, power  # noqa: E402
from tests.support import password, write_config  # noqa: E402
from tests.uml.testhost import uml_test_host  # noqa: E402

CHART_S = 120  # seconds of telemetry in the chart of the screenshots
# What alice, bob and alice say, and the word of a command's success, by language.
CHAT = {
    "en": (
        "Morning! Checking the hall lamp before the visitors arrive.",
        "It's on at 60 %, 22 °C next to it. I'll hold it until they're in.",
        "Thanks, leaving it to you.",
    ),
    "zh-CN": (
        "早上好！访客来之前我先检查一下门厅的灯。",
        "已经打开了，亮度 60 %，旁边 22 °C。我先占用着，等他们进来。",
        "谢谢，交给你了。",
    ),
}
OK = {"en": "ok", "zh-CN": "成功"}


def open_panel(browser: Any, base: str, user: str, **kw: Any) -> Any:
    """``user``'s panel in ``browser``, connected, with the lamp's card."""
    ctx = browser.new_context(http_credentials={"username": user, "password": password(user)}, **kw)
    page = ctx.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#conn[data-state=connected]")
    expect(power(page, "lamp-1")).to_be_visible()
    return page


def dim(page: Any, percent: int, ok: str) -> None:
    field = entity(page, "lamp-1", "brightness").get_by_role("spinbutton")
    field.fill(str(percent))
    field.press("Enter")
    expect(message(page, "lamp-1", "brightness")).to_contain_text(ok)


def say(page: Any, text: str) -> None:
    page.fill("#chat-text", text)
    page.press("#chat-text", "Enter")
    expect(page.locator("#chat-log .msg-text").last).to_have_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DOCS, help="directory for the PNGs (docs/)")
    p.add_argument("--lang", choices=sorted(CHAT), default="en", help="the browser's language")
    args = p.parse_args()
    out, lang = args.out, args.lang
    suffix = "" if lang == "en" else f".{lang}"
    names = (f"panel-desktop{suffix}.png", f"panel-phone{suffix}.png")
    sections = {
        "http": {"host": "0.0.0.0", "port": 8080},
        "auth": {"allow": ["10.213.1.0/24"]},
        "control": {"enabled": True, "port": 9900, "lease_idle": 600},  # held while the chart fills
        "audit": {"path": "audit.jsonl"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), sections, {"alice": "operator", "bob": "operator"})
        text = config.read_text()
    with (
        uml_test_host(text, agents=["lamp-1"]) as host,
        sync_playwright() as pw,
        chromium(pw, host.cert, lang="en-US" if lang == "en" else lang) as browser,
    ):
        desktop = {"width": 1280, "height": 800}
        alice = open_panel(browser, host.https_url, "alice", viewport=desktop)
        bob = open_panel(
            browser,
            host.https_url,
            "bob",
            viewport={"width": 360, "height": 780},
            device_scale_factor=1,
            is_mobile=True,
            has_touch=True,
        )
        say(alice, CHAT[lang][0])
        power(bob, "lamp-1").click()  # bob's first command takes the lease: "held by bob"
        expect(power(bob, "lamp-1")).to_have_attribute("aria-checked", "true")
        dim(bob, 60, OK[lang])
        say(bob, CHAT[lang][1])
        expect(alice.locator('.device[data-id="lamp-1"] .lease')).to_have_attribute(
            "data-holder", "bob"
        )
        say(alice, CHAT[lang][2])
        time.sleep(CHART_S)  # the temperature chart fills in
        for page in (alice, bob):
            page.evaluate("document.activeElement && document.activeElement.blur()")
            page.mouse.move(0, 0)  # no hover highlight on the last button pressed
            page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the page
        alice.screenshot(path=str(out / names[0]))
        bob.screenshot(path=str(out / names[1]), full_page=True)
    for name in names:
        print(f"{out / name}: {(out / name).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
