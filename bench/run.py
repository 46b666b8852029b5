"""Run the benchmark: ``python -m bench.run [SECTION ...]`` or ``python bench/run.py``.

Imports every ``bench/section_*.py`` (each registers its sections), runs the
named sections (default: every section registered with ``default=True``),
prints a markdown report for the README on stdout, progress on stderr, and
writes the same figures to ``bench/results/latest.json``. Exit status 1 if
a section could not be measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import from the repo root, not from bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import shutil
import signal
import subprocess
import tempfile
from typing import Any

import bench
from bench.harness import INDEX_SIZE, NOISE, REPO, SECTIONS, Bench, BenchError, progress
from bench.report import SectionReport

RESULTS = Path(bench.__file__).with_name("results") / "latest.json"


def load_sections() -> None:
    for module in pkgutil.iter_modules(bench.__path__):
        if module.name.startswith("section_"):
            importlib.import_module(f"bench.{module.name}")


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    except OSError:
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if out.returncode in (0, 1) and lines else None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def _note_noise(report: SectionReport) -> None:
    rows = [row for table in report.tables for row in table.rows if "others_pct" in row]
    noisy = [row for row in rows if max(row["others_pct"], row["wrk_others_pct"]) > NOISE * 100]
    if noisy:
        report.notes.append(
            f"{len(noisy)} of {len(rows)} runs were disturbed: other processes took more than "
            f"{NOISE:.0%} of the server's or wrk's core (others %), so their req/s are too low "
            "and their latencies too high; CPU µs/req and the ratios by CPU time hold up better."
        )


def meta(b: Bench) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _first_line(["git", "rev-parse", "--short", "HEAD"]),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (_first_line(["wrk", "-v"]) or "wrk ?").partition(" Copyright")[0],
        "loadavg_5m": round(os.getloadavg()[1], 2),
        "duration_s": b.duration,
        "warmup_s": b.warmup,
        "attempts": b.attempts,
        "server_cpu": b.server_cpu,
        "client_cpu": b.client_cpu,
        "index_bytes": INDEX_SIZE,
    }


def markdown(info: dict[str, Any], reports: list[SectionReport]) -> str:
    head = [
        "## Benchmark",
        "",
        f"{info['date']}, commit {info['commit'] or '(none)'}; {info['cpu']}, "
        f"Linux {info['kernel']}, Python {info['python']}, {info['wrk']}; load average "
        f"{info['loadavg_5m']} (5 min) at the end.",
        "",
        f"Loopback; the server is pinned to CPU {info['server_cpu']}, wrk (1 thread) to CPU "
        f"{info['client_cpu']}. Each run: {info['warmup_s']} s warm-up + {info['duration_s']} s; "
        f"while other processes take more than {NOISE:.0%} of the server's or wrk's core "
        f"(others %) it is repeated, up to {info['attempts']} runs, and the best counts. "
        "CPU µs/req: the server's utime+stime over the run ÷ requests. RSS/HWM: VmRSS/VmHWM "
        "after the run.",
        "",
    ]
    return "\n".join(head) + "\n".join(r.markdown() for r in reports)


def main(argv: list[str] | None = None) -> int:
    load_sections()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("sections", nargs="*", metavar="SECTION", help="default: the default run")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up (1)")
    parser.add_argument(
        "--attempts", type=int, default=3, help="runs per figure while disturbed (3)"
    )
    parser.add_argument("--server-cpu", type=int, default=1, help="core for servers (1)")
    parser.add_argument("--client-cpu", type=int, default=0, help="core for wrk (0)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    args = parser.parse_args(argv)

    if args.list:
        for s in SECTIONS.values():
            print(f"{s.name:12} {s.title}{'' if s.default else '  (not in the default run)'}")
        return 0
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}")
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (apt-get install wrk util-linux)")
    names = args.sections or [s.name for s in SECTIONS.values() if s.default]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    reports = []
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        b = Bench(
            Path(tmp),
            duration=args.duration,
            warmup=args.warmup,
            server_cpu=args.server_cpu,
            client_cpu=args.client_cpu,
            attempts=args.attempts,
        )
        for name in names:
            b.report = SectionReport(name, SECTIONS[name].title)
            progress(f"section {name}: {b.report.title}")
            try:
                SECTIONS[name].run(b)
            except BenchError as e:
                b.report.error = str(e)
                progress(f"section {name} failed: {e}")
            _note_noise(b.report)
            reports.append(b.report)
        info = meta(b)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = {"meta": info, "sections": {r.name: r.as_json() for r in reports}}
    args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    progress(f"wrote {args.json}")
    print(markdown(info, reports), end="")
    return 1 if any(r.error for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
