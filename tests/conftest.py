"""Fixtures shared by every test: a factory that starts real vigil processes."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Vigil, write_config


@pytest.fixture
def start_vigil(tmp_path: Path) -> Iterator[Callable[..., Vigil]]:
    """``start_vigil(sections=None, users=None)`` → a running Vigil, stopped after the test."""
    started: list[Vigil] = []

    def start(
        sections: dict[str, dict[str, Any]] | None = None, users: dict[str, str] | None = None
    ) -> Vigil:
        directory = tmp_path / f"vigil{len(started)}"
        directory.mkdir()
        vigil = Vigil(write_config(directory, sections, users))
        started.append(vigil)
        return vigil

    yield start
    for vigil in started:
        vigil.stop()


@pytest.fixture
def vigil(start_vigil: Callable[..., Vigil]) -> Vigil:
    """A vigil with the default test config."""
    return start_vigil()
