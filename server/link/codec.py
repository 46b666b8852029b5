"""The control protocol's wire, both ways: every message, its encoding, its decoders.

What vigil (``server.control.channel``) and a device agent (``server.agent``)
say to each other, written once (README, "Devices"). Every message is one
UTF-8 JSON object of at most ``MAX_MESSAGE`` bytes with a ``type``, sealed
on the wire (``server.link.seal``: the codec sees only the plaintext):

- vigil -> device: ``Welcome``, ``Command``, ``Error``
  (``decode_from_server`` reads them, on the device's side);
- device -> vigil: ``Hello``, ``Result``, ``Telemetry``
  (``decode_from_device`` reads them, in vigil).

Protocol 2 (``entities.PROTOCOL``): a hello declares the device's entities
(``server.link.entities``); a command sets one entity to a value and its
result says the entity's state after it; telemetry reports entity states by
key. A hello of another protocol (or none) still decodes, with no
entities, so that vigil can refuse it saying which protocol it speaks.

``encode`` writes any of them. Each decoder returns the message, or a
one-line error text for an ``{"type": "error"}`` reply: a message that is
too large, not UTF-8, not JSON, not an object, of an unknown type, or whose
fields are wrong. A trailing NUL is ignored (C peers such as sctp_darn send
strlen + 1 bytes).

Control messages travel on stream ``Stream.CONTROL`` (ordered), telemetry on
``Stream.TELEMETRY`` (may be unordered), sealed, with payload protocol id
``PPID`` (53, IANA's "WebRTC Binary": the wire bytes are not text); vigil
also accepts 0 (unspecified).

Pure: no socket, no clock.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

from server.link import entities, seal
from server.link.entities import PROTOCOL, Entity, Value

DEVICE_ID = seal.DEVICE_ID  # it appears in URLs (and in clear in the handshake)
DEVICE_ID_RULE = seal.DEVICE_ID_RULE
# Dead-peer detection, the same at both ends (server/control/channel.py's header has the
# arithmetic): SCTP heartbeats every HEARTBEAT_MS, PATH_MAX_RETRANS retransmissions.
HEARTBEAT_MS = 400
PATH_MAX_RETRANS = 4

MAX_MESSAGE = seal.MAX_PLAINTEXT  # bytes of one JSON message, either direction (Noise's cap)
MAX_SEALED = MAX_MESSAGE + max(seal.OVERHEAD.values())  # bytes of one on the wire
MAX_NAME = 100  # characters of a device's display name
MAX_ERROR = 500  # characters of a failed result's error text

# Payload protocol identifiers accepted on receive: 0 (unspecified, what most
# tools send) and 53, IANA's "WebRTC Binary" (sealed bytes), which we send.
PPID = 53
ACCEPTED_PPIDS = frozenset({0, PPID})


class Stream(enum.IntEnum):
    CONTROL = seal.CONTROL  # handshake, hello, welcome, command, result, error: ordered
    TELEMETRY = seal.TELEMETRY  # telemetry: may be unordered


# -- vigil -> device ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome:
    """The sealed hello opened: the association is device ``device`` now."""

    device: str


@dataclass(frozen=True, slots=True)
class Command:
    """Set ``entity`` to ``value`` (a button: press it, ``value`` None); answer with a
    ``Result`` of the same ``id``. vigil checked the value against the entity."""

    id: str
    entity: str
    value: Value
    user: str  # who sent it


@dataclass(frozen=True, slots=True)
class Error:
    """A malformed message (the association stays up), or a refusal (then an ABORT)."""

    error: str


# -- device -> vigil ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    device: str
    name: str
    entities: tuple[Entity, ...]  # empty unless ``protocol`` is ``PROTOCOL``
    protocol: int | None = PROTOCOL  # None: the hello named no protocol (a first agent)


@dataclass(frozen=True, slots=True)
class Result:
    """The answer to a command; ``state``: the entity's state after it (None: not said)."""

    id: str
    ok: bool
    state: Value = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    data: dict[str, Any]


FromServer = Welcome | Command | Error
FromDevice = Hello | Result | Telemetry
Message = FromServer | FromDevice


# -- encoding -----------------------------------------------------------------


def _json_of(msg: Message) -> dict[str, Any]:
    match msg:
        case Welcome(device):
            return {"type": "welcome", "device": device}
        case Command(cid, entity, value, user):
            return {"type": "command", "id": cid, "entity": entity, "value": value, "user": user}
        case Error(text):
            return {"type": "error", "error": text}
        case Hello(device, name, described, protocol):
            out: dict[str, Any] = {"type": "hello", "protocol": protocol, "device": device}
            out["name"] = name
            out["entities"] = [e.as_json() for e in described]
            return out
        case Result(cid, ok, state, error):
            outcome = ({} if state is None else {"state": state}) if ok else {"error": error}
            return {"type": "result", "id": cid, "ok": ok, **outcome}
        case Telemetry(data):
            return {"type": "telemetry", "data": data}
    raise TypeError(f"not a control message: {msg!r}")


def encode(msg: Message) -> bytes:
    """One message as the plaintext of one sealed SCTP message: JSON, ASCII only.

    ASCII (non-ASCII escaped as \\uXXXX) is still UTF-8 JSON for the peer. vigil's
    messages are compact; a device's keep ``json.dumps``' default spacing,
    the bytes the reference agent has always sent.
    """
    compact = isinstance(msg, Welcome | Command | Error)
    separators = (",", ":") if compact else (", ", ": ")
    return json.dumps(_json_of(msg), separators=separators).encode("ascii")


# -- decoding -----------------------------------------------------------------


def too_large(size: int) -> str:
    """The error text for a message of ``size`` bytes over ``MAX_MESSAGE``."""
    return f"message too large: {size} bytes (at most {MAX_MESSAGE})"


def _object(raw: bytes) -> dict[str, Any] | str:
    """The JSON object of one message, or the error text for the reply."""
    if len(raw) > MAX_MESSAGE:
        return too_large(len(raw))
    if raw.endswith(b"\0"):  # C peers seal strlen + 1 bytes (stripped after opening)
        raw = raw[:-1]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"message is not UTF-8 (bad byte at offset {e.start})"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return f"message is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
    except ValueError as e:  # an integer of more than 4,300 digits
        return f"message is not JSON vigil reads: {e}"
    except RecursionError:
        return "message is not JSON: nested too deeply"
    if not isinstance(obj, dict):
        return f"message must be a JSON object, not {type(obj).__name__}"
    return obj


def _hello(obj: dict[str, Any]) -> Hello | str:
    """A hello; one of another protocol is still a ``Hello`` (with no entities), so that
    vigil can refuse it saying which protocol it speaks."""
    device, name = obj.get("device"), obj.get("name")
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        return f"hello: device must be {DEVICE_ID_RULE}"
    if name is None:
        name = device
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        return f"hello: name must be a non-empty string of at most {MAX_NAME} characters"
    protocol = obj.get("protocol")
    if protocol != PROTOCOL:
        given = protocol if isinstance(protocol, int) and not isinstance(protocol, bool) else None
        return Hello(device, name, (), given)
    described = entities.parse(obj.get("entities"))
    if isinstance(described, str):
        return f"hello: {described}"
    return Hello(device, name, described, PROTOCOL)


def _result(obj: dict[str, Any]) -> Result | str:
    cid, ok = obj.get("id"), obj.get("ok")
    if not isinstance(cid, str) or not cid:
        return "result: id must be the command's id (a string)"
    if not isinstance(ok, bool):
        return "result: ok must be true or false"
    if ok:
        state = obj.get("state")
        if state is not None and (
            isinstance(state, list | dict)
            or (isinstance(state, float) and not math.isfinite(state))
        ):
            return "result: state must be true, false, a number, a text or null"
        return Result(cid, True, state)
    error = obj.get("error")
    if not isinstance(error, str) or not error or len(error) > MAX_ERROR:
        return f'result: a failed result needs "error": "<what went wrong>" ({MAX_ERROR} at most)'
    return Result(cid, False, error=error)


def _telemetry(obj: dict[str, Any]) -> Telemetry | str:
    data = obj.get("data")
    if not isinstance(data, dict):
        return "telemetry: data must be an object"
    return Telemetry(data)


def _welcome(obj: dict[str, Any]) -> Welcome | str:
    device = obj.get("device")
    if not isinstance(device, str) or not DEVICE_ID.fullmatch(device):
        return f"welcome: device must be {DEVICE_ID_RULE}"
    return Welcome(device)


def _command(obj: dict[str, Any]) -> Command | str:
    cid, entity, value, user = obj.get("id"), obj.get("entity"), obj.get("value"), obj.get("user")
    if not isinstance(cid, str) or not cid:
        return "command: id must be a non-empty string"
    if not isinstance(entity, str) or not entities.KEY.fullmatch(entity):
        return f"command: entity must be {entities.KEY_RULE}"
    if isinstance(value, list | dict) or (isinstance(value, float) and not math.isfinite(value)):
        return "command: value must be true, false, a number, a text or null"
    if not isinstance(user, str):
        return "command: user must be a string"
    return Command(cid, entity, value, user)


def _error(obj: dict[str, Any]) -> Error | str:
    text = obj.get("error")
    if not isinstance(text, str):
        return "error: error must be a string"
    return Error(text)


_FROM_DEVICE = {"hello": _hello, "result": _result, "telemetry": _telemetry}
_FROM_SERVER = {
    "welcome": _welcome,
    "command": _command,
    "error": _error,
}


def decode_from_device(raw: bytes) -> FromDevice | str:
    """Parse one message a device sent (vigil's side); the message, or an error text."""
    obj = _object(raw)
    if isinstance(obj, str):
        return obj
    kind = obj.get("type")
    decoder = _FROM_DEVICE.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        known = ", ".join(_FROM_DEVICE)
        return f"unknown message type {kind!r} (a device sends: {known})"
    return decoder(obj)


def decode_from_server(raw: bytes) -> FromServer | str:
    """Parse one message vigil sent (the device's side); the message, or an error text."""
    obj = _object(raw)
    if isinstance(obj, str):
        return obj
    kind = obj.get("type")
    decoder = _FROM_SERVER.get(kind) if isinstance(kind, str) else None
    if decoder is None:
        known = ", ".join(_FROM_SERVER)
        return f"unknown message type {kind!r} (vigil sends: {known})"
    return decoder(obj)
