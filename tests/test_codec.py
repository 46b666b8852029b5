"""server.link.codec: every control message both ways, and every error text (no sockets)."""

from __future__ import annotations

import json

import pytest

from server.link import codec
from server.link.codec import (
    MAX_MESSAGE,
    Challenge,
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

NONCE = bytes(range(32))


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- round trips ------------------------------------------------------------

FROM_DEVICE = [
    Hello("lamp-1", "Lamp", ("on", "off"), "ab" * 32),
    Hello("d", "d", ()),
    Hello("d", "Lampe ü", ("ein", "aus")),
    Result("c1", True, {"on": True, "t": 21.5}),
    Result("c1", True, None),
    Result("c1", True, [1, "zwei", None]),
    Result("c1", False, error="bulb broken"),
    Telemetry({"on": False, "temperature": 21.02}),
    Telemetry({}),
]
FROM_SERVER = [
    Challenge(NONCE),
    Welcome("lamp-1"),
    Command("a1b2c3-1", "on", {}, "alice"),
    Command("a1b2c3-2", "set", {"level": 3, "name": "ü"}, "bob"),
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
    assert (
        error == f"unknown message type {kind!r} (vigil sends: challenge, welcome, command, error)"
    )


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
    assert (
        encode(Challenge(NONCE)) == b'{"type":"challenge","nonce":"' + NONCE.hex().encode() + b'"}'
    )
    assert encode(Command("c-1", "on", {"level": 3}, "al")) == (
        b'{"type":"command","id":"c-1","action":"on","args":{"level":3},"user":"al"}'
    )


def test_a_devices_messages_are_the_bytes_the_reference_agent_always_sent() -> None:
    """json.dumps' default spacing, ASCII, keys in the order of the README's table."""
    hello = Hello("lamp-1", "Lamp lamp-1", ("on", "off"), "ab")
    assert (
        encode(hello)
        == json.dumps(
            {
                "type": "hello",
                "device": "lamp-1",
                "name": "Lamp lamp-1",
                "commands": ["on", "off"],
                "hmac": "ab",
            }
        ).encode()
    )
    assert b'"hmac"' not in encode(Hello("d", "d", ()))  # no proof: no key
    assert encode(Result("c", True, {"on": True})) == (
        b'{"type": "result", "id": "c", "ok": true, "result": {"on": true}}'
    )
    assert encode(Result("c", False, error="hot")) == (
        b'{"type": "result", "id": "c", "ok": false, "error": "hot"}'
    )
    assert encode(Telemetry({"t": "ü"})) == b'{"type": "telemetry", "data": {"t": "\\u00fc"}}'


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError, match="not a control message"):
        encode({"type": "hello"})  # type: ignore[arg-type]


# -- decoding a device's messages (vigil's side) -----------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            raw({"type": "hello", "device": "lamp-1", "name": "Lamp", "commands": ["on", "off"]}),
            Hello("lamp-1", "Lamp", ("on", "off")),
        ),
        (raw({"type": "hello", "device": "s.1_x-2"}), Hello("s.1_x-2", "s.1_x-2", ())),
        (raw({"type": "hello", "device": "d", "commands": []}) + b"\n\0", Hello("d", "d", ())),
        (
            raw({"type": "result", "id": "c1", "ok": True, "result": {"on": 1}}),
            Result("c1", True, {"on": 1}),
        ),
        (raw({"type": "result", "id": "c1", "ok": True}), Result("c1", True, None)),
        (
            raw({"type": "result", "id": "c1", "ok": False, "error": "hot"}),
            Result("c1", False, error="hot"),
        ),
        (raw({"type": "telemetry", "data": {"t": 21.5}}), Telemetry({"t": 21.5})),
        ('{"type":"hello","device":"d","name":"Lampe ü"}'.encode(), Hello("d", "Lampe ü", ())),
        (raw({"type": "hello", "device": "d", "hmac": "ab12"}), Hello("d", "d", (), "ab12")),
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
HELLO_NAME = "hello: name must be a non-empty string of at most 100 characters"
HELLO_COMMANDS = "hello: commands must be a list of at most 64 non-empty strings"


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
        (raw({"type": "hello", "device": "-x"}), f"hello: device must be {ID_RULE}"),
        (raw({"type": "hello", "device": "x" * 65}), f"hello: device must be {ID_RULE}"),
        (raw({"type": "hello", "device": "a/b"}), f"hello: device must be {ID_RULE}"),
        (raw({"type": "hello", "device": "x", "name": ""}), HELLO_NAME),
        (raw({"type": "hello", "device": "x", "name": "n" * 101}), HELLO_NAME),
        (raw({"type": "hello", "device": "x", "name": 7}), HELLO_NAME),
        (raw({"type": "hello", "device": "x", "commands": "on"}), HELLO_COMMANDS),
        (raw({"type": "hello", "device": "x", "commands": [""]}), HELLO_COMMANDS),
        (raw({"type": "hello", "device": "x", "commands": [1]}), HELLO_COMMANDS),
        (raw({"type": "hello", "device": "x", "commands": ["a"] * 65}), HELLO_COMMANDS),
        (
            raw({"type": "hello", "device": "x", "commands": ["a", "a"]}),
            "hello: commands must not repeat",
        ),
        (
            raw({"type": "hello", "device": "x", "hmac": 12}),
            "hello: hmac must be a string of hex digits",
        ),
        (raw({"type": "result", "ok": True}), "result: id must be the command's id (a string)"),
        (
            raw({"type": "result", "id": "", "ok": True}),
            "result: id must be the command's id (a string)",
        ),
        (raw({"type": "result", "id": "c", "ok": 1}), "result: ok must be true or false"),
        (
            raw({"type": "result", "id": "c", "ok": False}),
            'result: a failed result needs "error": "<what went wrong>"',
        ),
        (
            raw({"type": "result", "id": "c", "ok": False, "error": ""}),
            'result: a failed result needs "error": "<what went wrong>"',
        ),
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
        (raw({"type": "challenge", "nonce": "AB" * 32}), Challenge(b"\xab" * 32)),
        (raw({"type": "welcome", "device": "lamp-1"}), Welcome("lamp-1")),
        (
            raw({"type": "command", "id": "c", "action": "on", "user": "al"}),
            Command("c", "on", {}, "al"),
        ),
        (raw({"type": "error", "error": ""}), Error("")),
    ],
)
def test_decode_from_server_valid(data: bytes, expected: codec.FromServer) -> None:
    assert decode_from_server(data) == expected


NONCE_RULE = "challenge: nonce must be 64 hex digits"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        *FRAMING_ERRORS,
        (
            raw({"nonce": "x"}),
            "unknown message type None (vigil sends: challenge, welcome, command, error)",
        ),
        (
            raw({"type": "hello"}),
            "unknown message type 'hello' (vigil sends: challenge, welcome, command, error)",
        ),
        (raw({"type": "challenge"}), NONCE_RULE),
        (raw({"type": "challenge", "nonce": "ab" * 31}), NONCE_RULE),
        (raw({"type": "challenge", "nonce": "zz" * 32}), NONCE_RULE),
        (raw({"type": "challenge", "nonce": 5}), NONCE_RULE),
        (raw({"type": "welcome"}), f"welcome: device must be {ID_RULE}"),
        (raw({"type": "welcome", "device": "a b"}), f"welcome: device must be {ID_RULE}"),
        (
            raw({"type": "command", "action": "on", "user": "al"}),
            "command: id must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "", "action": "on", "user": "al"}),
            "command: id must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "c", "user": "al"}),
            "command: action must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "c", "action": "", "user": "al"}),
            "command: action must be a non-empty string",
        ),
        (
            raw({"type": "command", "id": "c", "action": "on", "args": [], "user": "al"}),
            "command: args must be an object",
        ),
        (raw({"type": "command", "id": "c", "action": "on"}), "command: user must be a string"),
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
