"""Fixtures shared by every test: vigil in this process (``make_app``, ``app``) or real processes.

``make_app`` and ``app`` are ``tests/testclient.App``s, closed after the test;
``start_vigil`` and ``vigil`` are real processes (``tests/support.Vigil``);
``ns`` is the network namespace of tests/netns.py (root only), torn down after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Namespace, available
from tests.support import Vigil, require, write_config
from tests.testclient import App


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


@pytest.fixture
def ns() -> Iterator[Namespace]:
    """A network namespace behind a veth pair (a cable that can be pulled), for this test."""
    ok, why = available()
    require(ok, why)
    with Namespace() as namespace:
        yield namespace


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """``make_app(sections=None, users=None, directory=None)`` → an in-process App.

    ``directory``: that of an earlier (closed) App, to start again on its audit log.
    """
    apps: list[App] = []

    def make(
        sections: dict[str, dict[str, Any]] | None = None,
        users: dict[str, str] | None = None,
        directory: Path | None = None,
    ) -> App:
        if directory is None:
            directory = tmp_path / f"app{len(apps)}"
            directory.mkdir()
        app = App(directory, sections, users)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """An in-process vigil with the default test config."""
    return make_app()


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything logged an exception with its traceback."""
    caplog.set_level(logging.INFO, logger="server")
    yield
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()
