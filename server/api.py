"""The routes: a table from path and method to handler, and the handlers.

Reached only after authentication and the cross-site checks (``Server.handle``).
A handler returns a ``Response``, or None when it took the connection over:
``events`` streams, ``post_command`` parks the request until the device answers.

Paths under /api/ that are not in ``ROUTES`` are 404; other paths are
static files (GET, HEAD). A known path with another method is 405 + Allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from server import static
from server.audit import chat_message
from server.events import preamble
from server.protocol import Request, Response
from server.responses import COMMON_HEADERS, error, json_response

if TYPE_CHECKING:
    from server.app import Server
    from server.connection import Connection

Handler = Callable[["Server", "Connection", Request], Response | None]

MAX_CHAT = 500
SSE_HEADERS = [
    ("Content-Type", "text/event-stream; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
]


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


def me(server: Server, conn: Connection, req: Request) -> Response:
    assert conn.user is not None
    return json_response(200, {"user": conn.user.name, "role": conn.user.role})


def users(server: Server, conn: Connection, req: Request) -> Response:
    return json_response(
        200, {"online": server.presence.online(), "max_users": server.presence.max_users}
    )


def state(server: Server) -> dict[str, Any]:
    """What a ``reset`` event carries: everything a panel shows."""
    return {"online": server.presence.online(), "devices": server.control.devices()}


def events(server: Server, conn: Connection, req: Request) -> Response | None:
    """Server-Sent Events: resume after Last-Event-ID, else start with a reset."""
    if req.method == "HEAD":
        return Response(200, SSE_HEADERS)
    conn.respond(Response(200, SSE_HEADERS, stream=True), req)
    bus = server.events
    last = req.headers.get("last-event-id", "").strip()
    backlog = bus.since(int(last)) if last.isdigit() else None
    if backlog is None:
        conn.push(preamble() + bus.reset(state(server)))
    else:
        conn.push(preamble() + b"".join(e.wire for e in backlog))
    bus.subscribe(conn.id, lambda event: conn.push(event.wire))
    return None


def devices(server: Server, conn: Connection, req: Request) -> Response:
    off = server.control.off_reason
    if off is not None:
        return json_response(503, {"error": f"control channel off: {off}", "devices": []})
    return json_response(200, server.control.devices())


def post_command(server: Server, conn: Connection, req: Request, device: str) -> Response | None:
    """Send a command to ``device`` and park the request until its result (or an error)."""
    user = conn.user
    assert user is not None
    if user.role != "operator":
        return error(403, f"{user.name} is a viewer: viewers cannot send commands")
    body = json_body(req)
    if isinstance(body, Response):
        return body
    action, args = body.get("action"), body.get("args", {})
    if not isinstance(action, str) or not action or not isinstance(args, dict):
        return error(400, 'the body must be {"action": "<name>", "args": {…}}')
    if server.control.off_reason is not None:
        return error(503, server.control.off_reason)
    started = server.loop.now()

    def done(status: int, result: dict[str, Any]) -> None:
        server.audit.append(
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
            latency_ms=round((server.loop.now() - started) * 1000, 1),
        )
        conn.finish(json_response(status, result), req)

    conn.parked = True
    server.control.command(device, action, args, user.name, done)
    return None


def chat_history(server: Server, conn: Connection, req: Request) -> Response:
    return json_response(200, {"messages": list(server.audit.chat)})


def chat_post(server: Server, conn: Connection, req: Request) -> Response:
    assert conn.user is not None
    body = json_body(req)
    if isinstance(body, Response):
        return body
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return error(400, 'the body must be {"text": "<message>"} with a non-empty text')
    if len(text) > MAX_CHAT:
        return error(400, f"a chat message has at most {MAX_CHAT} characters")
    record = server.audit.append("chat", user=conn.user.name, text=text)
    message = chat_message(record)
    server.events.publish("chat", message)
    return json_response(200, message)


def audit(server: Server, conn: Connection, req: Request) -> Response:
    params = dict(p.partition("=")[::2] for p in req.query.split("&") if p)
    raw = params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        return error(400, "limit must be a whole number from 1 to 1000")
    return json_response(200, {"records": server.audit.newest(int(raw))})


def static_file(server: Server, conn: Connection, req: Request) -> Response:
    rel = static.resolve(req.path)
    file = server.files.get(rel) if rel is not None else None
    if file is None:
        return error(404, "not found")
    headers = [
        ("Content-Type", file.content_type),
        ("ETag", file.etag),
        ("Last-Modified", file.last_modified),
        ("Cache-Control", "private, no-cache"),
        *COMMON_HEADERS,
    ]
    if static.not_modified(file, req.headers):
        return Response(304, headers)
    return Response(200, headers, file.body)


ROUTES: dict[str, dict[str, Handler]] = {
    "/api/me": {"GET": me},
    "/api/users": {"GET": users},
    "/api/events": {"GET": events},
    "/api/devices": {"GET": devices},
    "/api/chat": {"GET": chat_history, "POST": chat_post},
    "/api/audit": {"GET": audit},
}
STATIC_METHODS: dict[str, Handler] = {"GET": static_file}


def _methods(table: dict[str, Handler]) -> str:
    names = set(table) | ({"HEAD"} if "GET" in table else set())
    return ", ".join(sorted(names))


def dispatch(server: Server, conn: Connection, req: Request) -> Response | None:
    """Route ``req`` to its handler (404/405 when there is none)."""
    path = req.path
    method = "GET" if req.method == "HEAD" else req.method
    table = ROUTES.get(path)
    if table is None and path.startswith("/api/devices/") and path.endswith("/commands"):
        device = path[len("/api/devices/") : -len("/commands")]
        if device and "/" not in device:
            if method != "POST":
                return error(405, "method not allowed", [("Allow", "POST")])
            return post_command(server, conn, req, device)
    if table is None:
        if path.startswith("/api/"):
            return error(404, f"no such API endpoint: {path}")
        table = STATIC_METHODS
    handler = table.get(method)
    if handler is None:
        return error(405, "method not allowed", [("Allow", _methods(table))])
    return handler(server, conn, req)
