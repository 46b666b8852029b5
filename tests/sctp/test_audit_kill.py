"""Every acknowledged action has its audit record, even after ``kill -9`` of vigil.

Operators send commands (through SCTP to the reference agent) and chat
messages as fast as they can; vigil is killed with SIGKILL in the middle.
Each HTTP 200 a client received must have its record after the restart,
because vigil fsyncs the record before it answers. A torn last line (what
a crash in the middle of a write leaves) is cut off with one warning.
"""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

from tests.sctp.panel import Panel
from tests.support import CHATTY, Vigil, basic

OPERATORS = ("alice", "bob", "user01")
ROUNDS = 100  # per operator: at most 600 records, GET /api/audit shows 1000


class Operator(threading.Thread):
    """Alternates a command and a chat message; remembers what was acknowledged."""

    def __init__(self, panel: Panel, user: str) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.user = panel.vigil.host, panel.vigil.port, user
        self.commands: list[str] = []  # ids of commands answered 200
        self.chats: dict[int, str] = {}  # id -> text of messages answered 200

    def post(self, conn: http.client.HTTPConnection, path: str, body: object) -> object:
        headers = {"Authorization": basic(self.user), "Content-Type": "application/json"}
        conn.request("POST", path, json.dumps(body), headers)
        resp = conn.getresponse()
        data = json.loads(resp.read())
        return data if resp.status == 200 else None

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            for i in range(ROUNDS):
                command = {"entity": "power", "value": i % 2 == 0}
                reply = self.post(conn, "/api/devices/lamp-1/commands", command)
                if isinstance(reply, dict):
                    self.commands.append(reply["id"])
                text = f"{self.user} says {i}"
                reply = self.post(conn, "/api/chat", {"text": text})
                if isinstance(reply, dict):
                    self.chats[reply["id"]] = text
        except (OSError, http.client.HTTPException, ValueError):
            return  # vigil was killed
        finally:
            conn.close()


def test_acknowledged_records_survive_kill_9_and_a_torn_line(tmp_path: Path) -> None:
    # as fast as they can: no rate limit (the records, not the limits, are tested here)
    panel = Panel(tmp_path, limits={**CHATTY["limits"], "command_burst": 10000})
    try:
        panel.agent("lamp-1")
        panel.wait(lambda: panel.online("lamp-1"))
        operators = [Operator(panel, user) for user in OPERATORS]
        for op in operators:
            op.start()
        panel.wait(lambda: sum(len(op.commands) + len(op.chats) for op in operators) >= 60, 30)
        panel.vigil.proc.kill()  # SIGKILL, mid-flight
        panel.vigil.proc.wait()
        for op in operators:
            op.join(15)
        panel.vigil.stop()
        audit = tmp_path / "audit.jsonl"
        with audit.open("ab") as f:
            f.write(b'{"seq": 99999, "type": "chat", "user": "mallory", "te')  # torn, no newline

        panel.vigil = Vigil(panel.vigil.config)
        status, body = panel.curl("GET", "/api/audit?limit=1000")
        assert status == 200
        records = body["records"]
        commands = {r["id"]: r for r in records if r["type"] == "command"}
        chats = {r["seq"]: r for r in records if r["type"] == "chat"}
        acked = 0
        for op in operators:
            for cid in op.commands:
                r = commands.get(cid)
                assert r is not None, f"command {cid} of {op.user} was answered 200 but is lost"
                assert (r["user"], r["status"], r["ok"]) == (op.user, 200, True), r
            for seq, text in op.chats.items():
                assert chats.get(seq, {}).get("text") == text, (seq, text, chats.get(seq))
            acked += len(op.commands) + len(op.chats)
        assert not any(r.get("user") == "mallory" for r in records)
        assert "removed a torn last line" in panel.vigil.log()

        # the next record starts on a line of its own: the file stays parseable
        status, _ = panel.curl("POST", "/api/chat", body={"text": "after the crash"})
        assert status == 200
        lines = audit.read_bytes().splitlines()
        assert json.loads(lines[-1])["text"] == "after the crash"
        print(f"{acked} acknowledged records intact after kill -9; torn line cut off")
    finally:
        panel.close()


def test_vigil_starts_with_only_a_torn_line(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").write_bytes(b'{"seq": 1, "ty')
    panel = Panel(tmp_path)
    try:
        status, body = panel.curl("GET", "/api/audit?limit=10")
        assert status == 200 and all(r["type"] != "chat" for r in body["records"])
        assert "removed a torn last line" in panel.vigil.log()
    finally:
        panel.close()
