"""The handlers and the one routing table (``ROUTER``).

A handler is a function ``(services, call) -> Outcome``: it reads the
request and the services it needs (``Services``, a narrow view the server
hands out) and returns a ``Response``, a ``Stream`` (``/api/events``) or a
``Deferred`` (a command, answered when the device replies). It never
touches a socket or a connection.

Commands have one path whoever sends them (``Command``: a browser or
curl through ``post_command``, the MQTT bridge): the role, the device's
lease (``server.people.leases``: another holder means 409, a free device is taken
for its sender), the control channel, one audit record.

Handlers are reached after the gate in ``Server.handle`` (authentication,
presence, the cross-site checks), except routes marked ``public``
(``/healthz``, allow-list only). Paths under /api/ that are not in the table
are 404; other paths are static files (GET, HEAD); a known path with
another method is 405 + Allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.base import jsontext
from server.base.buckets import Rate, retry_after
from server.config import User
from server.control.channel import ControlChannel
from server.feed.audit import AuditLog, chat_message
from server.feed.bus import EventBus, parse_event_id, preamble
from server.people.leases import Change, Held, Leases
from server.people.presence import Presence
from server.web import static
from server.web.outcomes import Deferred, Outcome, Push, Stream
from server.web.protocol import Request, Response
from server.web.responses import JSON_HEADERS, error, json_response
from server.web.router import Route, Router
from server.web.static import FileCache

MAX_CHAT = 500
MAX_ACTION = 64  # characters of a command's action
MAX_ARGS = 2048  # bytes of a command's args as JSON: they are audited and sent to the device
SSE_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
)
HEALTHZ = Response(200, (("Content-Type", "text/plain"), ("Cache-Control", "no-store")), b"ok\n")


@dataclass(slots=True)
class Services:
    """What handlers may use; the server owns them (``files`` changes on SIGHUP)."""

    presence: Presence
    events: EventBus
    control: ControlChannel
    audit: AuditLog
    files: FileCache
    leases: Leases
    announce_leases: Callable[[list[Change]], None]  # the server's (audit, log, event)
    now: Callable[[], float]  # the loop's monotonic clock
    wall: Callable[[], float]  # epoch seconds, for the ``since`` people read
    chat_rate: Rate  # chat messages per person
    command_rate: Rate  # commands per person (HTTP) or fleet user (MQTT)


def _too_fast(what: str, wait: float) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """429 for one person's ``what`` beyond their rate (``[limits]``): status, body, headers."""
    retry = retry_after(wait)
    body = {"error": f"too many {what}; try again in {retry} s", "retry_after": retry}
    return 429, body, [("Retry-After", str(retry))]


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    request: Request
    user: User | None  # None only on public routes
    params: dict[str, str]

    @property
    def who(self) -> User:
        assert self.user is not None, "an authenticated route"
        return self.user

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (no percent-decoding: values here are numbers)."""
        return dict(p.partition("=")[::2] for p in self.request.query.split("&") if p)


Handler = Callable[[Services, Call], Outcome]


def json_body(req: Request) -> dict[str, Any] | Response:
    """The request body as a JSON object, or the 415/400 response to send instead."""
    ctype = req.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        return error(415, "the body must be JSON (Content-Type: application/json)")
    try:
        data = jsontext.loads(req.body)
    except ValueError as e:
        return error(400, f"the body is not valid UTF-8 JSON: {e}")
    if not isinstance(data, dict):
        return error(400, "the body must be a JSON object")
    return data


# -- handlers ------------------------------------------------------------------


def healthz(svc: Services, call: Call) -> Response:
    return HEALTHZ


def me(svc: Services, call: Call) -> Response:
    return json_response(200, {"user": call.who.name, "role": call.who.role})


def users(svc: Services, call: Call) -> Response:
    return json_response(
        200, {"online": svc.presence.online(), "max_users": svc.presence.max_users}
    )


def state(svc: Services) -> dict[str, Any]:
    """What a ``reset`` event carries: everything a panel shows."""
    return {
        "online": svc.presence.online(),
        "devices": [svc.leases.annotate(d) for d in svc.control.devices()],
        "control_off": svc.control.off_message,
    }


def events(svc: Services, call: Call) -> Stream:
    """Server-Sent Events: resume after Last-Event-ID (or ?last_event_id=), else a reset.

    The query parameter is for a new EventSource that continues another's
    stream (the panel's tab that takes over as leader), which cannot set
    the header.
    """
    last = call.request.headers.get("last-event-id", "").strip() or call.query.get(
        "last_event_id", ""
    )

    def open_stream(push: Push) -> Callable[[], None]:
        bus = svc.events
        last_id = parse_event_id(last)
        backlog = bus.since(last_id) if last_id is not None else None
        if backlog is None:
            push(preamble() + bus.reset(state(svc)))
        else:
            push(preamble() + b"".join(e.wire for e in backlog))
        return bus.subscribe(lambda event: push(event.wire))

    return Stream(SSE_HEADERS, open_stream)


def devices(svc: Services, call: Call) -> Response:
    off = svc.control.off_message
    if off is not None:
        return json_response(503, {"error": off, "devices": []})
    return json_response(200, [svc.leases.annotate(d) for d in svc.control.devices()])


def telemetry(svc: Services, call: Call) -> Response:
    """The last minutes of a device's numeric telemetry (``control.History``)."""
    device = call.params["id"]
    history = svc.control.telemetry(device)
    if history is None:
        return error(404, f"unknown device {device!r}")
    return json_response(200, history)


def _viewer(user: User, what: str) -> str | None:
    """The 403 text if ``user`` is a viewer, who cannot do ``what``."""
    return None if user.role == "operator" else f"{user.name} is a viewer: viewers cannot {what}"


Answer = tuple[int, dict[str, Any]]  # HTTP status and JSON body


class Command:
    """One command, whoever sends it: ``start`` issues it, ``settle`` records its answer.

    ``start(done)``: refused (403) for viewers; refused as the control
    channel would (404, 503, 400: unknown device, offline, unknown action);
    409 with the holder while someone else holds the device; else a free
    device is leased to the sender first when ``take`` (a person's command;
    a channel without presence only checks), and the command goes out.
    ``done(answer)`` comes exactly once, perhaps at once.
    ``settle(answer)`` appends the ``command`` audit record and returns the
    answer to give; HTTP calls it inside the connection's error boundary
    (``Deferred.finish``), so a record that cannot be written is a 500.
    """

    def __init__(
        self,
        svc: Services,
        user: User,
        device: str,
        action: str,
        args: dict[str, Any],
        *,
        take: bool = True,
    ) -> None:
        self.svc, self.user, self.device, self.action, self.args = svc, user, device, action, args
        self.take = take
        self.started = svc.now()

    def start(self, done: Callable[[Answer], None]) -> None:
        svc, user, device = self.svc, self.user, self.device
        refused = _viewer(user, "send commands")
        if refused is not None:
            done((403, {"error": refused}))
            return
        refusal = svc.control.unavailable(device, self.action)
        if refusal is not None:
            done((refusal.status, {"error": refusal.error}))
            return
        if self.take:
            lease = svc.leases.take(device, user.name, self.started, svc.wall())
        else:
            lease = svc.leases.check(device, user.name) or []
        if isinstance(lease, Held):
            done((409, lease.body()))
            return
        svc.announce_leases(lease)
        svc.control.command(device, self.action, self.args, user.name, lambda *a: done(a))

    def settle(self, answer: Answer) -> Answer:
        status, result = answer
        self.svc.audit.append(
            "command",
            id=result.get("id"),
            user=self.user.name,
            device=self.device,
            action=self.action,
            args=self.args,
            status=status,
            ok=bool(result.get("ok")),
            result=result.get("result"),
            error=result.get("error"),
            latency_ms=round((self.svc.now() - self.started) * 1000, 1),
        )
        return answer


def too_much(
    svc: Services, user: User, action: str, args: dict[str, Any]
) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
    """A command refused before it is one (not audited): args too large (400), or more
    commands than ``user`` may send (429); the status, body and headers to answer."""
    if len(action) > MAX_ACTION or len(jsontext.dumps(args)) > MAX_ARGS:
        message = f"action has at most {MAX_ACTION} characters and args at most {MAX_ARGS} bytes"
        return 400, {"error": message}, []
    wait = svc.command_rate.take(user.name, svc.now())
    return _too_fast("commands", wait) if wait else None


def issue_command(
    svc: Services,
    user: User,
    device: str,
    action: str,
    args: dict[str, Any],
    done: Callable[[int, dict[str, Any]], None],
    *,
    take: bool = True,
) -> None:
    """A ``Command`` for a channel without a connection (MQTT): started, then settled."""
    refused = too_much(svc, user, action, args)
    if refused is not None:
        done(*refused[:2])
        return
    command = Command(svc, user, device, action, args, take=take)
    command.start(lambda answer: done(*command.settle(answer)))


def post_command(svc: Services, call: Call) -> Outcome:
    """Send a command to device ``{id}``; the answer comes with its result (or an error)."""
    body = json_body(call.request)
    if isinstance(body, Response):
        return body
    action, args = body.get("action"), body.get("args", {})
    if not isinstance(action, str) or not action or not isinstance(args, dict):
        return error(400, 'the body must be {"action": "<name>", "args": {…}}')
    refused = too_much(svc, call.who, action, args)
    if refused is not None:
        return json_response(*refused)
    command = Command(svc, call.who, call.params["id"], action, args)
    return Deferred(command.start, lambda answer: json_response(*command.settle(answer)))


def take_lease(svc: Services, call: Call) -> Response:
    """Hold device ``{id}`` (``{"take_over": true}``: even if someone else does)."""
    refused = _viewer(call.who, "hold a device")
    if refused is not None:
        return error(403, refused)
    body = json_body(call.request) if call.request.body else {}
    if isinstance(body, Response):
        return body
    take_over = body.get("take_over", False)
    if not isinstance(take_over, bool):
        return error(400, 'take_over must be true or false: {"take_over": true}')
    device = call.params["id"]
    refusal = svc.control.unavailable(device)
    if refusal is not None:
        return error(refusal.status, refusal.error)
    changes = svc.leases.take(device, call.who.name, svc.now(), svc.wall(), take_over)
    if isinstance(changes, Held):
        return json_response(409, changes.body())
    svc.announce_leases(changes)
    lease = svc.leases.of(device)
    assert lease is not None
    return json_response(200, {"device": device, "lease": lease.as_json()})


def release_lease(svc: Services, call: Call) -> Response:
    """Let go of device ``{id}``; 409 if someone else holds it."""
    device = call.params["id"]
    if svc.control.device(device) is None:
        return error(404, f"unknown device {device!r}")
    changes = svc.leases.release(device, call.who.name)
    if isinstance(changes, Held):
        return json_response(409, changes.body())
    svc.announce_leases(changes)
    return json_response(200, {"device": device, "lease": None})


def chat_history(svc: Services, call: Call) -> Response:
    return json_response(200, {"messages": list(svc.audit.chat)})


def chat_post(svc: Services, call: Call) -> Response:
    body = json_body(call.request)
    if isinstance(body, Response):
        return body
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return error(400, 'the body must be {"text": "<message>"} with a non-empty text')
    if len(text) > MAX_CHAT:
        return error(400, f"a chat message has at most {MAX_CHAT} characters")
    wait = svc.chat_rate.take(call.who.name, svc.now())
    if wait:
        return json_response(*_too_fast("chat messages", wait))
    record = svc.audit.append("chat", user=call.who.name, text=text)
    message = chat_message(record)
    svc.events.publish("chat", message)
    return json_response(200, message)


def audit(svc: Services, call: Call) -> Response:
    raw = call.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(400, "limit must be a whole number from 1 to 1000")
    return Response(200, JSON_HEADERS, svc.audit.newest_json(int(raw)))


def static_file(svc: Services, call: Call) -> Response:
    req = call.request
    rel = static.resolve(req.path)
    file = svc.files.get(rel) if rel is not None else None
    if file is None:
        return error(404, "not found")
    if static.not_modified(file, req.headers):
        return Response(304, file.headers)
    return Response(200, file.headers, file.body)


ROUTER: Router[Handler] = Router(
    [
        Route("/healthz", {"GET": healthz}, public=True),
        Route("/api/me", {"GET": me}),
        Route("/api/users", {"GET": users}),
        Route("/api/events", {"GET": events}),
        Route("/api/devices", {"GET": devices}),
        Route("/api/devices/{id}/commands", {"POST": post_command}),
        Route("/api/devices/{id}/lease", {"POST": take_lease, "DELETE": release_lease}),
        Route("/api/devices/{id}/telemetry", {"GET": telemetry}),
        Route("/api/chat", {"GET": chat_history, "POST": chat_post}),
        Route("/api/audit", {"GET": audit}),
    ],
    fallback=Route("/", {"GET": static_file}),
)
