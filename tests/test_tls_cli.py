"""The certificate as a person meets it: the first-run banner and ``tls-info``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from support import ROOT, Vigil, der_sha256, make_certificate


def tls_info(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "tls-info", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_first_run_shows_the_fingerprint_and_tls_info_repeats_it(
    start_vigil: Callable[..., Vigil],
) -> None:
    vigil = start_vigil()
    cert = vigil.config.parent / "tls.local.crt"
    key = vigil.config.parent / "tls.local.key"
    assert key.stat().st_mode & 0o777 == 0o600
    banner = vigil.wait_for_log("made a TLS certificate")
    assert str(cert) in banner
    log = vigil.log()
    assert der_sha256(cert) in log.partition("made a TLS certificate")[2]
    info = tls_info(vigil.config)
    assert info.returncode == 0, info.stderr
    assert f"SHA-256:     {der_sha256(cert)}" in info.stdout
    assert "DNS:localhost" in info.stdout and "IP Address:127.0.0.1" in info.stdout
    assert "(825 days)" in info.stdout or "(824 days)" in info.stdout
    vigil.stop()
    first = der_sha256(cert)
    again = Vigil(vigil.config)  # a restart keeps the certificate people have accepted
    try:
        again.wait_for_log("listening on https")
        assert der_sha256(cert) == first
        assert again.log().count("made a TLS certificate") == 1  # the first run's only
    finally:
        again.stop()


def test_tls_info_without_a_certificate_says_how_to_get_one(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[http]\nstatic_dir = "{ROOT / "static"}"\n')
    info = tls_info(tmp_path / "config.toml")
    assert info.returncode == 1
    assert info.stderr.startswith("vigil: ") and "no certificate yet" in info.stderr
    assert info.stderr.count("\n") == 1


def test_a_certificate_near_its_expiry_is_warned_about(
    start_vigil: Callable[..., Vigil], tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, ["DNS:localhost"])  # valid for 2 days
    vigil = start_vigil({"tls": {"cert": str(cert), "key": str(key)}})
    line = vigil.wait_for_log("TLS certificate expires in")
    assert "WARNING" in line and ("2 day(s)" in line or "1 day(s)" in line)
    assert "made a TLS certificate" not in vigil.log()  # its own pair, none made
