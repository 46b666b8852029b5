"""This device's own TLS certificate: made on first run, described for people.

With no ``[tls] cert``/``key`` configured, ``ensure`` makes a self-signed
ECDSA P-256 certificate (SHA-256 signature, valid 825 days, the longest
browsers accept) whose subjectAltName lists the host name, ``<host>.local``
(mDNS), ``localhost``, every address the device has at that moment,
127.0.0.1 and ::1. It is made by the ``openssl`` command, which every
Debian and Raspberry Pi OS has (nothing to compile on a Pi), and stored
in the state dir (``[state] dir``; next to the config in a git clone):
``tls.local.crt`` and ``tls.local.key`` (mode 0600, git-ignored). A
person's own certificate (a local CA, ACME by another tool) is two paths
in the config instead.

``describe`` gives what a person compares with the browser's certificate
viewer: the SHA-256 fingerprint of the certificate, its subject names and
its expiry.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CERT_FILE = "tls.local.crt"
KEY_FILE = "tls.local.key"
DAYS = 825
WARN_DAYS = 30


class CertificateError(Exception):
    """The certificate cannot be made or read; str() is one line for stderr."""


@dataclass(frozen=True, slots=True)
class Description:
    fingerprint: str  # SHA-256 of the DER certificate, AA:BB:… as browsers show it
    names: tuple[str, ...]  # subjectAltName entries
    not_after: datetime  # UTC

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def _addresses() -> list[str]:
    """This machine's addresses now, without asking DNS (which may hang at boot, offline).

    ``hostname -I`` lists every interface's addresses where it exists; else
    the source address of a route to a documentation address (a UDP
    ``connect`` sends nothing) gives the main one of each family.
    """
    found: set[str] = {"127.0.0.1", "::1"}
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
        found.update(out.stdout.split())
    except (OSError, subprocess.SubprocessError):
        for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.connect((probe, 9))
                    found.add(s.getsockname()[0])
            except OSError:
                continue
    good = []
    for addr in found:
        try:
            good.append(str(ipaddress.ip_address(addr.partition("%")[0])))
        except ValueError:
            continue
    return sorted(set(good))


def subject_names(host: str | None = None) -> list[str]:
    """``DNS:…`` and ``IP:…`` entries for this device's certificate."""
    host = host or socket.gethostname().split(".")[0] or "vigil"
    dns = [host, f"{host}.local", "localhost"]
    return [f"DNS:{d}" for d in dict.fromkeys(dns)] + [f"IP:{a}" for a in _addresses()]


def make(cert: Path, key: Path, names: list[str]) -> None:
    """Write a new self-signed P-256 certificate and its key (0600) with ``names``."""
    cn = names[0].partition(":")[2]
    with tempfile.TemporaryDirectory(dir=key.parent) as tmp:
        tmp_key, tmp_cert = Path(tmp) / "key", Path(tmp) / "cert"
        argv = [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-nodes",
            "-days", str(DAYS), "-subj", f"/CN={cn}/O=vigil",
            "-addext", "subjectAltName=" + ",".join(names),
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=serverAuth",
            "-keyout", str(tmp_key), "-out", str(tmp_cert),
        ]  # fmt: skip
        old = os.umask(0o077)
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise CertificateError("openssl not found: apt install openssl") from None
        finally:
            os.umask(old)
        if out.returncode:
            raise CertificateError(f"openssl req failed: {out.stderr.strip()[-300:]}")
        os.chmod(tmp_key, 0o600)
        os.chmod(tmp_cert, 0o644)  # public
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)


def location(cert: Path | None, key: Path | None, directory: Path) -> tuple[Path, Path]:
    """The configured pair, or this device's own in ``directory`` (the config's)."""
    if cert is not None and key is not None:
        return cert, key
    return directory / CERT_FILE, directory / KEY_FILE


def ensure(directory: Path) -> bool:
    """Make this device's own certificate in ``directory`` unless it exists; True if made."""
    cert, key = location(None, None, directory)
    if cert.exists() and key.exists():
        return False
    try:
        make(cert, key, subject_names())
    except OSError as e:
        raise CertificateError(f"{directory}: cannot write a certificate: {e.strerror}") from None
    return True


def describe(cert: Path) -> Description:
    """Fingerprint, names and expiry of the PEM certificate at ``cert``."""
    try:
        pem = cert.read_text()
        der = ssl.PEM_cert_to_DER_cert(pem)
    except (OSError, ValueError) as e:
        raise CertificateError(f"{cert}: not a readable PEM certificate ({e})") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-ext", "subjectAltName"],
        input=pem,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode:
        raise CertificateError(f"{cert}: openssl x509 failed: {out.stderr.strip()[-200:]}")
    names: list[str] = []
    not_after = datetime.fromtimestamp(0, UTC)
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("notAfter="):
            not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(line[9:]), UTC)
        elif line.startswith(("DNS:", "IP Address:")):
            names = [n.strip() for n in line.split(",")]
    return Description(fingerprint, tuple(names), not_after)
