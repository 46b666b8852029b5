"""A real Prometheus (Debian's ``prometheus``) scrapes a real vigil over HTTPS.

Prometheus runs on loopback with a scrape config as the README shows it:
the scraper's bearer token from a file (``authorization: credentials_file``),
vigil's own certificate as the CA, a scrape a second. The test asks
Prometheus's HTTP API, not vigil: the target is up, a second job with a
wrong token is down with vigil's 401, and vigil's metrics have the values
of what happened (alice online, the certificate's expiry).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support import Vigil, free_port, https_client, require

DEADLINE = 30.0  # seconds for Prometheus to start and to see what a scrape a second brings

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: vigil
    scheme: https
    authorization:
      credentials_file: {token}
    tls_config:
      ca_file: {cert}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: wrong-token
    scheme: https
    authorization:
      credentials: {wrong}
    tls_config:
      ca_file: {cert}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` on a loopback port of its own, with ``config``; its HTTP API."""

    def __init__(self, binary: str, directory: Path, config: str) -> None:
        (directory / "prometheus.yml").write_text(config)
        self.log_path = directory / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def until(self, what: str, probe: Callable[[], Any]) -> Any:
        """``probe()``'s first true answer within ``DEADLINE``; else fail with the log."""
        deadline = time.monotonic() + DEADLINE
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                last = probe()
            except OSError as e:  # not listening yet
                last = e
            if last and not isinstance(last, OSError):
                return last
            time.sleep(0.2)
        pytest.fail(f"prometheus: {what}: not within {DEADLINE:g} s ({last!r}):\n{self.log()}")

    def targets(self) -> dict[str, dict[str, Any]]:
        """The active targets by job, once each has been scraped (health up or down)."""
        active = self.api("targets")["activeTargets"]
        return {t["labels"]["job"]: t for t in active if t["health"] != "unknown"}

    def value(self, expr: str) -> float | None:
        """The value of ``expr`` now (one series), None if there is none."""
        result = self.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def number(self, expr: str) -> float:
        value = self.value(expr)
        assert value is not None, f"{expr}: no series"
        return value

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    require(binary is not None, "prometheus is not installed (apt-get install prometheus)")
    assert binary is not None
    return binary


@pytest.fixture
def scraped(
    prometheus_binary: str, start_vigil: Callable[..., Vigil], tmp_path: Path
) -> Iterator[tuple[Vigil, Prometheus]]:
    token = tmp_path / "metrics.token"
    token.write_text(secrets.token_hex(32) + "\n")
    token.chmod(0o600)
    vigil = start_vigil({"metrics": {"token_file": str(token)}})
    assert vigil.tls_port is not None
    config = CONFIG.format(
        token=token, cert=vigil.cert, port=vigil.tls_port, wrong=secrets.token_hex(32)
    )
    prometheus = Prometheus(prometheus_binary, tmp_path, config)
    try:
        yield vigil, prometheus
    finally:
        prometheus.stop()


def test_prometheus_scrapes_vigil(scraped: tuple[Vigil, Prometheus]) -> None:
    vigil, prometheus = scraped
    with https_client(vigil, "alice") as alice:  # one keep-alive connection: alice online
        assert alice.get("/api/me").status_code == 200
        prometheus.until("both targets scraped", lambda: len(prometheus.targets()) == 2)
        targets = prometheus.targets()
        assert targets["vigil"]["health"] == "up", targets["vigil"]["lastError"]
        assert targets["wrong-token"]["health"] == "down"
        assert "401" in targets["wrong-token"]["lastError"]
        assert prometheus.until("alice online", lambda: prometheus.value("vigil_people_online"))
        assert prometheus.number("vigil_people_online") == 1  # the scraper is nobody online
    assert prometheus.number('vigil_http_requests_total{code="2xx"}') >= 1
    cert = x509.load_pem_x509_certificate(vigil.cert.read_bytes())
    expiry = prometheus.number("vigil_tls_certificate_expiry_timestamp_seconds")
    assert expiry == cert.not_valid_after_utc.timestamp()
    assert prometheus.number("process_resident_memory_bytes") > 10e6
    assert prometheus.number('up{job="vigil"}') == 1
