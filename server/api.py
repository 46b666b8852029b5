"""The handlers and the one routing table (``ROUTER``).

A handler is a function ``(services, call) -> Outcome``: it reads the
request and the services it needs (``Services``, a narrow view the server
hands out) and returns a ``Response``, a ``Stream`` (``/api/events``) or a
``Deferred`` (a command, answered when the device replies). It never
touches a socket or a connection.

Handlers are reached after the gate in ``Server.handle`` (authentication,
presence, the cross-site checks), except routes marked ``public``
(``/healthz``, allow-list only). Paths under /api/ that are not in the table
are 404; other paths are static files (GET, HEAD); a known path with
another method is 405 + Allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server import static
from server.audit import AuditLog, chat_message
from server.config import User
from server.events import EventBus, preamble
from server.outcomes import Deferred, Outcome, Push, Stream
from server.presence import Presence
from server.protocol import Request, Response
from server.responses import error, json_response
from server.router import Route, Router
from server.sctpchannel import ControlChannel
from server.static import FileCache

MAX_CHAT = 500
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
    now: Callable[[], float]  # the loop's monotonic clock


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


Handler = Callable[[Services, Call], Outcome]


def json_body(req: Request) -> dict[str, Any] | Response:
    """The request body as a JSON object, or the 415/400 response to send instead."""
    ctype = req.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/json":
        return error(415, "the body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(req.body.decode("utf-8"))
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # no lone surrogates ("\ud800")
    except (UnicodeDecodeError, ValueError):  # UnicodeEncodeError is a ValueError
        return error(400, "the body is not valid UTF-8 JSON")
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
    return {"online": svc.presence.online(), "devices": svc.control.devices()}


def events(svc: Services, call: Call) -> Stream:
    """Server-Sent Events: resume after Last-Event-ID, else start with a reset."""
    last = call.request.headers.get("last-event-id", "").strip()

    def open_stream(push: Push) -> Callable[[], None]:
        bus = svc.events
        backlog = bus.since(int(last)) if last.isdigit() else None
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
    return json_response(200, svc.control.devices())


def post_command(svc: Services, call: Call) -> Outcome:
    """Send a command to device ``{id}``; the answer comes with its result (or an error)."""
    user = call.who
    if user.role != "operator":
        return error(403, f"{user.name} is a viewer: viewers cannot send commands")
    body = json_body(call.request)
    if isinstance(body, Response):
        return body
    action, args = body.get("action"), body.get("args", {})
    if not isinstance(action, str) or not action or not isinstance(args, dict):
        return error(400, 'the body must be {"action": "<name>", "args": {…}}')
    device = call.params["id"]
    started = svc.now()

    def start(done: Callable[[tuple[int, dict[str, Any]]], None]) -> None:
        svc.control.command(device, action, args, user.name, lambda *answer: done(answer))

    def finish(answer: tuple[int, dict[str, Any]]) -> Response:
        status, result = answer
        svc.audit.append(
            "command",
            id=result.get("id"),
            user=user.name,
            device=device,
            action=action,
            args=args,
            status=status,
            ok=bool(result.get("ok")),
            result=result.get("result"),
            error=result.get("error"),
            latency_ms=round((svc.now() - started) * 1000, 1),
        )
        return json_response(status, result)

    return Deferred(start, finish)


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
    record = svc.audit.append("chat", user=call.who.name, text=text)
    message = chat_message(record)
    svc.events.publish("chat", message)
    return json_response(200, message)


def audit(svc: Services, call: Call) -> Response:
    params = dict(p.partition("=")[::2] for p in call.request.query.split("&") if p)
    raw = params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(400, "limit must be a whole number from 1 to 1000")
    return json_response(200, {"records": svc.audit.newest(int(raw))})


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
        Route("/api/chat", {"GET": chat_history, "POST": chat_post}),
        Route("/api/audit", {"GET": audit}),
    ],
    fallback=Route("/", {"GET": static_file}),
)
