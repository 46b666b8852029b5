"""Property-based fuzzing of vigil's real request path, in-process (Hypothesis).

Generated requests (``tests/fuzzing.py``: odd methods, targets, versions,
credentials, framings, JSON bodies; pipelines; byte-level mutants) go
through the real parser, gate, handlers, error boundary and end-of-pass
writes of one in-process server (``tests/testclient.App``) for the whole
module, each on a fresh connection from an address of its own (so no
lockout or hash budget of one example touches the next), cut into pieces
sent across loop passes. The fake clock moves ``STEP`` seconds after each
example, so grace periods end, leases idle out and rate limits refill.

Every example must give (``Harness.run``):

- no log record with a traceback (or at ERROR) on the ``server`` logger;
- no 500;
- no hang: after the last byte, within ``IDLE_PASSES`` loop passes without
  progress, the server has answered or closed, or waits for the rest of a
  request, which ``header_timeout`` later is a 408 and a close; with
  ``Expect: 100-continue`` something (100, or a final status) comes before
  the body is sent;
- valid HTTP/1.1 (``fuzzing.read_responses``) and strict JSON (no NaN,
  UTF-8) in every JSON body and every event of a stream;
- no 2xx/3xx to a request without valid credentials (but /healthz), no 2xx
  to a viewer's command or lease, no file from outside the static dir;
- on a connection left open and idle, one answer per (exactly framed) request;
- the connection gone from the server once the client closes, and a fresh
  ``GET /api/me`` answered 200.

After each run (``_memory_bounded``): replaying the last ``REPLAY`` cases
that passed a second time leaves less than ``MEMORY_BOUND`` more memory
held (tracemalloc; RSS is printed).

Profiles: ``VIGIL_FUZZ`` unset: ``vigil-ci`` (fixed seed, no database,
bounded time: the file takes about half a minute on 2 cores);
``VIGIL_FUZZ=long`` (``make fuzz``): thousands of examples, a new seed each
run unless ``VIGIL_FUZZ_SEED`` is set. The seed is printed (``-s``, or with
a failure). Regressions found by review run every time, as plain tests
(``test_review_*``), with the statuses they must get.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import logging
import os
import random
import time
import traceback
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from server.web.exchange import State
from tests.fuzzing import (
    DEVICE,
    SECRET,
    Case,
    Malformed,
    Req,
    Resp,
    cases,
    mutants,
    read_responses,
    short,
    sse_data,
    strict_json,
    take_chunks,
)
from tests.support import basic, password
from tests.testclient import App, Client, FakeDevice
from tests.wire import request

IDLE_PASSES = 50  # loop passes without a byte from the server: it has nothing more to say
HEADER_TIMEOUT = 2.0  # the 408 deadline of the fuzzed server (fake seconds)
STEP = 3.0  # fake seconds between examples: past the presence grace, refills rate limits
REPLAY = 200  # cases replayed for the memory check
MEMORY_BOUND = 8 * 2**20  # more memory held after replaying them once more
ME = {"user": "alice", "role": "operator"}

PROFILE = "vigil-long" if os.environ.get("VIGIL_FUZZ") == "long" else "vigil-ci"
SEED = int(
    os.environ.get("VIGIL_FUZZ_SEED")
    or (random.getrandbits(32) if PROFILE == "vigil-long" else 20261203)
)
_common: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("vigil-ci", max_examples=600, **_common)
settings.register_profile("vigil-long", max_examples=5000, **_common)
EXAMPLES = int(os.environ.get("VIGIL_FUZZ_EXAMPLES") or settings.get_profile(PROFILE).max_examples)
MUTANTS = EXAMPLES * 3 // 5

FILES = {
    "index.html": b"<!doctype html><title>fuzz</title>\n",
    "app.js": b"1;\n",
    "style.css": b"a{}\n",
}


# -- the harness --------------------------------------------------------------------------


class Failure(AssertionError):
    """An example broke an invariant (the message has the transcript)."""


class Hang(Failure):
    """The server neither answered nor closed within the bound."""


class ServerTraceback(Failure):
    """The server logged an exception (raised ``from`` it: Hypothesis tells bugs apart by
    where the server's exception came from)."""


class Caught(logging.Handler):
    """Records of the ``server`` logger with a traceback, or at ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


class Transcript:
    """What one connection sent and got."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.got = bytearray()
        self.eof = False
        self.sent = 0
        self.note: list[str] = []

    def drain(self) -> bool:
        """Take what the socket has; True if anything (or the close) came."""
        came = False
        while not self.eof:
            try:
                data = self.client.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except ConnectionResetError:
                data = b""
                self.note.append("reset by the server")
            if not data:
                self.eof = came = True
                break
            self.got += data
            came = True
        return came

    def __str__(self) -> str:
        return (
            f"sent {self.sent} bytes; got (closed: {self.eof}) {short(bytes(self.got))} {self.note}"
        )


class Watcher:
    """An event stream open for the whole module (vera's): every event that any example
    causes (chat lines, commands and their args, presence, leases) must arrive as strict
    JSON on a stream that stays open."""

    def __init__(self, app: App) -> None:
        self.t = Transcript(app.client(addr="127.0.0.2"))
        self.head = True
        self.text = b""  # event-stream text not yet split into messages
        self.events = 0
        self.t.client.sock.sendall(request("GET", "/api/events", {"Authorization": basic("vera")}))

    def check(self) -> None:
        self.t.drain()
        if self.head and b"\r\n\r\n" in self.t.got:
            head, _, rest = bytes(self.t.got).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower(), head
            self.t.got[:] = rest
            self.head = False
        if not self.head:
            body, rest, ended = take_chunks(bytes(self.t.got))
            self.t.got[:] = rest
            assert not ended, "the server ended the event stream"
            *messages, self.text = (self.text + body).split(b"\n\n")
            for data in sse_data(b"".join(m + b"\n\n" for m in messages)):
                self.events += 1
                try:
                    strict_json(data)
                except ValueError as e:
                    raise Failure(
                        f"an event that is not strict JSON ({e}): {short(data)}"
                    ) from None
        assert not self.t.eof, f"the event stream was closed: {self.t}"


def _public(target: bytes) -> bool:
    """Is ``target`` /healthz (origin- or absolute-form), the one route without credentials?"""
    lowered = target.lower()
    for scheme in (b"http://", b"https://"):
        if lowered.startswith(scheme):
            target = b"/" + target[len(scheme) :].partition(b"/")[2]
    return target.partition(b"?")[0] == b"/healthz"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Harness:
    """One App for the module; ``run`` drives a ``Case`` and checks every invariant."""

    def __init__(self, app: App, device: FakeDevice) -> None:
        self.app = app
        self.device = device
        self.watcher = Watcher(app)
        self.caught = Caught()
        self._next_addr = 0

    def address(self) -> str:
        """A new client address per example (lockouts and hash budgets are per address)."""
        self._next_addr += 1
        n = self._next_addr
        return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

    # -- one example -------------------------------------------------------
    def run(self, case: Case) -> list[Resp]:
        self.caught.records.clear()
        client = self.app.client(addr=self.address())
        t = Transcript(client)
        failure: AssertionError | None = None
        resps: list[Resp] = []
        try:
            self._send(case, t)
            self._settle(t)
            heads = [] if case.mutated else [r.is_head for r in case.reqs]
            resps = read_responses(bytes(t.got), heads, t.eof)
            self._check(case, t, resps)
        except AssertionError as e:
            failure = e
        try:
            self._close(t)
        except AssertionError as e:
            failure = failure or e
        self._no_traceback(case, t)
        if failure is not None:
            # ``from failure``: Hypothesis tells bugs apart by where each assertion failed
            raise Failure(f"{type(failure).__name__}: {failure}\n{case!r}\n{t}") from failure
        self.still_serving()
        self.device.received.clear()
        self.app.advance(STEP)
        self._no_traceback(case, t)
        self.watcher.check()
        return resps

    def _send(self, case: Case, t: Transcript) -> None:
        """The pieces of ``case``, a loop pass between two; a 100-continue head alone first."""
        first = case.reqs[0]
        expect = not case.mutated and _expects_continue(first)
        pieces = case.pieces()
        if expect:  # the head alone, then wait for a 100 (or a final answer)
            data = case.wire
            head = first.head()
            pieces = [head, data[len(head) :]]
        for i, piece in enumerate(pieces):
            if not self._write(t, piece):
                t.note.append(f"closed by the server before piece {i + 1} of {len(pieces)}")
                return
            self.app.loop.run_once(0)
            t.drain()
            if i < len(case.pauses) and case.pauses[i]:
                self.app.advance(case.pauses[i])
                t.drain()
            if expect and i == 0 and not t.got and not t.eof:
                self._wait(t, "100 Continue (nor a final status) before the body was sent")

    def _write(self, t: Transcript, data: bytes) -> bool:
        view = memoryview(data)
        for _ in range(100000):
            if not view:
                return True
            try:
                n = t.client.sock.send(view)
            except BlockingIOError:
                self.app.loop.run_once(0)
                t.drain()
                continue
            except (BrokenPipeError, ConnectionResetError):
                return False
            view, t.sent = view[n:], t.sent + n
        raise Hang(f"the server stopped reading ({len(view)} bytes unsent)\n{t}")

    def _wait(self, t: Transcript, what: str) -> None:
        """Run the loop until bytes (or the close) come; a Hang after IDLE_PASSES passes."""
        for _ in range(IDLE_PASSES):
            self.app.loop.run_once(0)
            if t.drain():
                return
        raise Hang(f"no {what}, in {IDLE_PASSES} passes")

    def _quiet(self, t: Transcript) -> None:
        """Run the loop until the server closes or sends nothing for IDLE_PASSES passes."""
        idle = 0
        while idle < IDLE_PASSES and not t.eof:
            self.app.loop.run_once(0)
            idle = 0 if t.drain() else idle + 1

    def _state(self, t: Transcript) -> State | None:
        conn = self.app.server.conns.get(t.client.id)
        return None if conn is None else conn.state

    def _settle(self, t: Transcript) -> None:
        """Everything the server will say: answers, a close, or a 408 for a partial request."""
        self._quiet(t)
        state = self._state(t)
        if t.eof or state in (State.IDLE, State.STREAMING):
            return
        if state is None:
            raise Hang(f"closed by the server without a FIN after {IDLE_PASSES} passes")
        if state is State.READING:  # a partial request: 408 and a close at the deadline
            self.app.advance(HEADER_TIMEOUT + 1.5)
            t.drain()
            self._quiet(t)
            if t.eof:
                return
            state = self._state(t)
            raise Hang(f"still {state} past header_timeout + 1.5 s, open")
        raise Hang(f"connection {state} after {IDLE_PASSES} idle passes, open")

    def _check(self, case: Case, t: Transcript, resps: list[Resp]) -> None:
        for r in resps:
            assert r.status != 500, f"500: {r}"
            assert r.reason.strip(), f"no reason phrase: {r}"
            assert SECRET not in r.body, f"a file from outside the static dir: {r}"
            ctype = (r.header("content-type") or b"").lower()
            if ctype.startswith(b"application/json") and r.body:
                try:
                    strict_json(r.body)
                except ValueError as e:
                    raise Failure(f"not strict JSON ({e}): {r}") from None
            if r.stream:
                for data in sse_data(r.body):
                    try:
                        strict_json(data)
                    except ValueError as e:
                        raise Failure(f"an event that is not strict JSON ({e}): {data!r}") from None
        if not case.mutated:
            self._per_request(case, t, resps)

    def _per_request(self, case: Case, t: Transcript, resps: list[Resp]) -> None:
        """Oracles that need to know which answer is whose: the i-th final answer is the
        i-th request's while every request before it was framed exactly."""
        finals = [r for r in resps if r.status >= 200]
        for req, resp in zip(case.reqs, finals, strict=False):
            if resp.status < 400 and not req.users and not _public(req.target):
                raise Failure(f"{resp.status} without valid credentials: {resp}")
            path = req.target.partition(b"?")[0]
            if resp.status == 200 and path == b"/api/me" and req.method == b"GET":
                who = strict_json(resp.body)["user"]
                assert who in req.users, f"answered as {who!r}, credentials of {req.users}"
            viewer = req.users == ("vera",)
            if viewer and req.method == b"POST" and path.endswith((b"/commands", b"/lease")):
                assert resp.status >= 300, f"a viewer's {req.method!r} {path!r}: {resp}"
            if not req.clean:
                return
        if all(r.clean for r in case.reqs):
            assert len(finals) <= len(case.reqs), (
                f"{len(finals)} answers to {len(case.reqs)} requests"
            )
            if not t.eof and self._state(t) is State.IDLE:
                assert len(finals) == len(case.reqs), (
                    f"open and idle after {len(finals)} answers to {len(case.reqs)} requests"
                )

    def _close(self, t: Transcript) -> None:
        t.client.sock.close()
        self.app.clients.remove(t.client)  # the App keeps every client it made: not ours
        for _ in range(IDLE_PASSES):
            if t.client.id not in self.app.server.conns:
                return
            self.app.loop.run_once(0)
        raise Hang(f"connection {self._state(t)} still held after the client closed\n{t}")

    def _no_traceback(self, case: Case, t: Transcript) -> None:
        records = list(self.caught.records)
        self.caught.records.clear()
        if not records:
            return
        formatter = logging.Formatter()
        text = "\n".join(formatter.format(r) for r in records)
        print(text)
        exc = next((r.exc_info[1] for r in records if r.exc_info and r.exc_info[1]), None)
        raise ServerTraceback(f"the server logged:\n{text}\n{case!r}\n{t}") from exc

    def still_serving(self) -> None:
        """A fresh connection gets a normal ``GET /api/me`` answered."""
        client = self.app.client()
        t = Transcript(client)
        self._write(t, request("GET", "/api/me"))
        resps: list[Resp] = []
        for _ in range(IDLE_PASSES):
            self.app.loop.run_once(0)
            t.drain()
            with contextlib.suppress(Malformed):  # not all of it yet
                resps = read_responses(bytes(t.got), [], t.eof)
            if resps or t.eof:
                break
        client.sock.close()
        self.app.clients.remove(client)
        self.app.pump(2)
        if not resps:
            raise Hang(f"no answer to a normal GET /api/me afterwards: {t}")
        assert [r.status for r in resps] == [200], f"GET /api/me afterwards: {resps}"
        assert strict_json(resps[0].body) == ME

    # -- regressions: one exchange with statuses checked by the test ---------------------
    def exchange(self, *pieces: bytes) -> tuple[list[Resp], Transcript]:
        """``pieces`` on a new connection, a loop pass between two: the answers, the transcript."""
        self.caught.records.clear()
        client = self.app.client(addr=self.address())
        t = Transcript(client)
        case = Case((Req(b"", b"", b"", ()),), data=b"".join(pieces), mutated=True)
        for piece in pieces:
            if not self._write(t, piece):
                t.note.append("closed before everything was sent")
                break
            self.app.loop.run_once(0)
            t.drain()
        self._settle(t)
        resps = read_responses(bytes(t.got), [], t.eof)
        self._check(case, t, resps)
        self._no_traceback(case, t)
        return resps, t

    def finish(self, t: Transcript) -> None:
        """Close ``t``'s connection; no traceback; the server still serves; the clock moves."""
        case = Case((Req(b"", b"", b"", ()),), mutated=True)
        self._close(t)
        self._no_traceback(case, t)
        self.still_serving()
        self.app.advance(STEP)
        self._no_traceback(case, t)
        self.watcher.check()


def _expects_continue(req: Req) -> bool:
    expect = [v.strip().lower() for v in req.field(b"Expect")]
    return (
        expect == [b"100-continue"] and req.version == b"HTTP/1.1" and bool(req.body) and req.clean
    )


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("fuzz")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    static = base / "www"
    (static / "sub").mkdir(parents=True)
    for name, content in FILES.items():
        (static / name).write_bytes(content)
    (static / "sub" / "index.html").write_bytes(FILES["index.html"])
    (static / "leak.txt").symlink_to(outside / "secret.txt")
    (static / "leakdir").symlink_to(outside)
    directory = base / "vigil"
    directory.mkdir()
    app = App(
        directory,
        {"http": {"static_dir": str(static), "header_timeout": HEADER_TIMEOUT}},
        users={"alice": "operator", "bob": "operator", "vera": "viewer"},
    )
    harness = Harness(app, app.device(DEVICE))
    logger = logging.getLogger("server")
    logger.addHandler(harness.caught)
    print(f"\nfuzz: hypothesis profile {PROFILE}, seed {SEED} (VIGIL_FUZZ_SEED={SEED} repeats it)")
    try:
        yield harness
    finally:
        logger.removeHandler(harness.caught)
        app.close()


def _tally(seen: Counter[str]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(seen.items()))


def _memory_bounded(harness: Harness, passed: list[Case]) -> None:
    """Replay the last ``REPLAY`` cases that passed, twice; the second time, memory traced
    by Python (the server's buffers, rings, tables, caches; not Hypothesis's, which is not
    running) grows by less than ``MEMORY_BOUND``. RSS is printed, not checked: freed
    memory need not return to the system."""
    replay = passed[-REPLAY:]
    for case in replay:  # fills the rings and caches that are meant to fill
        harness.run(case)
    gc.collect()
    rss = _rss()
    tracemalloc.start()
    try:
        for case in replay:
            harness.run(case)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    mb, rss_mb, bound = grown / 2**20, (_rss() - rss) / 2**20, MEMORY_BOUND / 2**20
    print(f"fuzz: {len(replay)} cases again: {mb:+.2f} MB traced, RSS {rss_mb:+.1f} MB")
    assert grown < MEMORY_BOUND, f"{mb:.1f} MB more held after {len(replay)} cases (< {bound})"


def _signature(e: AssertionError) -> str:
    """Which bug ``e`` is: the exception and the line that raised it (for a traceback the
    server logged, its innermost line in server/)."""
    cause = e.__cause__ if isinstance(e.__cause__, BaseException) else e
    frames = list(traceback.extract_tb(cause.__traceback__))
    if isinstance(e, ServerTraceback):
        frames = [f for f in frames if "/server/" in f.filename] or frames
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(cause).__name__} at {where}"


def _fuzz(harness: Harness, strategy: st.SearchStrategy[Case], examples: int) -> None:
    """``examples`` cases of ``strategy`` through ``harness``; then the memory check.

    Hypothesis stops generating at the first failure and shrinks that one; so that a
    run names every bug, the first pass notes each kind of failure (``_signature``)
    with its first example and goes on. If there were any, a second pass with the same
    seed fails (only) on the first kind, which Hypothesis then shrinks; the others
    come with that failure as a note, unshrunk.
    """
    seen: Counter[str] = Counter()
    passed: list[Case] = []
    found: dict[str, str] = {}
    focus: list[str] = []  # the kind the second pass fails on

    @seed(SEED)
    @settings(settings.get_profile(PROFILE), max_examples=examples)
    @given(strategy)
    def run(case: Case) -> None:
        try:
            resps = harness.run(case)
        except AssertionError as e:
            kind = _signature(e)
            found.setdefault(kind, f"{str(e).splitlines()[0]}\n    {case!r}")
            if kind in focus:
                raise
            return
        seen.update(str(r.status) for r in resps)
        seen["streams"] += any(r.stream for r in resps)
        passed.append(case)

    started = time.monotonic()
    run()
    took = time.monotonic() - started
    print(f"fuzz: {examples} cases in {took:.1f} s: {_tally(seen)}")
    print(f"fuzz: {harness.watcher.events} events on the watching stream so far")
    if found:
        kinds = list(found)
        notes = [f"{len(kinds)} kind(s) of failure, each with its first example:"]
        notes += [f"  {kind}: {text}" for kind, text in found.items()]
        note = "\n".join(notes)
        print(note)
        focus.append(kinds[0])
        try:
            run()
        except BaseException as e:
            e.add_note(f"(shrunk: {kinds[0]})\n{note}")
            raise
        pytest.fail(f"{note}\n(the first did not fail again: it depends on the server's state)")
    _memory_bounded(harness, passed)


# -- the fuzz tests ---------------------------------------------------------------------------


def test_fuzz_requests(harness: Harness) -> None:
    """Generated requests and pipelines, cut into pieces."""
    _fuzz(harness, cases(), EXAMPLES)


def test_fuzz_mutants(harness: Harness) -> None:
    """Valid requests with bytes flipped, inserted, deleted, duplicated or cut off."""
    _fuzz(harness, mutants(), MUTANTS)


# -- what the review found (fixed in server/: these must keep passing) --------------------------

JSON = {"Content-Type": "application/json"}


def test_review_1_tiny_chunks_without_credentials(harness: Harness) -> None:
    """16,000 one-byte chunks (~96 KB of framing) and no credentials: refused, promptly."""
    head = request(
        "POST", "/api/chat", {"Authorization": None, "Transfer-Encoding": "chunked", **JSON}
    )
    body = b"1\r\na\r\n" * 16000 + b"0\r\n\r\n"
    started = time.monotonic()
    resps, t = harness.exchange(head, body)
    elapsed = time.monotonic() - started
    assert [r.status for r in resps] in ([401], [413]), resps
    assert elapsed < 2.0, f"{elapsed:.2f} s for one refused request"
    harness.finish(t)


def test_review_2_non_ascii_basic_credentials(harness: Harness) -> None:
    resps, t = harness.exchange(request("GET", "/api/me", {"Authorization": "Basic \xb2"}))
    assert [r.status for r in resps] == [401], resps
    assert resps[0].header("www-authenticate") == b'Basic realm="vigil", charset="UTF-8"'
    harness.finish(t)


def test_review_8_nan_from_a_viewer_and_then_the_audit_log(harness: Harness) -> None:
    body = b'{"action": "on", "args": {"x": NaN}}'
    target = f"/api/devices/{DEVICE}/commands"
    resps, t = harness.exchange(
        request("POST", target, {"Authorization": basic("vera"), **JSON}, body)
    )
    assert [r.status for r in resps] in ([403], [400]), resps  # a viewer's; or NaN refused first
    harness.finish(t)
    resps, t = harness.exchange(request("GET", "/api/audit?limit=1000"))
    assert [r.status for r in resps] == [200], resps
    strict_json(resps[0].body)
    harness.finish(t)


def test_review_9_json_nested_1000_deep(harness: Harness) -> None:
    body = b'{"action": "on", "args": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
    target = f"/api/devices/{DEVICE}/commands"
    resps, t = harness.exchange(request("POST", target, JSON, body))
    assert [r.status for r in resps] == [400], resps
    harness.finish(t)


def test_review_10_last_event_id_not_a_number(harness: Harness) -> None:
    """``\\xb2`` is "²": ``str.isdigit`` says yes, ``int`` says no. The stream starts anew."""
    resps, t = harness.exchange(request("GET", "/api/events", {"Last-Event-ID": "\xb2"}))
    assert [r.status for r in resps] == [200] and resps[0].stream, resps
    assert b"event: reset" in resps[0].body, resps[0].body
    harness.finish(t)


def test_review_11_content_length_and_chunked_then_a_pipelined_request(harness: Harness) -> None:
    """RFC 9112 §6.3: chunked wins, and the connection closes after the answer (smuggling)."""
    first = (
        request(
            "POST", "/api/chat", {"Content-Length": "4", "Transfer-Encoding": "chunked", **JSON}
        )
        + b'e\r\n{"text":"one"}\r\n0\r\n\r\n'
    )
    resps, t = harness.exchange(first + request("GET", "/api/me"))
    assert len(resps) == 1 and t.eof, f"{resps} (closed: {t.eof})"
    harness.finish(t)


def test_review_12_expect_100_continue_before_the_body(harness: Harness) -> None:
    body = b'{"text":"after continue"}'
    head = request(
        "POST", "/api/chat", {"Expect": "100-continue", "Content-Length": str(len(body)), **JSON}
    )
    c = harness.app.client(addr=harness.address())
    t = Transcript(c)
    harness._write(t, head)
    try:
        harness._wait(t, "100 Continue before the body")
        assert bytes(t.got) == b"HTTP/1.1 100 Continue\r\n\r\n", short(bytes(t.got))
        harness._write(t, body)
        harness._quiet(t)
        resps = read_responses(bytes(t.got), [], t.eof)
        assert [r.status for r in resps] == [100, 200], resps
    finally:
        harness.finish(t)


AUTH = basic("alice").encode()
REQUEST_LINES = [
    ("absolute-form", b"GET http://vigil.test/api/me HTTP/1.1\r\nHost: vigil.test\r\n", 200),
    ("leading-crlf", b"\r\nGET /api/me HTTP/1.1\r\nHost: vigil.test\r\n", 200),
    ("http-2.0", b"GET /api/me HTTP/2.0\r\nHost: vigil.test\r\n", 505),
    ("unknown-method", b"FOO /api/me HTTP/1.1\r\nHost: vigil.test\r\n", 501),
    ("fragment", b"GET /api/me#x HTTP/1.1\r\nHost: vigil.test\r\n", 400),
]


@pytest.mark.parametrize(
    ("head", "status"), [r[1:] for r in REQUEST_LINES], ids=[r[0] for r in REQUEST_LINES]
)
def test_review_13_request_lines(harness: Harness, head: bytes, status: int) -> None:
    resps, t = harness.exchange(head + b"Authorization: " + AUTH + b"\r\n\r\n")
    assert [r.status for r in resps] == [status], resps
    assert resps[0].reason.strip(), f"no reason phrase: {resps[0]}"
    if status == 200:
        assert strict_json(resps[0].body) == ME
    harness.finish(t)


# -- what the fuzzer found beyond the review -------------------------------------------------


@pytest.mark.parametrize("nuls", [1, 3], ids=["one-nul", "three-nuls"])
def test_found_password_with_trailing_nuls_is_refused(harness: Harness, nuls: int) -> None:
    """``alice:<password>\\0`` logged in as alice: scrypt's PBKDF2 keys HMAC-SHA256 with
    the password, and HMAC pads a key shorter than its block (64 bytes) with zeros, so
    trailing NULs hash alike. RFC 7617 §2: no control characters in a user-id or password.
    (Each such spelling is also one more scrypt, which the hash budget does not charge:
    it succeeds.)"""
    token = base64.b64encode(f"alice:{password('alice')}{chr(0) * nuls}".encode()).decode()
    resps, t = harness.exchange(request("GET", "/api/me", {"Authorization": f"Basic {token}"}))
    assert [r.status for r in resps] == [401], resps
    harness.finish(t)


def test_fuzz_harness_sees_what_it_should(harness: Harness) -> None:
    """The oracles themselves: a plain request passes, NaN and a short body are caught."""
    fields = ((b"Host", b"vigil.test"), (b"Authorization", AUTH))
    resps = harness.run(Case((Req(b"GET", b"/api/me", b"HTTP/1.1", fields, users=("alice",)),)))
    assert [r.status for r in resps] == [200] and json.loads(resps[0].body) == ME
    with pytest.raises(ValueError):
        strict_json(b'{"x": NaN}')
    with pytest.raises(Malformed):
        read_responses(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", [], True)
