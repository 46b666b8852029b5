"""Sessions, the second factor, logout and step-up over HTTP, in-process on the fake clock.

tina has a second factor (her secret in users.local.toml, as ``user totp`` writes it);
everyone else of tests/support.py's people logs in with a password alone.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyotp
import pytest

from server.config import Account
from server.people import users
from server.people.auth import hash_password
from tests.fakedevice import described
from tests.testclient import App, Client
from tests.wire import Resp

SECRET = pyotp.random_base32()
TINA_PW = "tina's long password"
UWE_PW = "grüße aus köln"  # beyond ASCII: a header carries its UTF-8 bytes
PUMP = described(
    {"key": "speed", "kind": "number", "label": "Speed", "min": 0, "max": 100, "step": 5,
     "confirm": "Change the pump's speed?"},
    {"key": "mode", "kind": "select", "label": "Mode", "options": ["eco", "boost"]},
)  # fmt: skip


def code(app: App, steps: int = 0) -> str:
    """tina's code ``steps`` time steps from now (the server's wall clock is the real one)."""
    return str(pyotp.TOTP(SECRET).at(time.time() + 30 * steps))


@pytest.fixture
def make(make_app: Callable[..., App], tmp_path: Path) -> Callable[..., App]:
    """An App whose state dir also holds tina (operator, with a second factor)."""

    def new(**auth: Any) -> App:
        directory = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        directory.mkdir()
        tina = Account("tina", hash_password(TINA_PW), "operator", SECRET)
        uwe = Account("uwe", hash_password(UWE_PW), "operator")
        users.save(directory, [tina, uwe])
        return (
            make_app({"auth": auth}, directory=directory) if auth else make_app(directory=directory)
        )

    return new


def me(c: Client, user: str, pw: str | None = None) -> Resp:
    return c.me(user, pw)


def test_password_and_code_make_one_session_that_logout_ends(make: Callable[..., App]) -> None:
    app = make()
    c = app.client()
    assert me(c, "tina", TINA_PW).status == 401  # the password alone
    now = code(app)
    assert me(c, "tina", TINA_PW + now).json()["user"] == "tina"
    again = app.client()  # the browser sends the same header again: the same session
    assert me(again, "tina", TINA_PW + now).status == 200
    session = again.get("/api/session", "tina", pw=TINA_PW + now).json()
    assert session["user"] == "tina" and session["totp"] is True
    assert session["addr"] == "127.0.0.1" and session["expires_because"] == "idle for 30 min"
    assert c.post("/api/logout", {}, "tina", pw=TINA_PW + now).json() == {"ended": 1}
    gone = app.client().me("tina", TINA_PW + now)  # the same header, at once
    assert gone.status == 401 and "www-authenticate" in gone.headers
    assert gone.json()["error"] == "signed out: you logged out; log in again"
    app.advance(5)
    assert app.client().me("tina", TINA_PW + now).status == 401  # its code is used for good
    (end,) = app.records("session_end")
    assert (end["user"], end["reason"]) == ("tina", "you logged out")


def test_a_used_code_is_refused_for_a_new_header(make: Callable[..., App]) -> None:
    app = make()
    now = code(app)
    assert app.client().me("tina", TINA_PW + now).status == 200
    # the same code in another spelling of the header: a new session, but the code is used
    token = base64.b64encode(f"tina:{TINA_PW}{now}".encode()).decode()
    other = app.client().get("/api/me", None, headers={"Authorization": f"basic  {token}"})
    assert other.status == 401


def test_wrong_codes_count_toward_the_lockout(make: Callable[..., App]) -> None:
    app = make(lockout_failures=3)
    c = app.client()
    wrong = f"{(int(code(app)) + 500_000) % 1_000_000:06d}"
    assert me(c, "tina", TINA_PW + wrong).status == 401
    assert me(c, "tina", "not her password" + code(app)).status == 401
    locked = me(c, "tina", TINA_PW + wrong)
    assert locked.status == 429 and "too many failed logins" in locked.json()["error"]
    assert me(c, "tina", TINA_PW + code(app)).status == 429  # the right one too, while locked


def test_idle_timeout_then_a_password_works_again_at_the_prompt(make: Callable[..., App]) -> None:
    app = make(session_idle=60)
    c = app.client()
    assert me(c, "alice").status == 200
    app.advance(59, step=5)
    assert me(c, "alice").status == 200  # a request within the idle timeout renews it
    app.advance(61, step=5)
    assert not c.open  # its connection closed with it
    c = app.client()
    ended = me(c, "alice")  # the browser's cached header: refused, the browser asks
    assert ended.status == 401
    assert ended.json()["error"] == "signed out: idle for 1 min; log in again"
    assert me(c, "alice").status == 401  # resent at once (a request in flight): still refused
    app.advance(2.5)
    assert me(c, "alice").status == 200  # typed at the prompt: a new session
    assert [r["reason"] for r in app.records("session_end")] == ["idle for 1 min"]


def test_maximum_age_ends_a_busy_session(make: Callable[..., App]) -> None:
    app = make(session_idle=60, session_max_age=300)
    c = app.client()
    now = code(app)
    assert me(c, "tina", TINA_PW + now).status == 200
    for _ in range(9):
        app.advance(30, step=5)
        assert me(c, "tina", TINA_PW + now).status == 200
    app.advance(30, step=5)  # 300 s since the login
    assert not c.open
    ended = me(app.client(), "tina", TINA_PW + now)
    assert ended.json()["error"] == "signed out: 5 min since you logged in; log in again"


def test_logout_closes_the_sessions_stream_and_the_header_gets_401(
    make: Callable[..., App],
) -> None:
    app = make()
    stream = app.client()
    assert stream.get("/api/events", "bob").status == 200
    other = app.client()
    assert other.get("/api/events", "alice").status == 200  # another person's stream stays
    assert app.client().post("/api/logout", {}, "bob").status == 200
    app.pump()
    said = [(e.type, e.data) for e in stream.events() if e.type not in ("reset", "presence")]
    assert said == [("signedout", {"reason": "you logged out"})]  # why, on the stream first
    assert not stream.open and other.open
    assert [e.type for e in other.events() if e.type == "signedout"] == []
    assert me(app.client(), "bob").status == 401
    app.advance(2.5)
    assert me(app.client(), "bob").status == 200  # bob types his password at the prompt


def test_operators_see_second_factors_and_end_sessions(make: Callable[..., App]) -> None:
    app = make()
    assert me(app.client(), "bob").status == 200
    people = {p["user"]: p for p in me_people(app, "alice")}
    assert people["tina"]["totp"] is True and people["bob"]["totp"] is False
    assert len(people["bob"]["sessions"]) == 1
    assert app.client().get("/api/people", "vera").status == 403  # viewers do not
    refused = app.client().request("DELETE", "/api/people/bob/sessions", "vera")
    assert refused.status == 403
    done = app.client().request("DELETE", "/api/people/bob/sessions", "alice")
    assert done.json() == {"user": "bob", "ended": 1}
    told = me(app.client(), "bob")
    assert told.json()["error"] == "signed out: ended by alice; log in again"
    assert app.client().request("DELETE", "/api/people/nobody/sessions", "alice").status == 404
    (end,) = app.records("session_end")
    assert end["reason"] == "ended by alice"


def me_people(app: App, user: str) -> list[dict[str, Any]]:
    resp = app.client().get("/api/people", user)
    assert resp.status == 200, resp.body
    return list(resp.json()["people"])


def test_the_session_budget_per_person(make: Callable[..., App]) -> None:
    app = make(sessions_per_user=2)

    def get(header: str) -> int:
        c = app.client()
        return c.get("/api/me", None, headers={"Authorization": header}).status

    bob = "bob"[::-1] + "-pw"
    token = base64.b64encode(f"bob:{bob}".encode()).decode()
    spellings = [f"Basic {token}", f"basic {token}", f"BASIC {token}"]
    assert [get(h) for h in spellings] == [200, 200, 200]
    assert get(spellings[0]) == 401  # the least recently used of bob's three went
    assert get(spellings[2]) == 200
    (end,) = app.records("session_end")
    assert end["reason"] == "more than 2 sessions of bob"


def command(c: Client, user: str, pw: str | None, value: Any, proof: str | None = None) -> Resp:
    headers = {} if proof is None else {"X-Vigil-Step-Up": proof}
    body = {"entity": "speed", "value": value}
    return c.post("/api/devices/pump/commands", body, user, pw=pw, headers=headers)


def test_step_up_with_a_code(make: Callable[..., App]) -> None:
    app = make(step_up_window=60)
    app.device("pump", PUMP)
    c = app.client()
    login = TINA_PW + code(app)
    refused = command(c, "tina", login, 50)
    assert refused.status == 403 and refused.json()["step_up"] == "code"
    assert "X-Vigil-Step-Up" in refused.json()["error"]
    wrong = command(c, "tina", login, 50, "000000" if code(app, 1) != "000000" else "111111")
    assert wrong.status == 403
    assert wrong.json()["error"] == "step-up refused: not the current 6-digit code"
    assert command(c, "tina", login, 50, code(app, 1)).json()["ok"] is True
    assert command(c, "tina", login, 55).json()["ok"] is True  # within the window
    eco = {"entity": "mode", "value": "eco"}
    mode = c.post("/api/devices/pump/commands", eco, "tina", pw=login)
    assert mode.json()["ok"] is True  # an entity that does not ask to confirm needs none
    assert command(c, "tina", login, 140).status == 400  # refused anyway: no proof asked
    app.advance(61, step=5)
    assert command(app.client(), "tina", login, 60).status == 403  # the proof is stale
    proofs = [(r["proof"], r["ok"]) for r in app.records("step_up")]
    assert proofs == [("code", False), ("code", True)]


def test_step_up_with_a_password(make: Callable[..., App]) -> None:
    app = make()
    app.device("pump", PUMP)
    c = app.client()
    refused = command(c, "alice", None, 50)
    assert refused.status == 403 and refused.json()["step_up"] == "password"
    assert command(c, "alice", None, 50, "not it").status == 403
    assert command(c, "alice", None, 50, "alice"[::-1] + "-pw").json()["ok"] is True
    assert c.request("DELETE", "/api/devices/pump/lease", "alice").status == 200
    as_sent = UWE_PW.encode().decode("latin-1")  # the bytes curl and the panel send
    answer = command(c, "uwe", UWE_PW, 55, as_sent).json()
    assert answer["ok"] is True, answer
    assert command(c, "vera", None, 50).status == 403  # a viewer: refused as a viewer
    assert "viewer" in command(c, "vera", None, 50).json()["error"]


def test_operators_without_a_second_factor_are_viewers_when_required(
    make: Callable[..., App],
) -> None:
    app = make(operators_need_totp=True)
    assert me(app.client(), "alice").json()["role"] == "viewer"
    assert me(app.client(), "tina", TINA_PW + code(app)).json()["role"] == "operator"
