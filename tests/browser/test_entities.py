"""A device's card built from the entities it declares: every kind, live states, confirmation.

One stubbed device (browser_support.StubEvents: these machines have no SCTP,
so the test plays the event stream) declares one entity of every kind,
among them what the reference lamp has not: a select, a button and a switch
that ask first (``confirm``), binary sensors of several device classes, a
text sensor. Command POSTs go to the real vigil (its control channel is off:
503), or, where a test needs the device's answer, are answered by the test
as vigil would. test_devices.py drives the reference lamp through a real
vigil over SCTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.browser_support import VIEWPORTS, StubEvents, open_stubbed
from tests.support import Vigil

ENTITIES = [
    {"key": "power", "kind": "switch", "label": "Power"},
    {
        "key": "speed",
        "kind": "number",
        "label": "Speed",
        "min": 0,
        "max": 100,
        "step": 5,
        "unit": "%",
    },
    {"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "normal", "boost"]},
    {"key": "flush", "kind": "button", "label": "Flush", "confirm": "Flush the tank?"},
    {"key": "drain", "kind": "switch", "label": "Drain valve", "confirm": True},
    {
        "key": "water",
        "kind": "sensor",
        "label": "Water",
        "unit": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
    },
    {"key": "lid", "kind": "binary_sensor", "label": "Lid", "device_class": "door"},
    {"key": "pir", "kind": "binary_sensor", "label": "Motion", "device_class": "motion"},
    {"key": "leak", "kind": "binary_sensor", "label": "Leak", "device_class": "problem"},
    {"key": "float", "kind": "binary_sensor", "label": "Float switch"},
    {"key": "status", "kind": "text_sensor", "label": "Status"},
]
STATE = {
    "power": True,
    "speed": 40,
    "mode": "eco",
    "drain": False,
    "water": 21.5,
    "lid": True,
    "pir": False,
    "leak": False,
    "float": True,
    "status": "priming",
}
PUMP = {
    "id": "pump-1",
    "name": "Pump",
    "online": True,
    "since": "2026-11-21T06:12:03Z",
    "lease": None,
    "entities": ENTITIES,
    "state": STATE,
}
COMMANDS = re.compile(r"/api/devices/pump-1/commands$")


def entity(page: Any, key: str) -> Any:
    return page.locator(f'#device-list .device[data-id="pump-1"] .entity[data-key="{key}"]')


def reading(page: Any, key: str) -> Any:
    return entity(page, key).locator(".ent-ctl")


def message(page: Any, key: str) -> Any:
    return entity(page, key).locator(".ent-msg")


def view(**state: Any) -> dict[str, Any]:
    """The pump's device view with these states changed."""
    return {**PUMP, "state": {**STATE, **state}}


class Commands:
    """The command POSTs of a page; ``answer=True``: answered as vigil answers a device's
    result (the value is the new state), else passed on to the real vigil."""

    def __init__(self, page: Any, answer: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answer = answer
        page.route(COMMANDS, self._route)

    def _route(self, route: Any) -> None:
        body = json.loads(route.request.post_data)
        self.sent.append(body)
        if not self.answer:
            route.continue_()
            return
        answer = {"id": str(len(self.sent)), "ok": True, "state": body["value"]}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))


@pytest.fixture
def pump(vigil: Vigil, contexts: Callable[..., Any]) -> tuple[Any, StubEvents]:
    """alice's panel with the stubbed pump."""
    return open_stubbed(vigil, contexts, "alice", [PUMP])


def test_every_kind_shows_its_state_with_units_and_words(
    pump: tuple[Any, StubEvents],
) -> None:
    page, _ = pump
    expect(page.get_by_role("switch", name="Power")).to_be_checked()
    expect(page.get_by_role("switch", name="Power")).to_have_text("on")
    expect(page.get_by_role("switch", name="Drain valve")).not_to_be_checked()
    expect(page.get_by_role("slider", name="Speed")).to_have_value("40")
    number = page.get_by_role("spinbutton", name="Speed %")
    expect(number).to_have_value("40")
    for name, value in (("min", "0"), ("max", "100"), ("step", "5")):
        expect(number).to_have_attribute(name, value)
    expect(entity(page, "speed").locator(".bounds")).to_have_text("0 % to 100 %")
    expect(page.get_by_label("Mode")).to_have_value("eco")
    expect(page.get_by_role("button", name="Flush")).to_be_enabled()
    # sensors: the value and its unit; binary sensors in the words of their device class
    expect(reading(page, "water")).to_have_text("21.5 °C")
    words = {"lid": "open", "pir": "clear", "leak": "OK", "float": "on", "status": "priming"}
    for key, word in words.items():
        expect(reading(page, key)).to_have_text(word)
    card = page.locator('.device[data-id="pump-1"]')
    expect(card).not_to_contain_text(re.compile(r"\b(true|false)\b"))
    # a chart for the sensor and the number only, hidden from screen readers
    expect(card.locator(".entity .chart")).to_have_count(2)
    expect(entity(page, "water").locator(".chart")).to_have_attribute("aria-hidden", "true")


def test_states_follow_device_and_command_events(pump: tuple[Any, StubEvents]) -> None:
    page, stub = pump
    stub.send("device", {"kind": "telemetry", "device": view(water=19.5), "data": {"water": 19.5}})
    expect(reading(page, "water")).to_have_text("19.5 °C")
    page.wait_for_timeout(1000)  # a chart keeps one reading a second
    stub.send(
        "device",
        {
            "kind": "telemetry",
            "device": view(water=22, lid=False, pir=True, power=False),
            "data": {"water": 22, "lid": False, "pir": True, "power": False},
        },
    )
    expect(reading(page, "water")).to_have_text("22 °C")
    expect(reading(page, "lid")).to_have_text("closed")
    expect(reading(page, "pir")).to_have_text("motion")
    expect(page.get_by_role("switch", name="Power")).not_to_be_checked()
    # the chart has both readings, its axis labelled with the unit
    chart = entity(page, "water").locator(".chart")
    expect(chart).to_have_attribute("data-points", "2")
    expect(chart).to_have_attribute("data-max", "22 °C")
    expect(chart).to_have_attribute("data-min", "19.5 °C")
    # a command's result sets the state at once, before any reading, and is in the feed
    command = {"id": "c1", "device": "pump-1", "entity": "speed", "value": 60, "user": "bob"}
    stub.send("command", {**command, "phase": "issued"})
    stub.send(
        "command",
        {**command, "phase": "result", "ok": True, "state": 60, "status": 200, "latency_ms": 4},
    )
    expect(page.get_by_role("slider", name="Speed")).to_have_value("60")
    expect(page.get_by_role("spinbutton", name="Speed %")).to_have_value("60")
    feed = page.locator("#feed li .ev-text")
    expect(feed.first).to_have_text("bob set pump-1 speed 60 % → ok, 4 ms")
    # vigil's own command for a safe state, with the reason, in words
    safe = {
        "id": "c2",
        "device": "pump-1",
        "entity": "mode",
        "value": "normal",
        "user": "vigil",
        "reason": "safe state: alice lost",
    }
    stub.send("command", {**safe, "phase": "issued"})
    stub.send("command", {**safe, "phase": "result", "ok": True, "state": "normal", "status": 200})
    expect(page.get_by_label("Mode")).to_have_value("normal")
    expect(feed.first).to_have_text("vigil set pump-1 mode normal: safe state: alice lost → ok")
    expect(feed.filter(has_text="pump-1")).to_have_count(2)  # each result replaced its "sent…"


def test_a_slider_sends_one_value_when_let_go(pump: tuple[Any, StubEvents]) -> None:
    page, _ = pump
    commands = Commands(page, answer=True)
    slider = page.get_by_role("slider", name="Speed")
    box = slider.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.4, y)
    page.mouse.down()
    for i in range(1, 11):  # a drag over many steps of 5
        page.mouse.move(box["x"] + box["width"] * (0.4 + 0.045 * i), y)
    expect(page.get_by_role("spinbutton", name="Speed %")).not_to_have_value("40")
    assert commands.sent == []  # nothing while dragging
    page.mouse.up()
    expect(message(page, "speed")).to_have_attribute("data-kind", "ok")
    assert len(commands.sent) == 1, commands.sent
    value = commands.sent[0]["value"]
    assert commands.sent == [{"entity": "speed", "value": value}]
    assert 70 <= value <= 100 and value % 5 == 0, value
    expect(message(page, "speed")).to_contain_text(re.compile(rf"^{value} %: ok \(\d+ ms\)"))
    expect(slider).to_have_value(str(value))
    # by keyboard: one step a key
    slider.focus()
    page.keyboard.press("ArrowLeft")
    expect(slider).to_have_value(str(value - 5))
    expect(message(page, "speed")).to_contain_text(f"{value - 5} %: ok")
    assert commands.sent[1:] == [{"entity": "speed", "value": value - 5}]
    # a typed value goes when it is entered
    number = page.get_by_role("spinbutton", name="Speed %")
    number.fill("15")
    number.press("Enter")
    expect(slider).to_have_value("15")
    assert commands.sent[2:] == [{"entity": "speed", "value": 15}]
    expect(number).to_be_focused()


def test_switch_select_and_button_send_their_values(pump: tuple[Any, StubEvents]) -> None:
    page, _ = pump
    commands = Commands(page, answer=True)
    power = page.get_by_role("switch", name="Power")
    power.click()
    expect(power).not_to_be_checked()
    expect(power).to_have_text("off")
    page.get_by_label("Mode").select_option("boost")
    expect(message(page, "mode")).to_contain_text("boost: ok")
    assert commands.sent == [
        {"entity": "power", "value": False},
        {"entity": "mode", "value": "boost"},
    ]
    # by keyboard: Space toggles the focused switch back on
    power.focus()
    page.keyboard.press("Space")
    expect(power).to_be_checked()
    assert commands.sent[2:] == [{"entity": "power", "value": True}]


def test_confirm_asks_naming_device_and_action_and_cancel_sends_nothing(
    pump: tuple[Any, StubEvents],
) -> None:
    page, _ = pump
    commands = Commands(page)  # on to the real vigil
    dialog = page.locator("#confirm")
    flush = page.get_by_role("button", name="Flush")
    flush.click()
    expect(page.get_by_role("dialog", name="Flush the tank?")).to_be_visible()
    expect(dialog.locator("#confirm-text")).to_have_text("Pump (pump-1): Flush")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(flush).to_be_focused()
    # Escape cancels too; a switch asks what it will do
    drain = page.get_by_role("switch", name="Drain valve")
    drain.click()
    expect(page.get_by_role("dialog", name="Turn Drain valve on?")).to_be_visible()
    expect(dialog.locator("#confirm-text")).to_have_text("Pump (pump-1): Drain valve → on")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(drain).not_to_be_checked()
    page.wait_for_timeout(500)  # time for a request that should not be
    assert commands.sent == []
    # confirmed: sent once, and vigil's answer (control channel off) shown beside it
    flush.click()
    dialog.get_by_role("button", name="Press").click()
    expect(message(page, "flush")).to_contain_text("unavailable: control channel off")
    assert commands.sent == [{"entity": "flush", "value": None}]


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_the_card_fits_and_works_by_keyboard(
    vigil: Vigil, contexts: Callable[..., Any], screen: str
) -> None:
    page, _ = open_stubbed(vigil, contexts, "alice", [PUMP], **VIEWPORTS[screen])
    width = VIEWPORTS[screen]["viewport"]["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # every control has a name, and Tab reaches them in the card's order
    names = [
        ("switch", "Power"),
        ("slider", "Speed"),
        ("spinbutton", "Speed %"),
        ("combobox", "Mode"),
        ("button", "Flush"),
        ("switch", "Drain valve"),
    ]
    page.get_by_role("button", name="Take").focus()
    for role, name in names:
        page.keyboard.press("Tab")
        expect(page.get_by_role(role, name=name, exact=True)).to_be_focused()
    assert page.locator("[style]").count() == 0
