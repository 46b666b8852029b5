"""The handlers and the one routing table (``ROUTER``).

A handler is a function ``(context, call) -> Outcome``: it reads the
request and the services it needs (``Context``: the shared
``core.services.Services`` and the static files) and returns a ``Response``,
a ``Stream`` (``/api/events``) or a ``Deferred`` (a command, answered when
the device replies). It never touches a socket or a connection. What
changes is announced through ``core.announcer``; a command takes the one
path every sender takes (``core.commands.Command``).

Handlers are reached after the gate (``web.gate``: authentication,
presence, the cross-site checks), except routes marked ``public``
(``/healthz``, allow-list only) and ``scraper`` (``/metrics``: the
scraper's bearer token instead of a person's credentials). Paths under
/api/ that are not in the table are 404; other paths are static files
(GET, HEAD); a known path with another method is 405 + Allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, cast

from server.base import jsontext
from server.base.buckets import Rate
from server.base.dates import iso_utc
from server.core.commands import Command, too_fast, too_much, viewer_refusal
from server.core.services import Services
from server.feed.bus import parse_event_id, preamble
from server.link.entities import Value
from server.people.auth import Authenticator, Verdict
from server.people.leases import Held
from server.people.sessions import Session, User
from server.web import static
from server.web.outcomes import Deferred, Outcome, Push, Stream
from server.web.protocol import Request, Response
from server.web.responses import JSON_HEADERS, error, json_response
from server.web.router import Route, Router
from server.web.static import FileCache

MAX_CHAT = 500
SSE_HEADERS = (
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
)
HEALTHZ = Response(200, (("Content-Type", "text/plain"), ("Cache-Control", "no-store")), b"ok\n")


# The metrics in Prometheus's text format, and its Content-Type (``web.metrics``).
Scrape = Callable[[], tuple[bytes, str]]
SCRAPER = "scraper"  # the key of the scrape budget: every scraper together


@dataclass(slots=True)
class Context(Services):
    """What handlers may use: the shared services, the static files (new on SIGHUP), the
    authenticator (sessions, step-up proofs), the metrics (None until ``[metrics]`` names a
    token) and their budget."""

    files: FileCache
    auth: Authenticator
    scrape_rate: Rate = field(kw_only=True)
    scrape: Scrape | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it."""

    request: Request
    user: User | None  # None only on public routes
    params: dict[str, str]
    session: Session | None = None  # the login it belongs to (None only on public routes)
    addr: str = ""  # the client's address

    @property
    def who(self) -> User:
        assert self.user is not None, "an authenticated route"
        return self.user

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (no percent-decoding: values here are numbers)."""
        return dict(p.partition("=")[::2] for p in self.request.query.split("&") if p)


Handler = Callable[[Context, Call], Outcome]


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


def healthz(svc: Context, call: Call) -> Response:
    return HEALTHZ


def me(svc: Context, call: Call) -> Response:
    return _me(call.who)


@lru_cache(maxsize=64)
def _me(user: User) -> Response:
    """The same body for the same person, every time: made once (a panel asks often)."""
    return json_response(200, {"user": user.name, "role": user.role})


def users(svc: Context, call: Call) -> Response:
    return json_response(
        200,
        {
            "online": [p.as_json() for p in svc.presence.online()],
            "max_users": svc.presence.max_users,
        },
    )


def events(svc: Context, call: Call) -> Stream:
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
            push(preamble() + bus.reset(svc.snapshot()))
        else:
            push(preamble() + b"".join(e.wire for e in backlog))
        return bus.subscribe(lambda event: push(event.wire))

    return Stream(SSE_HEADERS, open_stream)


def devices(svc: Context, call: Call) -> Response:
    off = svc.control.off_message
    if off is not None:
        return json_response(503, {"error": off, "devices": []})
    return json_response(200, [d.as_json() for d in svc.devices()])


def telemetry(svc: Context, call: Call) -> Response:
    """The last minutes of a device's numeric telemetry (``control.History``)."""
    device = call.params["id"]
    history = svc.control.telemetry(device)
    if history is None:
        return error(404, f"unknown device {device!r}")
    return json_response(200, history)


def post_command(svc: Context, call: Call) -> Outcome:
    """Set an entity of device ``{id}`` (``{"entity": key, "value": v}``); the answer comes
    with the device's result and the entity's state (or an error)."""
    body = json_body(call.request)
    if isinstance(body, Response):
        return body
    entity, value = body.get("entity"), body.get("value")
    refused = too_much(svc, call.who, entity, value)
    if refused is not None:
        return json_response(*refused)
    assert isinstance(entity, str)  # too_much checked it, and that value is plain
    value = cast(Value, value)
    refused_step = step_up(svc, call, call.params["id"], entity, value)
    if refused_step is not None:
        return refused_step
    command = Command(svc, call.who, call.params["id"], entity, value)
    return Deferred(command.start, lambda answer: json_response(*command.settle(answer)))


STEP_UP = "x-vigil-step-up"  # the header that carries a step-up proof


def step_up(svc: Context, call: Call, device_id: str, key: str, value: Value) -> Response | None:
    """A person's command on an entity that asks to confirm needs a fresh proof: their
    current code (with a second factor) or their password, in ``X-Vigil-Step-Up`` now
    or within ``[auth] step_up_window`` s before. 403 without it (``"step_up"`` says
    which proof), 429 while locked; a proof sent is audited (``step_up``)."""
    device, who, session = svc.control.device(device_id), call.who, call.session
    entity = next((e for e in device.entities if e.key == key), None) if device else None
    if entity is None or not entity.confirm or session is None or who.role != "operator":
        return None  # the command path says what is wrong, if anything
    if svc.control.check(device_id, key, value) is not None:
        return None  # refused anyway (offline, a value the entity cannot take): no proof asked
    account = svc.auth.users.get(who.name)
    proof_kind = "code" if account is not None and account.totp else "password"
    what = "the current 6-digit code" if proof_kind == "code" else "your password"
    raw = call.request.headers.get(STEP_UP)  # its bytes as Latin-1: a password's are UTF-8
    proof = raw.encode("latin-1").decode("utf-8", "replace") if raw else None
    result = svc.auth.step_up(session, proof, call.addr, svc.now(), svc.wall())
    if proof:
        svc.audit.append(
            "step_up",
            user=who.name,
            addr=call.addr,
            device=device_id,
            entity=key,
            proof=proof_kind,
            ok=result.verdict is Verdict.OK,
        )
    if result.verdict is Verdict.OK:
        return None
    if result.verdict in (Verdict.LOCKED, Verdict.BUSY):
        retry = str(result.retry_after)
        return error(
            429, f"too many wrong proofs; try again in {retry} s", [("Retry-After", retry)]
        )
    minutes = f"{svc.auth.step_up_window / 60:g} min"
    if result.verdict is Verdict.MISSING:
        message = (
            f"{device_id}.{key} asks to confirm: send {what} in the X-Vigil-Step-Up header"
            f" (it then covers such commands for {minutes})"
        )
    else:
        message = f"step-up refused: not {what}"
    return json_response(403, {"error": message, "step_up": proof_kind})


def session_info(svc: Context, call: Call) -> Response:
    """The caller's own session: since, from where, when it expires, a fresh step-up."""
    session = call.session
    assert session is not None
    sessions = svc.auth.sessions
    when = session.expiry(sessions.idle, sessions.max_age)
    why = session.expired_because(sessions.idle, sessions.max_age)
    now, wall = svc.now(), svc.wall()
    stepped = session.stepped is not None and now - session.stepped <= svc.auth.step_up_window
    return json_response(
        200,
        {
            "user": session.user.name,
            "role": session.user.role,
            "totp": session.totp,
            "since": iso_utc(session.since),
            "addr": session.addr,
            "expires": iso_utc(wall + when - now),
            "expires_because": why,
            "step_up": stepped,
        },
    )


def logout(svc: Context, call: Call) -> Response:
    """End the caller's session: the same header gets 401 from now on."""
    assert call.session is not None
    svc.auth.sessions.end([call.session], "you logged out", svc.now())
    return json_response(200, {"ended": 1})


def people(svc: Context, call: Call) -> Response:
    """Operators: everyone who may log in, whether they have a second factor, their sessions."""
    refused = viewer_refusal(call.who, "see everyone's sessions")
    if refused is not None:
        return error(403, refused)
    auth = svc.auth
    now, wall = svc.now(), svc.wall()
    out = []
    for name in sorted(auth.users):
        account = auth.users[name]
        sessions = [
            {
                "since": iso_utc(s.since),
                "addr": s.addr,
                "expires": iso_utc(
                    wall + s.expiry(auth.sessions.idle, auth.sessions.max_age) - now
                ),
            }
            for s in auth.sessions.of(name)
        ]
        role = auth.user(account).role
        out.append({"user": name, "role": role, "totp": bool(account.totp), "sessions": sessions})
    return json_response(200, {"people": out})


def end_sessions(svc: Context, call: Call) -> Response:
    """Operators: end every session of ``{user}``; they see who did it in their 401."""
    refused = viewer_refusal(call.who, "end other people's sessions")
    if refused is not None:
        return error(403, refused)
    name = call.params["user"]
    if name not in svc.auth.users:
        return error(404, f"no user {name!r}")
    ended = svc.auth.sessions.end(
        svc.auth.sessions.of(name), f"ended by {call.who.name}", svc.now()
    )
    return json_response(200, {"user": name, "ended": ended})


def take_lease(svc: Context, call: Call) -> Response:
    """Hold device ``{id}`` (``{"take_over": true}``: even if someone else does)."""
    refused = viewer_refusal(call.who, "hold a device")
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
    svc.announcer.lease_changes(changes)
    lease = svc.leases.of(device)
    assert lease is not None
    return json_response(200, {"device": device, "lease": lease.as_json()})


def release_lease(svc: Context, call: Call) -> Response:
    """Let go of device ``{id}``; 409 if someone else holds it."""
    device = call.params["id"]
    if svc.control.device(device) is None:
        return error(404, f"unknown device {device!r}")
    changes = svc.leases.release(device, call.who.name)
    if isinstance(changes, Held):
        return json_response(409, changes.body())
    svc.announcer.lease_changes(changes)
    return json_response(200, {"device": device, "lease": None})


def chat_history(svc: Context, call: Call) -> Response:
    return json_response(200, {"messages": list(svc.audit.chat)})


def chat_post(svc: Context, call: Call) -> Response:
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
        return json_response(*too_fast("chat messages", wait))
    return json_response(200, svc.announcer.chat(call.who.name, text).as_json())


def audit(svc: Context, call: Call) -> Response:
    raw = call.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(400, "limit must be a whole number from 1 to 1000")
    return Response(200, JSON_HEADERS, svc.audit.newest_json(int(raw)))


def metrics(svc: Context, call: Call) -> Response:
    """Prometheus's scrape (the gate checked the scraper's token): 429 past the budget."""
    wait = svc.scrape_rate.take(SCRAPER, svc.now())
    if wait:
        return json_response(*too_fast("scrapes", wait))
    assert svc.scrape is not None, "the gate lets a scraper in only once [metrics] is on"
    body, content_type = svc.scrape()
    return Response(200, (("Content-Type", content_type), ("Cache-Control", "no-store")), body)


def static_file(svc: Context, call: Call) -> Response:
    req = call.request
    rel = static.resolve(req.path)
    file = svc.files.get(rel, svc.now()) if rel is not None else None
    if file is None:
        return error(404, "not found")
    if static.not_modified(file, req.headers):
        return Response(304, file.headers)
    return Response(200, file.headers, file.body)


ROUTER: Router[Handler] = Router(
    [
        Route("/healthz", {"GET": healthz}, public=True),
        Route("/api/me", {"GET": me}),
        Route("/api/session", {"GET": session_info}),
        Route("/api/logout", {"POST": logout}),
        Route("/api/people", {"GET": people}),
        Route("/api/people/{user}/sessions", {"DELETE": end_sessions}),
        Route("/api/users", {"GET": users}),
        Route("/api/events", {"GET": events}),
        Route("/api/devices", {"GET": devices}),
        Route("/api/devices/{id}/commands", {"POST": post_command}),
        Route("/api/devices/{id}/lease", {"POST": take_lease, "DELETE": release_lease}),
        Route("/api/devices/{id}/telemetry", {"GET": telemetry}),
        Route("/api/chat", {"GET": chat_history, "POST": chat_post}),
        Route("/api/audit", {"GET": audit}),
        Route("/metrics", {"GET": metrics}, scraper=True),
    ],
    fallback=Route("/", {"GET": static_file}),
)
