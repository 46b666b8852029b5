"""GET /metrics in process: the scraper's token, the budget, and values that follow what
people and devices do, read with prometheus_client's own parser; Debian's ``promtool
check metrics`` on the real output. A real Prometheus scrapes a real vigil in
tests/test_prometheus.py.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import config as configmod
from tests.support import ROOT, require, write_config
from tests.testclient import App, Client, online
from tests.wire import request

JSON = {"Content-Type": "application/json"}

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def token_file(directory: Path, token: str | None = None, mode: int = 0o600) -> tuple[Path, str]:
    """A scraper's token in a file of ``directory`` (mode ``mode``), and the token."""
    token = token or secrets.token_hex(32)
    path = directory / "metrics.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path, token


def metrics_app(make_app: Callable[..., App], tmp_path: Path, **metrics: Any) -> tuple[App, str]:
    path, token = token_file(tmp_path)
    app = make_app({"metrics": {"token_file": str(path), **metrics}})
    return app, token


def scrape(client: Client, token: str) -> dict[str, float]:
    """The samples of one scrape, ``name{label="value",…}`` → value."""
    resp = client.get("/metrics", None, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200, resp.body
    assert resp.headers["content-type"] == CONTENT_TYPE
    samples = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_off_until_a_token_is_configured(app: App) -> None:
    c = app.client()
    resp = c.get("/metrics")  # alice's Basic credentials open nothing here
    assert resp.status == 404
    assert "[metrics] token_file" in resp.json()["error"]


def test_only_the_scrapers_token_opens_it(make_app: Callable[..., App], tmp_path: Path) -> None:
    app, token = metrics_app(make_app, tmp_path)
    c = app.client()
    for headers in (
        {},
        {"Authorization": "Bearer " + "0" * 64},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
    ):
        resp = c.get("/metrics", None, headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["www-authenticate"] == 'Bearer realm="vigil metrics"'
    resp = c.get("/metrics")  # a person's credentials: not a scraper's
    assert resp.status == 401
    samples = scrape(c, token)
    assert samples["vigil_people_online"] == 0
    assert "process_resident_memory_bytes" in samples
    assert "process_cpu_seconds_total" in samples


def test_a_scraper_is_nobody_online(make_app: Callable[..., App], tmp_path: Path) -> None:
    """No place of the ten, no join or leave in the audit log, no presence event."""
    app, token = metrics_app(make_app, tmp_path)
    c = app.client()
    for _ in range(3):
        assert scrape(c, token)["vigil_people_online"] == 0
    assert app.server.presence.online() == ()
    assert app.records("join") == []
    assert app.client().online() == ["alice"]


def test_values_follow_people_devices_and_commands(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    app, token = metrics_app(make_app, tmp_path)
    scraper = app.client()
    before = scrape(scraper, token)
    assert before["vigil_devices_online"] == 0
    assert before['vigil_commands_total{outcome="ok"}'] == 0
    assert before["vigil_leases_held"] == 0
    assert before['vigil_mqtt_bridge_state{state="off"}'] == 1
    assert before['vigil_connections{state="reading"}'] == 1  # the scraper's own request
    assert before['vigil_connections{state="idle"}'] == 0

    alice = online(app, "alice")
    bob = online(app, "bob")
    assert bob.get("/api/nothing", "bob").status == 404
    lamp = app.device("lamp-1")
    app.device("pump-1").lose()
    resp = alice.post("/api/devices/lamp-1/commands", {"entity": "brightness", "value": 40})
    assert resp.status == 200 and resp.json()["ok"] is True
    resp = bob.post("/api/devices/lamp-1/commands", {"entity": "power", "value": True}, "bob")
    assert resp.status == 409  # alice holds it
    lamp.answers = False  # the next command fails on the device
    body = json.dumps({"entity": "power", "value": True}).encode()
    alice.send(request("POST", "/api/devices/lamp-1/commands", JSON, body))
    app.pump()
    lamp.answer(ok=False)
    assert alice.response().json()["ok"] is False
    after = scrape(scraper, token)

    assert after["vigil_people_online"] == 2
    assert after["vigil_people_max"] == 10
    assert after["vigil_devices_online"] == 1
    assert after["vigil_leases_held"] == 1
    assert after['vigil_commands_total{outcome="ok"}'] == 1
    assert after['vigil_commands_total{outcome="failed"}'] == 1
    assert after['vigil_commands_total{outcome="refused"}'] == 1
    assert after['vigil_commands_total{outcome="timeout"}'] == 0
    assert after["vigil_command_duration_seconds_count"] == 2  # answered, not refused
    assert after['vigil_connections{state="idle"}'] == 2  # alice's and bob's
    assert (
        after['vigil_http_requests_total{code="4xx"}']
        - before['vigil_http_requests_total{code="4xx"}']
        == 2
    )  # bob's 404 and 409
    assert (
        after['vigil_http_requests_total{code="2xx"}']
        > before['vigil_http_requests_total{code="2xx"}']
    )
    assert after["vigil_http_request_duration_seconds_count"] == sum(
        v for k, v in after.items() if k.startswith("vigil_http_requests_total")
    )  # every response counted once, with its latency
    assert after["vigil_audit_fsync_duration_seconds_count"] > 0
    # no HTTPS listener in process, so no certificate served: its expiry is not made up
    # (tests/test_prometheus.py reads it from a real vigil)
    assert "vigil_tls_certificate_expiry_timestamp_seconds" not in after


def test_commands_that_time_out_or_find_no_device(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    app, token = metrics_app(make_app, tmp_path)
    scraper, alice = app.client(), online(app, "alice")
    app.device("lamp-1", answers=False)
    app.device("pump-1").lose()
    resp = alice.post("/api/devices/pump-1/commands", {"entity": "power", "value": True})
    assert resp.status == 503
    body = json.dumps({"entity": "power", "value": True}).encode()
    alice.send(request("POST", "/api/devices/lamp-1/commands", JSON, body))
    app.advance(5.5)  # [control] command_timeout 5 s
    assert alice.response().status == 504
    samples = scrape(scraper, token)
    assert samples['vigil_commands_total{outcome="unavailable"}'] == 1
    assert samples['vigil_commands_total{outcome="timeout"}'] == 1
    assert samples["vigil_devices_online"] == 1
    # the timeout's latency is observed (the whole 5 s), the refusal's is not
    assert samples["vigil_command_duration_seconds_count"] == 1
    assert samples['vigil_command_duration_seconds_bucket{le="2.5"}'] == 0
    assert samples['vigil_command_duration_seconds_bucket{le="10.0"}'] == 1


def test_sighup_turns_metrics_on(make_app: Callable[..., App], tmp_path: Path) -> None:
    app = make_app()
    c = app.client()
    assert c.get("/metrics", None).status == 404
    path, token = token_file(tmp_path)
    write_config(app.directory, {"metrics": {"token_file": str(path)}})
    app.server.reload()
    assert scrape(c, token)["vigil_people_online"] == 0
    resp = c.get("/metrics", None, headers={"Authorization": f"Bearer {secrets.token_hex(32)}"})
    assert resp.status == 401


@pytest.mark.parametrize("burst", [3])
def test_scrapes_have_a_budget(make_app: Callable[..., App], tmp_path: Path, burst: int) -> None:
    app, token = metrics_app(make_app, tmp_path, scrapes_per_second=0.5, scrape_burst=burst)
    c = app.client()
    for _ in range(burst):
        scrape(c, token)
    resp = c.get("/metrics", None, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 429
    assert resp.headers["retry-after"] == "2"
    app.advance(2.0)
    scrape(c, token)


def test_promtool_accepts_the_output(make_app: Callable[..., App], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool is not installed (apt-get install prometheus)")
    assert promtool is not None
    app, token = metrics_app(make_app, tmp_path)
    online(app, "alice")
    app.device("lamp-1")
    c = app.client()
    resp = c.get("/metrics", None, headers={"Authorization": f"Bearer {token}"})
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=resp.body, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""  # not even a lint warning


@pytest.mark.parametrize(
    ("token", "mode", "error"),
    [
        ("short", 0o600, "at least 32"),
        ("x" * 40 + " y", 0o600, "at least 32"),
        (secrets.token_hex(32), 0o644, "other users may read it"),
    ],
)
def test_a_bad_token_file_is_a_config_error(
    tmp_path: Path, token: str, mode: int, error: str
) -> None:
    path, _ = token_file(tmp_path, token, mode)
    config = write_config(tmp_path, {"metrics": {"token_file": str(path)}})
    with pytest.raises(configmod.ConfigError, match=error):
        configmod.load(config)


@pytest.mark.parametrize("on", [False, True])
def test_prometheus_client_is_imported_only_when_metrics_are_on(tmp_path: Path, on: bool) -> None:
    """Its 1.8 MB of RSS are paid only by a vigil that is scraped."""
    sections = {"metrics": {"token_file": str(token_file(tmp_path)[0])}} if on else None
    config = write_config(tmp_path, sections)
    code = (
        "import sys; from server import config; from server.app import Server;"
        "from server.base.loop import Loop; Server(config.load(sys.argv[1]), Loop());"
        "print('prometheus_client' in sys.modules)"
    )
    run = [sys.executable, "-c", code, str(config)]
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(on), out.stderr
