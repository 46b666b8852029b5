"""What a section reports: tables of figures, checks against targets, notes.

A section fills one ``SectionReport``; ``markdown()`` renders it for the
README and ``as_json()`` for ``bench/results/latest.json``. Values in rows
are stored already rounded, so both renderings show the same numbers.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any

_OPS = {"≥": operator.ge, "≤": operator.le}


@dataclass(slots=True)
class Table:
    title: str
    columns: dict[str, str]  # row key -> markdown header
    rows: list[dict[str, Any]] = field(default_factory=list)

    def markdown(self) -> list[str]:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns.values()) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = ("" if row.get(key) is None else str(row[key]) for key in self.columns)
            lines.append("| " + " | ".join(cells) + " |")
        return [*lines, ""]


@dataclass(frozen=True, slots=True)
class Check:
    """``value op limit``, e.g. 1.7 ≥ 1.5 x; ``value`` None when it could not be measured.

    ``by_cpu`` is the same figure computed from the server's CPU time per
    request instead of requests per second: less disturbed by other load.
    """

    name: str
    value: float | None
    op: str  # "≥" or "≤"
    limit: float
    unit: str = ""
    by_cpu: float | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.value is None else _OPS[self.op](self.value, self.limit)

    def markdown(self, with_cpu: bool) -> str:
        cells = [self.name, self._show(self.value), f"{self.op} {self.limit:g}{self.unit}"]
        cells.append({True: "yes", False: "**no**", None: "n/a"}[self.ok])
        if with_cpu:
            cells.append(self._show(self.by_cpu) if self.by_cpu is not None else "")
        return "| " + " | ".join(cells) + " |"

    def _show(self, value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}{self.unit}"


@dataclass(slots=True)
class SectionReport:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        for table in (t for t in self.tables if t.rows):
            lines += table.markdown()
        if self.checks:
            with_cpu = any(c.by_cpu is not None for c in self.checks)
            header = ["target", "measured", "goal", "met", *(["by CPU µs/req"] * with_cpu)]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += [c.markdown(with_cpu) for c in self.checks]
            lines.append("")
        lines += [f"- {note}" for note in self.notes]
        if self.error:
            lines.append(f"- **section failed:** {self.error}")
        return "\n".join(lines).rstrip() + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "tables": [asdict(t) for t in self.tables],
            "checks": [{**asdict(c), "ok": c.ok} for c in self.checks],
            "notes": self.notes,
            "error": self.error,
        }
