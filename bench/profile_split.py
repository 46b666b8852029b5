"""Where a profiled server's time goes: cProfile self time grouped by whose code ran.

``split(FILE)`` reads a ``python -m cProfile -o FILE`` profile and adds up
self time (tottime) per group, by the file a function is in:

- ``h11``: functions in the h11 package;
- ``vigil``: functions in the repository's ``server/``;
- ``syscalls``: built-ins that make system calls: methods of sockets,
  ``select``, ``os`` (posix) functions, reads and writes of files;
- ``stdlib/other``: the rest, and built-ins that make no system call.

Built-ins have no file of their own; ``charged`` gives the self time of the
ones that make no system call (str.join, regex matching, isinstance, ...)
to the group of each caller, as cProfile records it per caller. cProfile's
clock is wall time: select()'s share includes any wait for requests.
"""

from __future__ import annotations

import importlib.util
import os
import pstats
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import REPO

GROUPS = ("h11", "vigil", "syscalls", "stdlib/other")
SYSCALL = re.compile(
    r"<(?:method '\w+' of '_socket\.socket' objects"
    r"|built-in method (?:select|posix)\.\w+"
    r"|method '(?:write|flush|read|readinto|readline)' of '_io\.\w+' objects)>"
)
STARTUP = (  # what only start-up runs: imports (cumulative) and the first scrypt hash
    ("<frozen importlib._bootstrap>", "_find_and_load"),
    ("~", "<built-in method _hashlib.scrypt>"),
)

Func = tuple[str, int, str]  # pstats' (file, line, function name)


def _dir(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(path) + os.sep


def _h11_dir() -> str:
    spec = importlib.util.find_spec("h11")
    assert spec is not None and spec.origin is not None, "h11 is not installed"
    return _dir(Path(spec.origin).parent)


@dataclass(frozen=True, slots=True)
class Split:
    """Seconds of self time per group, both ways (see the module's docstring)."""

    own: dict[str, float]
    charged: dict[str, float]
    startup: float  # seconds spent importing and in scrypt, included in the groups

    @property
    def total(self) -> float:
        return sum(self.own.values())

    def percent(self, seconds: float) -> float:
        return round(seconds * 100 / self.total, 1)


def split(path: Path) -> Split:
    stats: dict[Func, tuple[Any, ...]] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    dirs = {"h11": _h11_dir(), "vigil": _dir(REPO / "server")}

    def group(func: Func) -> str:
        filename, _, name = func
        if filename == "~":
            return "syscalls" if SYSCALL.fullmatch(name) else "stdlib/other"
        real = os.path.realpath(filename)
        return next((g for g, d in dirs.items() if real.startswith(d)), "stdlib/other")

    own = dict.fromkeys(GROUPS, 0.0)
    charged = dict.fromkeys(GROUPS, 0.0)
    startup = 0.0
    for func, (_, _, tottime, cumtime, callers) in stats.items():
        mine = group(func)
        own[mine] += tottime
        if (func[0], func[2]) in STARTUP:
            startup += cumtime
        if func[0] != "~" or mine == "syscalls":
            charged[mine] += tottime
            continue
        for caller, (_, _, caller_tt, _) in callers.items():
            charged[group(caller)] += caller_tt
            tottime -= caller_tt
        charged["stdlib/other"] += max(tottime, 0.0)  # called from nowhere profiled
    return Split(own, charged, startup)
