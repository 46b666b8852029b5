"""Building responses: common headers, JSON bodies, errors (boa's response.c).

Every error is JSON ``{"error": "…"}`` with ``Cache-Control: no-store``; the
one exception is the user-cap page for browsers, a short HTML page.
"""

from __future__ import annotations

from typing import Any

from server.base.jsontext import dumps
from server.web.protocol import Response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
COMMON_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", CSP))
# On every HTTPS response (RFC 6797). A browser ignores it while it does not trust the
# certificate (§8.1) and for an address (§8.1.1), so a self-signed panel reached by IP
# stays reachable; once the name and certificate are trusted, never plain HTTP again.
HSTS = (("Strict-Transport-Security", "max-age=31536000"),)
# CSP matters only for documents; JSON needs nosniff.
JSON_HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)
CAP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vigil: the panel is full</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>The panel is full</h1>
<p>{max_users} people are online, the most this panel allows at once.</p>
<p>Try again in {retry} seconds: reload this page.</p></main></body></html>
"""


def json_response(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = dumps(data).encode()
    return Response(status, [*JSON_HEADERS, *headers] if headers else JSON_HEADERS, body)


def error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def unauthorized(realm: str, message: str) -> Response:
    return error(401, message, [("WWW-Authenticate", f'Basic realm="{realm}", charset="UTF-8"')])


def panel_full(max_users: int, retry: int, html: bool) -> Response:
    """503 for one user too many: an HTML page for browsers, JSON for the rest."""
    headers = [("Retry-After", str(retry))]
    if html:
        page = CAP_PAGE.format(max_users=max_users, retry=retry).encode()
        return Response(
            503,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Cache-Control", "no-store"),
                *COMMON_HEADERS,
                *headers,
            ],
            page,
        )
    message = (
        f"the panel is full: {max_users} people are online, the most it allows; "
        f"try again in {retry} s"
    )
    return json_response(503, {"error": message, "retry_after": retry}, headers)
