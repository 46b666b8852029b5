"""server.link.codec: every control message both ways, and every error text (no sockets)."""

from __future__ import annotations

import json

import pytest

from server.link import codec
from server.link.codec import (
    MAX_MESSAGE,
    Command,
    Error,
    Hello,
    Result,
    Telemetry,
    Welcome,
    decode_from_device,
    decode_from_server,
    encode,
)
from tests.fakedevice import LAMP, described

BELL = described({"key": "bell", "kind": "button", "label": "Bell ü", "safe": True})
LAMP_JSON = [e.as_json() for e in LAMP]


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- round trips ------------------------------------------------------------

FROM_DEVICE = [
    Hello("lamp-1", "Lamp", LAMP),
    Hello("d", "Lampe ü", BELL),
    Hello("d", "d", (), protocol=None),  # an older agent's hello still decodes ...
    Hello("d", "d", (), protocol=1),  # ... so that vigil can say which protocol it speaks
    Result("c1", True, 40),
    Result("c1", True, 21.5),
    Result("c1", True, False),
    Result("c1", True, "zwei ü"),
    Result("c1", True),  # no state: vigil takes the value it sent
    Result("c1", False, error="bulb broken"),
    Telemetry({"power": False, "temperature": 21.02, "mode": None}),
    Telemetry({}),
]
FROM_SERVER = [
    Welcome("lamp-1"),
    Command("a1b2c3-1", "power", True, "alice"),
    Command("a1b2c3-2", "brightness", 40.5, "bob"),
    Command("a1b2c3-3", "mode", "ü", "bob"),
    Command("a1b2c3-4", "bell", None, "vigil"),
    Error("hello refused: authentication failed"),
    Error("naïve"),
]


@pytest.mark.parametrize("msg", FROM_DEVICE, ids=repr)
def test_every_device_message_round_trips(msg: codec.FromDevice) -> None:
    data = encode(msg)
    data.decode("ascii")  # ASCII only: non-ASCII is escaped
    assert decode_from_device(data) == msg
    assert decode_from_device(data + b"\0") == msg  # as a C peer sends it


@pytest.mark.parametrize("msg", FROM_SERVER, ids=repr)
def test_every_server_message_round_trips(msg: codec.FromServer) -> None:
    data = encode(msg)
    data.decode("ascii")
    assert decode_from_server(data) == msg
    assert decode_from_server(data + b"\0") == msg


@pytest.mark.parametrize("msg", FROM_DEVICE, ids=repr)
def test_a_device_message_is_not_one_vigil_sends(msg: codec.FromDevice) -> None:
    kind = json.loads(encode(msg))["type"]
    error = decode_from_server(encode(msg))
    assert error == f"unknown message type {kind!r} (vigil sends: welcome, command, error)"


@pytest.mark.parametrize("msg", FROM_SERVER, ids=repr)
def test_a_server_message_is_not_one_a_device_sends(msg: codec.FromServer) -> None:
    kind = json.loads(encode(msg))["type"]
    error = decode_from_device(encode(msg))
    assert error == f"unknown message type {kind!r} (a device sends: hello, result, telemetry)"


# -- the bytes on the wire ------------------------------------------------------


def test_vigils_messages_are_compact_ascii_json() -> None:
    """The exact bytes vigil has always sent (tests/sctp reads them raw)."""
    assert encode(Welcome("lamp-ü")) == b'{"type":"welcome","device":"lamp-\\u00fc"}'
    assert encode(Error("bad")) == b'{"type":"error","error":"bad"}'
    assert encode(Command("c-1", "brightness", 40, "al")) == (
        b'{"type":"command","id":"c-1","entity":"brightness","value":40,"user":"al"}'
    )
    assert encode(Command("c-2", "bell", None, "vigil")) == (
        b'{"type":"command","id":"c-2","entity":"bell","value":null,"user":"vigil"}'
    )


def test_a_devices_messages_are_the_bytes_the_reference_agent_always_sent() -> None:
    """json.dumps' default spacing, ASCII, keys in the order of the README's table."""
    hello = Hello("lamp-1", "Lamp lamp-1", LAMP)
    assert (
        encode(hello)
        == json.dumps(
            {
                "type": "hello",
                "protocol": 2,
                "device": "lamp-1",
                "name": "Lamp lamp-1",
                "entities": LAMP_JSON,
            }
        ).encode()
    )
    assert LAMP_JSON[2] == {
        "key": "temperature",
        "kind": "sensor",
        "label": "Temperature",
        "unit": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
    }
    assert encode(Result("c", True, 40)) == (
        b'{"type": "result", "id": "c", "ok": true, "state": 40}'
    )
    assert encode(Result("c", True)) == b'{"type": "result", "id": "c", "ok": true}'
    assert encode(Result("c", False, error="hot")) == (
        b'{"type": "result", "id": "c", "ok": false, "error": "hot"}'
    )
    assert encode(Telemetry({"t": "ü"})) == b'{"type": "telemetry", "data": {"t": "\\u00fc"}}'


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError, match="not a control message"):
        encode({"type": "hello"})  # type: ignore[arg-type]


# -- decoding a device's messages (vigil's side) -----------------------------------


def hello(**fields: object) -> bytes:
    """A hello of protocol 2 declaring the lamp, with ``fields`` changed."""
    return raw({"type": "hello", "protocol": 2, "device": "x", "entities": LAMP_JSON, **fields})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (hello(device="lamp-1", name="Lamp"), Hello("lamp-1", "Lamp", LAMP)),
        (hello(device="s.1_x-2"), Hello("s.1_x-2", "s.1_x-2", LAMP)),  # name: the id
        (hello(device="d") + b"\n\0", Hello("d", "d", LAMP)),
        (
            '{"type":"hello","protocol":2,"device":"d","name":"Lampe ü","entities":[{"key":"bell",'
            '"kind":"button","label":"Bell ü","safe":true}]}'.encode(),
            Hello("d", "Lampe ü", BELL),
        ),
        # a hello of another protocol, or none: decoded without entities, for vigil to refuse
        (
            raw({"type": "hello", "device": "d", "commands": ["on", "off"]}),
            Hello("d", "d", (), protocol=None),
        ),
        (raw({"type": "hello", "protocol": 1, "device": "d"}), Hello("d", "d", (), protocol=1)),
        (hello(device="d", protocol=3, entities="ignored"), Hello("d", "d", (), protocol=3)),
        (hello(device="d", protocol="2"), Hello("d", "d", (), protocol=None)),
        (hello(device="d", protocol=True), Hello("d", "d", (), protocol=None)),
        (raw({"type": "result", "id": "c1", "ok": True, "state": 40}), Result("c1", True, 40)),
        (raw({"type": "result", "id": "c1", "ok": True, "state": None}), Result("c1", True)),
        (raw({"type": "result", "id": "c1", "ok": True}), Result("c1", True, None)),
        (
            raw({"type": "result", "id": "c1", "ok": False, "error": "hot", "state": 1}),
            Result("c1", False, error="hot"),
        ),
        (
            raw({"type": "result", "id": "c1", "ok": False, "error": "e" * 500}),
            Result("c1", False, error="e" * 500),
        ),
        (raw({"type": "telemetry", "data": {"t": 21.5}}), Telemetry({"t": 21.5})),
    ],
)
def test_decode_from_device_valid(data: bytes, expected: codec.FromDevice) -> None:
    assert decode_from_device(data) == expected


FRAMING_ERRORS = [
    (b"\xc3(", "message is not UTF-8 (bad byte at offset 0)"),
    (
        b"{",
        "message is not JSON: Expecting property name enclosed in double quotes at line 1 column 2",
    ),
    (b"[" * 30000, "message is not JSON: nested too deeply"),
    (b"42", "message must be a JSON object, not int"),
    (b'"hello"', "message must be a JSON object, not str"),
    (b"[]", "message must be a JSON object, not list"),
    (
        b" " * (MAX_MESSAGE + 1),
        f"message too large: {MAX_MESSAGE + 1} bytes (at most {MAX_MESSAGE})",
    ),
]

ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ - (not first: . _ -)"
KEY_RULE = "1-32 characters of a-z 0-9 _, starting with a letter"
HELLO_NAME = "hello: name must be a non-empty string of at most 100 characters"
HELLO_ENTITIES = "hello: entities must be a list of 1-32 objects"
STATE = "result: state must be true, false, a number, a text or null"
FAILED = 'result: a failed result needs "error": "<what went wrong>" (500 at most)'


@pytest.mark.parametrize(
    ("data", "error"),
    [
        *FRAMING_ERRORS,
        (
            raw({"device": "x"}),
            "unknown message type None (a device sends: hello, result, telemetry)",
        ),
        (raw({"type": 5}), "unknown message type 5 (a device sends: hello, result, telemetry)"),
        (
            raw({"type": "welcome"}),
            "unknown message type 'welcome' (a device sends: hello, result, telemetry)",
        ),
        (raw({"type": "hello"}), f"hello: device must be {ID_RULE}"),
        (hello(device="-x"), f"hello: device must be {ID_RULE}"),
        (hello(device="x" * 65), f"hello: device must be {ID_RULE}"),
        (hello(device="a/b"), f"hello: device must be {ID_RULE}"),
        (raw({"type": "hello", "device": "-x"}), f"hello: device must be {ID_RULE}"),
        (hello(name=""), HELLO_NAME),
        (hello(name="n" * 101), HELLO_NAME),
        (hello(name=7), HELLO_NAME),
        (raw({"type": "hello", "device": "x", "name": ""}), HELLO_NAME),  # before the protocol
        (hello(entities=None), HELLO_ENTITIES),
        (raw({"type": "hello", "protocol": 2, "device": "x"}), HELLO_ENTITIES),
        (hello(entities=[]), HELLO_ENTITIES),
        (hello(entities=["on", "off"]), "hello: entities[0] must be an object"),
        (
            hello(entities=[{"key": "On", "kind": "switch", "label": "On"}]),
            f"hello: entities[0]: key must be {KEY_RULE}",
        ),
        (
            hello(entities=[*LAMP_JSON, LAMP_JSON[0]]),
            "hello: entities[3]: key 'power' is used twice",
        ),
        (
            hello(entities=[{**LAMP_JSON[1], "safe": 140}]),
            "hello: entities[0] (brightness): safe: 140 is above max 100",
        ),
        (raw({"type": "result", "ok": True}), "result: id must be the command's id (a string)"),
        (
            raw({"type": "result", "id": "", "ok": True}),
            "result: id must be the command's id (a string)",
        ),
        (raw({"type": "result", "id": "c", "ok": 1}), "result: ok must be true or false"),
        (raw({"type": "result", "id": "c", "ok": True, "state": [40]}), STATE),
        (raw({"type": "result", "id": "c", "ok": True, "state": {"on": True}}), STATE),
        (b'{"type": "result", "id": "c", "ok": true, "state": NaN}', STATE),
        (b'{"type": "result", "id": "c", "ok": true, "state": -Infinity}', STATE),
        (raw({"type": "result", "id": "c", "ok": False}), FAILED),
        (raw({"type": "result", "id": "c", "ok": False, "error": ""}), FAILED),
        (raw({"type": "result", "id": "c", "ok": False, "error": "e" * 501}), FAILED),
        (raw({"type": "telemetry", "data": [1]}), "telemetry: data must be an object"),
        (raw({"type": "telemetry"}), "telemetry: data must be an object"),
    ],
)
def test_decode_from_device_errors(data: bytes, error: str) -> None:
    assert decode_from_device(data) == error


# -- decoding vigil's messages (the device's side) ---------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (raw({"type": "welcome", "device": "lamp-1"}), Welcome("lamp-1")),
        (
            raw({"type": "command", "id": "c", "entity": "brightness", "value": 40, "user": "al"}),
            Command("c", "brightness", 40, "al"),
        ),
        (
            raw({"type": "command", "id": "c", "entity": "bell", "user": "vigil"}),
            Command("c", "bell", None, "vigil"),  # a button: the value may be left out
        ),
        (raw({"type": "error", "error": ""}), Error("")),
    ],
)
def test_decode_from_server_valid(data: bytes, expected: codec.FromServer) -> None:
    assert decode_from_server(data) == expected


@pytest.mark.parametrize(
    ("data", "error"),
    [
        *FRAMING_ERRORS,
        (
            raw({"nonce": "x"}),
            "unknown message type None (vigil sends: welcome, command, error)",
        ),
        (
            raw({"type": "hello"}),
            "unknown message type 'hello' (vigil sends: welcome, command, error)",
        ),
        (raw({"type": "welcome"}), f"welcome: device must be {ID_RULE}"),
        (raw({"type": "welcome", "device": "a b"}), f"welcome: device must be {ID_RULE}"),
        (
            raw({"type": "command", "entity": "power", "value": True, "user": "al"}),
            "command: id must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "", "entity": "power", "value": True, "user": "al"}),
            "command: id must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "c", "value": True, "user": "al"}),
            f"command: entity must be {KEY_RULE}",
        ),
        (
            raw({"type": "command", "id": "c", "entity": "Power", "value": True, "user": "al"}),
            f"command: entity must be {KEY_RULE}",
        ),
        (
            raw({"type": "command", "id": "c", "entity": "", "value": True, "user": "al"}),
            f"command: entity must be {KEY_RULE}",
        ),
        (
            raw({"type": "command", "id": "c", "entity": "power", "value": [1], "user": "al"}),
            "command: value must be true, false, a number, a text or null",
        ),
        (
            raw({"type": "command", "id": "c", "entity": "power", "value": {}, "user": "al"}),
            "command: value must be true, false, a number, a text or null",
        ),
        (
            raw({"type": "command", "id": "c", "entity": "power", "value": True}),
            "command: user must be a string",
        ),
        (raw({"type": "error"}), "error: error must be a string"),
        (raw({"type": "error", "error": 1}), "error: error must be a string"),
    ],
)
def test_decode_from_server_errors(data: bytes, error: str) -> None:
    assert decode_from_server(data) == error


def test_the_size_limit_is_the_same_both_ways() -> None:
    big = raw({"type": "telemetry", "data": {"pad": "x" * MAX_MESSAGE}})
    assert decode_from_device(big) == codec.too_large(len(big))
    assert decode_from_server(big) == codec.too_large(len(big))
    fits = b" " * (MAX_MESSAGE - 2) + b"{}"
    assert (
        decode_from_device(fits)
        == "unknown message type None (a device sends: hello, result, telemetry)"
    )


def test_a_number_of_more_digits_than_python_reads_is_an_error_reply_not_a_crash() -> None:
    raw = b'{"type": "telemetry", "data": {"speed": ' + b"9" * 5000 + b"}}"
    error = codec.decode_from_device(raw)
    assert isinstance(error, str) and error.startswith("message is not JSON vigil reads: ")


def test_a_command_value_that_is_not_finite_is_refused() -> None:
    raw = b'{"type": "command", "id": "c", "entity": "speed", "value": NaN, "user": "a"}'
    assert codec.decode_from_server(raw) == (
        "command: value must be true, false, a number, a text or null"
    )
