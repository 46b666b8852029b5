"""The access log: Common Log Format plus the user, written once a second, in order."""

from __future__ import annotations

import os
import re
from pathlib import Path

from server.web.accesslog import MAX_LINES, AccessLog
from tests.testclient import App

CLF = re.compile(
    r'^(\S+) - (\S+) \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "([^"]*)" (\d{3}) (\d+)$'
)


def read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20).decode()
    except BlockingIOError:
        return ""


def test_lines_wait_for_flush_and_keep_their_order() -> None:
    r, w = os.pipe()
    log = AccessLog(w)
    log.record("10.0.0.1", "alice", "21/Nov/2026:06:32:03 +0000", "GET / HTTP/1.1", 200, 5)
    log.record("10.0.0.2", "-", "21/Nov/2026:06:32:03 +0000", "-", 408, 40)
    assert read_all(r) == ""
    log.flush()
    assert read_all(r).splitlines() == [
        '10.0.0.1 - alice [21/Nov/2026:06:32:03 +0000] "GET / HTTP/1.1" 200 5',
        '10.0.0.2 - - [21/Nov/2026:06:32:03 +0000] "-" 408 40',
    ]
    for i in range(MAX_LINES):  # a full buffer is written without waiting
        log.record("a", "-", "t", f"GET /{i} HTTP/1.1", 200, 0)
    assert len(read_all(r).splitlines()) == MAX_LINES
    os.close(r)
    os.close(w)


def test_every_response_is_logged_within_a_second(tmp_path: Path) -> None:
    app = App(tmp_path)
    r, w = os.pipe()
    assert app.server.access is not None
    app.server.access = AccessLog(w)
    c = app.client("10.1.2.3")
    me, missing = c.get("/api/me"), c.get("/api/nothing", user="bob")
    app.advance(1.5)  # the sweep writes the log
    lines = [CLF.match(line) for line in read_all(r).splitlines()]
    assert [m.groups() if m else None for m in lines] == [
        ("10.1.2.3", "alice", "GET /api/me HTTP/1.1", "200", str(len(me.body))),
        ("10.1.2.3", "bob", "GET /api/nothing HTTP/1.1", "404", str(len(missing.body))),
    ]
    app.close()
    os.close(r)
    os.close(w)
