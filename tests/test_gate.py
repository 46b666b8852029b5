"""In-process request tests: the gate, the error boundary and the bugs they fixed.

Every test runs the real server on a socketpair (``tests/testclient.py``):
no port, no subprocess, a clock the test moves.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest

from server.feed import audit as auditmod
from tests.testclient import App
from tests.wire import request

JSON = {"Content-Type": "application/json"}


def disk_full(*_args: object) -> int:
    raise OSError(28, "No space left on device")


def test_me_users_healthz_and_404_405(app: App) -> None:
    c = app.client()
    assert c.get("/api/me").json() == {"user": "alice", "role": "operator"}
    assert [u["user"] for u in c.get("/api/users").json()["online"]] == ["alice"]
    assert c.get("/healthz", user=None).body == b"ok\n"
    put = c.request("PUT", "/healthz", user=None)
    assert (put.status, put.headers["allow"]) == (405, "GET, HEAD")
    assert c.get("/api/nothing").status == 404
    cmd = c.get("/api/devices/lamp-1/commands")
    assert (cmd.status, cmd.headers["allow"]) == (405, "POST")
    assert c.get("/api/me", user=None).status == 401


def test_an_exception_in_a_handler_is_a_500_and_the_server_goes_on(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    c = app.client()
    assert c.get("/api/me").status == 200
    monkeypatch.setattr(auditmod.os, "write", disk_full)
    resp = c.post("/api/chat", {"text": "hello"})
    assert resp.status == 500
    assert "internal server error" in resp.json()["error"]
    assert c.closed()  # the connection that failed is closed ...
    failures = [r for r in caplog.records if "POST /api/chat failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None  # ... logged once
    monkeypatch.undo()
    assert app.client().get("/api/me").status == 200  # ... and everyone else is served


def test_a_parked_answer_that_fails_is_a_500_not_a_hang(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    lamp = app.device("lamp-1", answers=False)
    c = app.client()
    body = b'{"entity": "power", "value": true}'
    c.send(request("POST", "/api/devices/lamp-1/commands", JSON, body))
    app.pump()
    assert lamp.commands == [("power", True)]  # parked: the device has the command
    monkeypatch.setattr(auditmod.os, "write", disk_full)
    lamp.answer(state=True)  # the device answers later; its record cannot be written
    assert c.response().status == 500
    assert c.closed()


def test_sighup_keeps_logged_in_people_logged_in(make_app: Callable[..., App]) -> None:
    app = make_app({"http": {"header_timeout": 1, "keepalive_timeout": 60}})
    c = app.client()
    assert c.get("/api/me").status == 200
    app.server.reload()
    conn = app.server.conns[c.id]
    assert conn.user is not None and not conn.sheddable  # not taken for a stranger
    app.advance(3)  # past header_timeout, well within keepalive_timeout
    assert c.open
    assert c.get("/api/me").status == 200
    assert len(app.records("login")) == 1  # the same session, not a new login


def test_a_person_removed_from_the_config_is_logged_out_on_sighup(
    make_app: Callable[..., App],
) -> None:
    app = make_app({"presence": {"grace": 0}})
    c = app.client()
    assert c.get("/api/me", user="bob").status == 200
    path = app.server.config.path
    path.write_text(path.read_text().replace('name = "bob"', 'name = "robert"'))
    app.server.reload()
    assert c.closed()
    assert [r["user"] for r in app.records("leave")] == ["bob"]


def test_a_connection_that_switches_user_logs_the_first_one_out(
    make_app: Callable[..., App],
) -> None:
    app = make_app({"presence": {"grace": 0}})
    c = app.client()
    first = app.server.events.last_id
    assert c.get("/api/me", user="alice").status == 200
    assert c.get("/api/me", user="bob").json()["user"] == "bob"
    assert [(r["user"], r["reason"]) for r in app.records("leave")] == [("alice", "closed")]
    events = app.server.events.since(first)
    assert events is not None
    assert [(e.event.kind, e.event.user) for e in events] == [  # type: ignore[union-attr]
        ("join", "alice"),
        ("leave", "alice"),
        ("join", "bob"),
    ]
    assert [u["user"] for u in c.get("/api/users", user="bob").json()["online"]] == ["bob"]


def test_a_clean_stop_logs_everyone_out_and_ends_their_leases(
    make_app: Callable[..., App],
) -> None:
    app = make_app({"presence": {"grace": 30}})
    app.device("lamp-1")
    a, b = app.client(), app.client("10.0.0.7")
    assert a.get("/api/me").status == 200
    assert b.post("/api/devices/lamp-1/lease", {}, user="bob").status == 200
    b.sock.close()  # bob closed his tab: he is in his grace period
    app.pump()
    app.server.shutdown()
    app.advance(2)
    assert sorted((r["user"], r["reason"]) for r in app.records("leave")) == [
        ("alice", "shutdown"),
        ("bob", "shutdown"),
    ]
    (end,) = [r for r in app.records("lease") if r["change"] == "end"]
    assert (end["user"], end["reason"]) == ("bob", "shutdown")
    app.server.audit.sync()
    on_disk = app.server.config.audit.path.read_text()
    assert on_disk.count('"reason":"shutdown"') == 3


def test_failed_password_checks_are_rationed_per_address_and_in_total(
    make_app: Callable[..., App],
) -> None:
    app = make_app({"auth": {"lockout_failures": 5}})
    alice = app.client()
    assert alice.get("/api/me").status == 200  # logged in: her credentials are cached
    attacker = [app.client("10.9.9.9") for _ in range(4)]
    statuses = []
    for i in range(40):  # cycling names, so the per-name lockout never starts
        statuses.append(attacker[i % 4].get("/api/me", user=f"user{i:02d}x").status)
        assert alice.get("/api/me").status == 200
    assert statuses[:5] == [401] * 5  # mistyping up to the lockout is never "busy"
    assert set(statuses[5:]) == {429}  # then no more scrypt for this address
    busy = attacker[0].get("/api/me", user="nobody")
    assert "too many login attempts" in busy.json()["error"]
    assert int(busy.headers["retry-after"]) >= 1
    # a second address gets its own burst; then the server's total is spent too
    other = app.client("10.9.9.10")
    assert [other.get("/api/me", user=f"x{i}").status for i in range(6)] == [401] * 5 + [429]
    third = app.client("10.9.9.11")
    assert third.get("/api/me", user="bob").status == 429  # a new login waits a moment ...
    assert alice.get("/api/me").status == 200  # ... while logged-in people are unaffected
    app.advance(10)
    assert third.get("/api/me", user="bob").status == 200  # the budget refills with time


def test_audit_records_of_one_pass_share_one_fsync_before_the_answers_leave(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = app.client()
    syncs: list[bytes] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            syncs.append(c.sock.recv(65536, socket.MSG_PEEK))
        except BlockingIOError:
            syncs.append(b"")
        real_fsync(fd)

    monkeypatch.setattr(auditmod.os, "fsync", fsync)
    chats = b"".join(
        request("POST", "/api/chat", JSON, f'{{"text": "m{i}"}}'.encode()) for i in range(3)
    )
    c.send(chats)  # login + 3 chat records, all in one pass
    assert [c.response().status for _ in range(3)] == [200] * 3
    assert syncs == [b""]  # one fsync, and no answer had left before it
    assert len(app.records("chat")) == 3 and len(app.records("login")) == 1
