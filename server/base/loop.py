"""The event loop: one selector, a timer heap, end-of-pass hooks and signal flags.

Strategy (boa's select.c, socketserver's docstring): every socket the server
owns is registered with one `selectors` selector together with a callback
``handler(mask)``; one pass of the loop waits until the earliest timer is due
or a socket is ready, runs the ready callbacks, then the due timers, then the
end-of-pass hooks.

Invariants:
- The loop knows file objects, masks and callbacks, nothing of HTTP or SCTP.
- One thread. Callbacks must not block; they run to completion. An exception
  that escapes a callback is logged and the loop goes on (owners such as
  ``Connection`` keep their own boundary so this is a last resort).
- End-of-pass hooks (``at_end_of_pass``) run after every pass, in the order
  they were added, and once more when ``run`` returns: the server uses one
  to make the audit log durable and then write every connection's output,
  so what a pass acknowledges leaves only after it is on disk.
- Signal handlers only record the signal number (and poke a wake-up socket
  so ``select`` returns); the callbacks for signals run at the top of the
  next pass, like boa's ``sighup_flag``.
- The select() backend cannot watch fds >= FD_SETSIZE (1024), and no
  process may open more files than its RLIMIT_NOFILE allows: ``fd_limit``
  is the smaller of the two (read at start), the number the owners of
  sockets compare against (``Server.capacity``).
- Time is the injected ``clock`` (monotonic seconds), so tests can drive it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import resource
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

# select()'s FD_SETSIZE; epoll has no such limit but we keep one number.
FD_SETSIZE = 1024

Handler = Callable[[int], None]


class Timer:
    """A callback due at ``when`` (monotonic seconds); ``cancel()`` drops it."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def make_selector(backend: str) -> selectors.BaseSelector:
    """Return the selector for ``backend`` ("select" or "epoll")."""
    if backend == "select":
        return selectors.SelectSelector()
    if backend == "epoll":
        return selectors.EpollSelector()
    raise ValueError(f"unknown loop backend {backend!r} (select, epoll)")


class Loop:
    """One selector, a timer heap, end-of-pass hooks and deferred signal callbacks."""

    def __init__(
        self, backend: str = "select", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.backend = backend
        self.now = clock
        self._selector = make_selector(backend)
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._end_of_pass: list[Callable[[], None]] = []
        self._signal_callbacks: dict[int, Callable[[], None]] = {}
        self._pending_signals: list[int] = []
        self._running = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.register(self._wake_r, READ, self._drain_wakeup)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        limit = FD_SETSIZE if backend == "select" else 1 << 20
        self.fd_limit = limit if soft == resource.RLIM_INFINITY else min(limit, soft)

    # -- sockets ---------------------------------------------------------
    def register(self, fileobj: Any, events: int, handler: Handler) -> None:
        self._selector.register(fileobj, events, handler)

    def modify(self, fileobj: Any, events: int, handler: Handler) -> None:
        self._selector.modify(fileobj, events, handler)

    def unregister(self, fileobj: Any) -> None:
        self._selector.unregister(fileobj)

    # -- time ------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.now() + delay, callback)

    def call_every(self, interval: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` every ``interval`` seconds, for the loop's lifetime."""

        def tick() -> None:
            self.call_later(interval, tick)
            callback()

        self.call_later(interval, tick)

    def at_end_of_pass(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after every pass (and when ``run`` returns)."""
        self._end_of_pass.append(hook)

    # -- signals ---------------------------------------------------------
    def on_signal(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop (never in the handler) after ``signum``."""
        self._signal_callbacks[signum] = callback
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signum, self._record_signal)

    def _record_signal(self, signum: int, _frame: object) -> None:
        self._pending_signals.append(signum)

    def _drain_wakeup(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    # -- running ---------------------------------------------------------
    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        """Run passes until ``stop()``."""
        self._running = True
        try:
            while self._running:
                while self._pending_signals:
                    self._call(self._signal_callbacks[self._pending_signals.pop(0)])
                if not self._running:  # a signal callback stopped the loop: no select() wait
                    break
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - self.now())
                self.run_once(timeout)
        finally:
            self._finish_pass()

    def run_once(self, timeout: float | None = 0) -> None:
        """One pass: wait up to ``timeout`` s, run ready callbacks, due timers, hooks."""
        for key, mask in self._selector.select(timeout):
            try:
                key.data(mask)
            except Exception:
                log.exception("callback for fd %s failed", key.fd)
        timers = self._timers
        if timers:
            now = self.now()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if not timer.cancelled:
                    self._call(timer.callback)
        self._finish_pass()

    def _finish_pass(self) -> None:
        for hook in self._end_of_pass:
            self._call(hook)

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("loop callback %r failed", callback)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
