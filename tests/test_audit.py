"""The audit log: durable appends, reload after restart, a torn last line skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.audit import AuditLog


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "var" / "audit.jsonl"
    log = AuditLog(path)
    log.append("login", user="alice")
    log.append("chat", user="alice", text="hi")
    log.close()
    again = AuditLog(path)
    assert [r["type"] for r in again.newest(10)] == ["chat", "login"]
    assert list(again.chat) == [
        {"id": 2, "user": "alice", "text": "hi", "time": again.newest(1)[0]["time"]}
    ]
    assert again.append("leave", user="alice")["seq"] == 3


def test_torn_last_line_is_skipped_and_not_glued_to_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":1,"type":"login","user":"a"}\n{"seq":2,"type":"ch')
    log = AuditLog(path)
    assert "damaged audit record" in caplog.text
    assert [r["seq"] for r in log.newest(5)] == [1]
    log.append("chat", user="a", text="x")
    log.close()
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[-1])["text"] == "x"
    assert [r["type"] for r in AuditLog(path).newest(5)] == ["chat", "login"]


def test_chat_history_is_the_last_hundred(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    for i in range(105):
        log.append("chat", user="a", text=str(i))
    assert len(log.chat) == 100 and log.chat[0]["text"] == "5"
