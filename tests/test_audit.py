"""The audit log: durable appends, bounded records, memory and disk, rotation, start-up.

Each budget of ``server.feed.audit``'s header has a test here that fails without
it: records as bytes (not parsed objects) up to ``memory_bytes``, one record
cut to ``MAX_RECORD``, rotation within (1 + keep_files) x file_bytes and a
crash at every step of it, start-up reading only the tail, a torn last line
removed once, NaN and lone surrogates written as JSON.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.base.jsontext import loads
from server.feed import audit as auditmod
from server.feed.audit import MAX_RECORD, AuditLog, encode_record, rotated
from tests.support import audit_records

KIB = 1024
MIB = 1024 * KIB


def seqs_on_disk(path: Path, keep_files: int) -> list[int]:
    """Every record's seq in the log's files, oldest file first (strict JSON, whole lines)."""
    seqs: list[int] = []
    for k in range(keep_files + 5, -1, -1):
        file = path if k == 0 else rotated(path, k)
        if file.exists():
            data = file.read_bytes()
            assert not data or data.endswith(b"\n"), f"{file.name} ends in a partial line"
            seqs += [loads(line)["seq"] for line in data.splitlines()]
    return seqs


def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "var" / "audit.jsonl"
    log = AuditLog(path)
    log.append("login", user="alice")
    log.append("chat", user="alice", text="hi")
    log.close()
    again = AuditLog(path)
    assert [r["type"] for r in audit_records(again, 10)] == ["chat", "login"]
    assert list(again.chat) == [
        {"id": 2, "user": "alice", "text": "hi", "time": audit_records(again, 1)[0]["time"]}
    ]
    assert again.append("leave", user="alice")["seq"] == 3


def test_chat_history_is_the_last_hundred(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    for i in range(105):
        log.append("chat", user="a", text=str(i))
    assert len(log.chat) == 100 and log.chat[0]["text"] == "5"


# -- a torn last line, a damaged line ------------------------------------------------


def test_a_torn_last_line_is_cut_off_once_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    whole = b'{"seq":1,"type":"login","user":"a"}\n'
    path.write_bytes(whole + b'{"seq":2,"type":"ch')  # power lost in the middle of a write
    log = AuditLog(path)
    assert path.read_bytes() == whole  # truncated: no newline added, nothing glued on
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "torn last line (19 bytes after byte 36)" in warnings[0]
    assert [r["seq"] for r in audit_records(log, 5)] == [1]
    assert log.append("chat", user="a", text="x")["seq"] == 2  # seq 2 was never acknowledged
    log.close()
    assert [loads(line)["seq"] for line in path.read_bytes().splitlines()] == [1, 2]
    caplog.clear()
    assert [r["type"] for r in audit_records(AuditLog(path), 5)] == ["chat", "login"]
    assert caplog.records == []  # repaired for good: the next start has nothing to say


def test_a_file_of_only_a_torn_line_becomes_empty(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq": 1, "ty')
    log = AuditLog(path)
    assert path.read_bytes() == b"" and audit_records(log, 5) == [] and log.seq == 0
    assert log.append("login", user="a")["seq"] == 1


def test_a_damaged_line_in_the_middle_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(
        b'{"seq":1,"type":"login"}\n{"seq":2,"ty\n{"seq":3,"x":NaN}\n[4]\n{"seq":5,"type":"leave"}\n'
    )
    log = AuditLog(path)
    assert [r["seq"] for r in audit_records(log, 10)] == [5, 1]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "byte 25: skipping a damaged audit record (3 in what was read)" in warning
    assert log.append("login")["seq"] == 6


def test_seq_does_not_restart_when_the_tail_read_holds_no_sound_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for _ in range(500):
        log.append("login", user="alice")
    log.close()
    with path.open("ab") as f:
        f.write(b"not json\n" * 10_000)  # 90 KB of damage, more than memory_bytes
    again = AuditLog(path, memory_bytes=64 * KIB)
    assert audit_records(again, 10) == [] and again.seq == 500
    assert again.append("login", user="bob")["seq"] == 501


# -- one record: NaN, surrogates, size, depth ------------------------------------------


def test_nan_and_infinity_are_written_as_null_and_the_append_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    seen: list[dict[str, Any]] = []
    log.watchers.append(seen.append)
    record = log.append(
        "command", result={"temp": math.nan, "range": [-math.inf, 1.5, math.inf]}, ok=True
    )
    assert record["result"] == {"temp": None, "range": [None, 1.5, None]}
    assert seen == [record]  # watchers (MQTT) get what was written: strict JSON too
    log.close()
    (line,) = path.read_bytes().splitlines()
    assert b'"temp":null,"range":[null,1.5,null]' in line
    assert audit_records(AuditLog(path), 1) == [record]


def test_a_lone_surrogate_is_written_as_a_question_mark(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    assert log.append("command", args={"name\udc80": "a\ud800b"})["args"] == {"name?": "a?b"}
    log.close()
    assert audit_records(AuditLog(path), 1)[0]["args"] == {"name?": "a?b"}


def test_a_huge_record_is_cut_to_max_record_and_reads_back_the_same(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    lists: list[list[int]] = [
        [] for _ in range(21_000)
    ]  # the attack: 63 KB of JSON, ~1.5 MB parsed
    record = log.append("command", user="mallory", args={"x": lists}, error="e" * 100_000)
    # the largest field (error, 100 KB) is cut first, then args (63 KB) goes too,
    # and error gets back the room args left
    assert record["args"] == {"truncated": len(json.dumps({"x": lists}, separators=(",", ":")))}
    assert record["error"].endswith("…") and len(record["error"]) > MAX_RECORD - 200
    assert record["user"] == "mallory" and record["seq"] == 1
    log.close()
    (line,) = path.read_bytes().splitlines()
    assert MAX_RECORD - 4 <= len(line) <= MAX_RECORD  # the string is cut to fill the rest
    assert audit_records(AuditLog(path), 1) == [record]
    assert caplog.records == []


def test_nesting_deeper_than_loads_takes_is_replaced_so_it_reads_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    deep: Any = 1
    for _ in range(31):  # args 32 levels deep: what an HTTP body may have; the record adds one
        deep = [deep]
    log = AuditLog(path)
    record = log.append("command", args={"a": deep}, action="set")
    assert record["args"] == {"truncated": 2 * 31 + 7} and record["action"] == "set"
    log.close()
    assert audit_records(AuditLog(path), 1) == [record]
    assert caplog.records == []  # not a "damaged" line at the next start


# (case, fields, what they become)
CUTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("small: unchanged", {"user": "a", "args": {"on": True}}, {"user": "a", "args": {"on": True}}),
    ("a list: replaced by its size", {"args": [0] * 9000}, {"args": {"truncated": 18001}}),
    (
        "the largest goes, the smaller stays",
        {"small": [1] * 4000, "big": [2] * 6000},
        {"small": [1] * 4000, "big": {"truncated": 12001}},
    ),
    (
        "both too big: the largest, then the next",
        {"a": [1] * 9000, "b": [2] * 9500},
        {"a": {"truncated": 18001}, "b": {"truncated": 19001}},
    ),
    (
        "a string is cut only as much as needed",
        {"error": "e" * 20000, "args": [1] * 8000},
        {"error": "e" * 305 + "…", "args": [1] * 8000},
    ),
    (
        "a string cut to nothing gets the room back when a list goes too",
        {"error": "e" * 50000, "args": [1] * 20000},
        {"error": "e" * 16287 + "…", "args": {"truncated": 40001}},
    ),
]


@pytest.mark.parametrize(("case", "fields", "expected"), CUTS, ids=[c[0] for c in CUTS])
def test_encode_record_cuts_the_largest_fields_first(
    case: str, fields: dict[str, Any], expected: dict[str, Any]
) -> None:
    core = {"seq": 7, "time": "2026-12-03T06:00:00Z", "type": "command"}
    written, body = encode_record({**core, **fields})
    assert written == {**core, **expected}
    assert loads(body) == written and len(body) <= MAX_RECORD
    assert encode_record({**core, **fields}) == (written, body)  # deterministic


def test_thousands_of_fields_leave_seq_time_type_and_the_size() -> None:
    record = {
        "seq": 7,
        "time": "2026-12-03T06:00:00Z",
        "type": "x",
        **{f"f{i:05d}": i for i in range(3000)},
    }
    written, body = encode_record(record)
    whole = len(json.dumps(record, separators=(",", ":")))
    assert whole > MAX_RECORD and written == {
        "seq": 7,
        "time": record["time"],
        "type": "x",
        "truncated": whole,
    }
    assert loads(body) == written


def test_a_cut_string_keeps_its_multibyte_characters_whole() -> None:
    written, body = encode_record({"seq": 1, "type": "chat", "text": "😀" * 10_000})
    text = written["text"]
    assert set(text[:-1]) == {"😀"} and text.endswith("…")
    assert MAX_RECORD - 4 <= len(body) <= MAX_RECORD  # a 4-byte character short at most


def test_a_failed_write_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append("login", user="a")
    real_write = os.write
    monkeypatch.setattr(auditmod.os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(OSError, match="short write"):
        log.append("chat", user="a", text="half of me")
    monkeypatch.undo()
    assert log.append("chat", user="a", text="whole")["seq"] == 2
    log.close()
    assert [loads(line)["text"] for line in path.read_bytes().splitlines()[1:]] == ["whole"]


# -- memory --------------------------------------------------------------------------


def test_memory_holds_the_newest_lines_up_to_memory_bytes_not_parsed_records(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")  # memory_bytes: 1 MiB
    gc.collect()
    objects = len(gc.get_objects())
    for _ in range(150):  # the attack's 63 KB records: 150 x ~1.5 MB if kept parsed
        log.append("command", user="mallory", args={"x": [[] for _ in range(21_000)]})
    gc.collect()
    kept = len(gc.get_objects()) - objects
    assert kept < 100, kept  # kept as bytes: no lists, no dicts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):  # 200 x 15 KiB: 3 MB if kept by count
            log.append("command", user="mallory", error=f"{i:05d}" + "y" * (15 * KIB))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.3 * MIB, held
    body = log.newest_json(1000)
    assert len(body) <= MIB
    records = loads(body)["records"]
    assert [r["seq"] for r in records] == list(range(350, 350 - len(records), -1))  # newest first
    assert 60 <= len(records) <= 70  # what 1 MiB holds of 15 KiB records


def test_newest_json_joins_the_kept_lines_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append("chat", user="a", text=f"m{i}")
    newest = (tmp_path / "audit.jsonl").read_bytes().splitlines()[::-1][:3]
    expected = b'{"records":[' + b",".join(newest) + b"]}"

    def no_parsing(*_args: object) -> None:
        raise AssertionError("newest_json parsed a record")

    monkeypatch.setattr(auditmod, "loads", no_parsing)
    assert log.newest_json(3) == expected
    assert log.newest_json(1000).count(b'"type":"chat"') == 5
    assert AuditLog(tmp_path / "empty.jsonl").newest_json(50) == b'{"records":[]}'


# -- rotation ------------------------------------------------------------------------


def fill(log: AuditLog, until: Callable[[], bool], every: int = 10) -> int:
    """Append commands (a sync every ``every``) until ``until()``; the last synced seq."""
    synced = 0
    while not until():
        for _ in range(every):
            log.append("command", user="alice", device="lamp-1", action="toggle", args={})
        log.sync()
        synced = log.seq
    return synced


def test_rotation_keeps_each_file_within_file_bytes_and_deletes_the_oldest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, file_bytes=64 * KIB, keep_files=3)
    fill(log, lambda: log.seq >= 3000)  # ~400 KB: six rotations
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert max(sizes) <= 64 * KIB and sum(sizes) <= (1 + 3) * 64 * KIB
    seqs = seqs_on_disk(path, 3)
    assert seqs == list(range(seqs[0], 3001)) and seqs[0] > 1  # in order; the oldest gone


def test_seq_and_chat_continue_across_rotation_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, file_bytes=64 * KIB, keep_files=2, memory_bytes=64 * KIB)
    i = 0
    while not (rotated(path, 1).exists() and path.stat().st_size < 1000):
        log.append("chat", user="bob", text=f"message {i}")
        log.append("command", user="bob", device="lamp-1", action="toggle", args={})
        log.sync()
        i += 1
    kept = list(log.chat)
    seq = log.seq
    log.close()
    again = AuditLog(path, file_bytes=64 * KIB, keep_files=2, memory_bytes=64 * KIB)
    assert list(again.chat) == kept and len(kept) == 100  # most of them from audit.jsonl.1
    assert again.seq == seq
    assert again.append("chat", user="bob", text="after")["seq"] == seq + 1


def test_start_up_after_a_rotation_left_no_live_file_reads_on_from_dot_1(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, file_bytes=64 * KIB)
    log.append("chat", user="bob", text="before")
    fill(log, lambda: log.seq > 100)
    log.close()
    path.rename(rotated(path, 1))  # a crash after step (3), before step (4)
    again = AuditLog(path, file_bytes=64 * KIB)
    assert again.seq == log.seq and [m["text"] for m in again.chat] == ["before"]
    assert audit_records(again, 1)[0]["seq"] == log.seq
    assert again.append("login")["seq"] == log.seq + 1
    assert path.exists() and path.stat().st_size > 0


class Crash(BaseException):
    """The process dies here: no except clause of the code under test catches it."""


def rotate_once(log: AuditLog, path: Path, every: int = 1) -> None:
    """Append, a sync every ``every`` records, until a rotation has made a new live file."""
    inode = path.stat().st_ino
    fill(log, lambda: path.exists() and path.stat().st_ino != inode, every)


# A rotation with audit.jsonl.1 and .2 there: fsync(live); unlink(.2) if keep_files is 2,
# else rename(.2, .3); rename(.1, .2); rename(live, .1); open(live); open(dir); fsync(dir).
STEPS = 7


@pytest.mark.parametrize("keep_files", [5, 2])
@pytest.mark.parametrize("step", range(1, STEPS + 2))
def test_a_crash_at_any_step_of_a_rotation_loses_and_doubles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int, keep_files: int
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, file_bytes=64 * KIB, keep_files=keep_files)
    fill(log, lambda: rotated(path, 2).exists())
    fill(log, lambda: path.stat().st_size > 62 * KIB)  # the next rotation is near
    oldest = len(rotated(path, 2).read_bytes().splitlines()) if keep_files == 2 else 0
    first_kept = seqs_on_disk(path, keep_files)[oldest]  # keep_files = 2: .2 is deleted
    calls: list[str] = []
    rotate = log._rotate

    def rotating() -> None:
        calls.append("start")
        rotate()
        calls.append("done")

    def crash_at(name: str) -> Callable[..., Any]:
        real = getattr(os, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if calls and calls[-1] != "done":  # only inside the rotation
                calls.append(name)
                if len(calls) - 1 == step:
                    raise Crash
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(log, "_rotate", rotating)
    for name in ("fsync", "rename", "unlink", "open"):
        monkeypatch.setattr(auditmod.os, name, crash_at(name))
    with contextlib.suppress(Crash):
        rotate_once(log, path)
    monkeypatch.undo()
    synced = log.seq  # one record a pass: every record written was synced before the crash
    assert len(calls) - 1 == min(step, STEPS + 1), calls  # it crashed at that step, or finished
    os.close(log._fd)  # the dead process's file

    again = AuditLog(path, file_bytes=64 * KIB, keep_files=keep_files)
    seqs = seqs_on_disk(path, keep_files)
    assert seqs == list(range(seqs[0], seqs[-1] + 1))  # in order, none twice, no gap
    assert seqs[0] <= first_kept and seqs[-1] >= synced  # every synced record is there
    assert again.seq == seqs[-1]
    for _ in range(3):
        rotate_once(again, path, every=10)  # rotates on from whatever state the crash left
    again.close()
    seqs = seqs_on_disk(path, keep_files)
    assert seqs == list(range(seqs[0], again.seq + 1))
    assert len(list(tmp_path.iterdir())) == 1 + keep_files


def test_a_failed_rotation_is_retried_next_pass_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, file_bytes=64 * KIB, keep_files=5)
    fill(log, lambda: rotated(path, 1).exists())
    real_rename = os.rename
    renames: list[tuple[Any, Any]] = []

    def second_fails(src: Any, dst: Any) -> None:
        renames.append((src, dst))
        if len(renames) == 2:
            raise OSError(30, "Read-only file system")
        real_rename(src, dst)

    monkeypatch.setattr(auditmod.os, "rename", second_fails)
    fill(log, lambda: len(renames) >= 2)  # .1 -> .2 done, live -> .1 refused
    assert not rotated(path, 1).exists() and rotated(path, 2).exists()
    fill(log, lambda: rotated(path, 1).exists())  # the next pass rotates: the gap is filled
    monkeypatch.undo()
    log.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot rotate" in m for m in messages) == 1
    assert sum("rotates again" in m for m in messages) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.1",
        "audit.jsonl.2",
    ]
    assert seqs_on_disk(path, 5) == list(range(1, log.seq + 1))


# -- start-up ------------------------------------------------------------------------


def test_start_up_on_a_100_mb_log_reads_only_memory_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    line = (
        b'{"seq":1,"time":"2026-12-03T06:00:00Z","type":"command","user":"alice",'
        b'"device":"lamp-1","action":"toggle","args":{},"status":200,"ok":true}\n'
    )
    block = line * (MIB // len(line))
    with path.open("wb") as f:
        for _ in range(100):
            f.write(block)
        for seq in range(1_000_001, 1_000_011):
            f.write(line.replace(b'"seq":1,', f'"seq":{seq},'.encode()))
    assert path.stat().st_size > 100_000_000
    read = 0
    real_pread, real_read = os.pread, os.read

    def pread(fd: int, n: int, offset: int) -> bytes:
        nonlocal read
        data = real_pread(fd, n, offset)
        read += len(data)
        return data

    def count_read(fd: int, n: int) -> bytes:
        nonlocal read
        data = real_read(fd, n)
        read += len(data)
        return data

    monkeypatch.setattr(auditmod.os, "pread", pread)
    monkeypatch.setattr(auditmod.os, "read", count_read)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        log = AuditLog(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert peak < 10 * MIB, peak
    assert elapsed < 1.0, elapsed
    assert read <= MIB + 2, read
    assert log.seq == 1_000_010 and audit_records(log, 1)[0]["seq"] == 1_000_010
    assert log.append("login")["seq"] == 1_000_011
