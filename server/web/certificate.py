"""This device's own TLS certificate: made on first run, made again when it is not valid
now; any certificate's files checked and described for people.

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

The clock. A Pi has no real-time clock: until time sync it may say 1970
(or the day its image was built), and a certificate made then is valid
from then on, for 825 days, so by the right time it has expired; one made
while the clock was ahead is not valid yet. ``remake_reason`` says when
this device's own certificate must be made again: never while the clock
is not set (before ``CLOCK_FLOOR``: a good certificate would look "not
valid yet" at every boot before time sync, and be replaced each time);
once it is, when the certificate is not valid now (beyond ``SLACK``) or
was made while the clock was not set (it starts before ``CLOCK_FLOOR``),
since no vigil made one before that day. A configured certificate is never
touched: ``warning`` says what is wrong with it.

``load`` checks the files before OpenSSL sees them, so every problem is
one line naming the file and what is wrong ("[tls] key /etc/x.key: Is a
directory", "... other users may read it (chmod 600 ...)", "... is not the
key of ..."): a key must be a regular file readable by its owner only, and
without a passphrase (OpenSSL would ask for it on the terminal).

``describe`` gives what a person compares with the browser's certificate
viewer: the SHA-256 fingerprint of the certificate, its subject names and
its validity.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from server.web import tls

CERT_FILE = "tls.local.crt"
KEY_FILE = "tls.local.key"
DAYS = 825
WARN_DAYS = 30
# vigil made no certificate before this day: a clock that says an earlier time is not
# set yet (a Pi before time sync), and a certificate of ours that starts earlier was
# made while it was not. (It may move forward with a release, to a year before it.)
CLOCK_FLOOR = datetime(2026, 11, 1, tzinfo=UTC)
SLACK = timedelta(minutes=10)  # "not valid yet" by less than this: a clock being corrected
REPEAT_WARNING = 86400  # seconds between two warnings about the same certificate
MAX_PEM = 1 << 20  # bytes read of a certificate or key file

PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")
PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


class CertificateError(Exception):
    """The certificate cannot be made or read; str() is one line for stderr."""


def _when(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True, slots=True)
class Description:
    path: Path
    fingerprint: str  # SHA-256 of the DER certificate, AA:BB:… as browsers show it
    names: tuple[str, ...]  # subjectAltName entries
    not_before: datetime  # UTC
    not_after: datetime  # UTC

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def valid_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def invalid_because(self, now: datetime) -> str | None:
        """Why it is not valid at ``now`` ("expired on …", "not valid before …"), or None."""
        if now < self.not_before:
            return f"not valid before {_when(self.not_before)}"
        if now > self.not_after:
            return f"expired on {_when(self.not_after)}"
        return None


def clock_is_set(now: datetime) -> bool:
    """False while the clock says a time before ``CLOCK_FLOOR`` (a Pi before time sync)."""
    return now >= CLOCK_FLOOR


def remake_reason(desc: Description, now: datetime) -> str | None:
    """Why this device's own certificate must be made again at ``now``, or None."""
    if not clock_is_set(now):
        return None
    if desc.not_before < CLOCK_FLOOR:
        return f"the old one was made while the clock was wrong (it said {_when(desc.not_before)})"
    if now + SLACK < desc.not_before:
        why = desc.invalid_because(now)
        return f"the old one is {why} (the clock was ahead when it was made)"
    if now > desc.not_after:
        return f"the old one {desc.invalid_because(now)}"
    return None


def warning(desc: Description, now: datetime, own: bool) -> tuple[int, str] | None:
    """What to log about the certificate in use at ``now``: (logging level, one line), or None.

    ``own``: this device's own, which ``remake_reason`` replaces once the
    clock is set; a configured one is its owner's to renew.
    """
    clock = f"the clock says {_when(now)}, which cannot be right (not set yet?)"
    if own:
        if not clock_is_set(now):
            return logging.WARNING, (
                f"TLS certificate {desc.path}: {clock}; it is checked again, and made"
                " again if need be, once the clock is set"
            )
        days = desc.days_left(now)
        if 0 <= days < WARN_DAYS:
            return logging.WARNING, (
                f"TLS certificate expires in {days:.0f} day(s): vigil makes a new one then"
                " (a new fingerprint to compare)"
            )
        return None
    why = desc.invalid_because(now)
    if why is not None:
        cause = "" if clock_is_set(now) else f"; {clock}"
        return logging.ERROR, (
            f"[tls] cert {desc.path} is not valid now: {why}{cause}; browsers refuse it"
        )
    days = desc.days_left(now)
    if days < WARN_DAYS:
        return logging.WARNING, f"TLS certificate expires in {days:.0f} day(s): renew it"
    return None


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


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
            raise CertificateError("TLS: openssl not found: apt install openssl") from None
        finally:
            os.umask(old)
        if out.returncode:
            raise CertificateError(f"TLS: openssl req failed: {_one_line(out.stderr)[-300:]}")
        os.chmod(tmp_key, 0o600)
        os.chmod(tmp_cert, 0o644)  # public
        os.replace(tmp_key, key)
        os.replace(tmp_cert, cert)


def location(cert: Path | None, key: Path | None, directory: Path) -> tuple[Path, Path]:
    """The configured pair, or this device's own in ``directory`` (the state dir)."""
    if cert is not None and key is not None:
        return cert, key
    return directory / CERT_FILE, directory / KEY_FILE


def _make_own(directory: Path) -> None:
    cert, key = location(None, None, directory)
    try:
        make(cert, key, subject_names())
    except subprocess.TimeoutExpired:
        raise CertificateError("TLS: openssl req took more than a minute") from None
    except OSError as e:
        raise CertificateError(
            f"TLS: cannot write a certificate in {directory}: {e.strerror or e}"
        ) from None


def ensure(directory: Path) -> bool:
    """Make this device's own certificate in ``directory`` unless it exists; True if made."""
    cert, key = location(None, None, directory)
    if cert.exists() and key.exists():
        return False
    _make_own(directory)
    return True


def own_pair(directory: Path, now: datetime) -> tuple[ssl.SSLContext, Description, str | None]:
    """This device's own pair in ``directory``, loaded (``load``): made again first if
    there is none or ``remake_reason`` says so at ``now``. The context, its description,
    and why it was made (for the log) or None. One ``openssl x509`` when nothing is made."""
    cert, key = location(None, None, directory)
    why: str | None = "there was none"
    if cert.exists() and key.exists():
        ctx, desc = load(cert, key, own=True)
        why = remake_reason(desc, now)
        if why is None:
            return ctx, desc, None
    _make_own(directory)
    ctx, desc = load(cert, key, own=True)
    return ctx, desc, why


def _read(path: Path, what: str, private: bool = False) -> bytes:
    """The start of the regular file ``path``; CertificateError "WHAT PATH: what is wrong".

    Opened without blocking, so a FIFO cannot hang start-up; ``private``: a
    file that others than its owner may read is refused, as a device secret is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CertificateError(f"{what} {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CertificateError(f"{what} {path}: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(mode):
            raise CertificateError(f"{what} {path}: not a regular file")
        if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CertificateError(f"{what} {path}: other users may read it (chmod 600 {path})")
        return os.read(fd, MAX_PEM)
    except OSError as e:
        raise CertificateError(f"{what} {path}: {e.strerror}") from None
    finally:
        os.close(fd)


def _openssl(args: list[str], data: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["openssl", *args], input=data, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise CertificateError("TLS: openssl not found: apt install openssl") from None
    except subprocess.TimeoutExpired:
        raise CertificateError(f"TLS: openssl {args[0]} took more than 30 s") from None


def describe(cert: Path, what: str = "TLS certificate") -> Description:
    """Fingerprint, names and validity of the (first) PEM certificate in ``cert``."""
    found = PEM_CERT.search(_read(cert, what))
    if found is None:
        raise CertificateError(f"{what} {cert}: no PEM certificate in it")
    pem = found.group(0).decode("ascii", "replace") + "\n"
    try:
        der = ssl.PEM_cert_to_DER_cert(pem)
    except ValueError:
        raise CertificateError(f"{what} {cert}: no PEM certificate in it") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    out = _openssl(["x509", "-noout", "-startdate", "-enddate", "-ext", "subjectAltName"], pem)
    if out.returncode:
        last = _one_line(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "")
        raise CertificateError(f"{what} {cert}: not a certificate OpenSSL can read ({last})")
    names: list[str] = []
    dates: dict[str, datetime] = {}
    for line in out.stdout.splitlines():
        line = line.strip()
        field, _, value = line.partition("=")
        if field in ("notBefore", "notAfter"):
            dates[field] = datetime.fromtimestamp(ssl.cert_time_to_seconds(value), UTC)
        elif line.startswith(("DNS:", "IP Address:")):
            names = [n.strip() for n in line.split(",")]
    if len(dates) != 2:
        raise CertificateError(f"{what} {cert}: OpenSSL shows no validity dates")
    return Description(cert, fingerprint, tuple(names), dates["notBefore"], dates["notAfter"])


def _check_key(key: Path, what: str) -> None:
    data = _read(key, what, private=True)
    if PEM_KEY.search(data) is None:
        raise CertificateError(f"{what} {key}: no PEM private key in it")
    if b"ENCRYPTED" in data:
        raise CertificateError(
            f"{what} {key} is encrypted: vigil needs it without a passphrase"
            f" (openssl pkey -in {key} -out NEW.key writes it so)"
        )


def _what(own: bool) -> tuple[str, str]:
    return ("TLS certificate", "TLS key") if own else ("[tls] cert", "[tls] key")


def _check(cert: Path, key: Path, own: bool) -> Description:
    """The description of ``cert`` once both files passed the checks OpenSSL does not
    explain; CertificateError naming the file and what is wrong (``own``: this device's
    own pair, "TLS certificate"/"TLS key"; else "[tls] cert"/"[tls] key")."""
    cert_what, key_what = _what(own)
    desc = describe(cert, cert_what)
    _check_key(key, key_what)
    return desc


@contextlib.contextmanager
def _naming_files(cert: Path, key: Path, own: bool) -> Iterator[None]:
    """Turn what loading ``cert`` and ``key`` into OpenSSL raises into a CertificateError."""
    cert_what, key_what = _what(own)
    try:
        yield
    except ssl.SSLError as e:  # an OSError too: first
        if e.reason == "KEY_VALUES_MISMATCH":
            raise CertificateError(
                f"{key_what} {key} is not the key of {cert_what} {cert}"
            ) from None
        raise CertificateError(
            f"{cert_what} {cert} with {key_what} {key}: OpenSSL cannot use them ({e.reason or e})"
        ) from None
    except OSError as e:  # changed since ``check``
        raise CertificateError(f"{cert_what} {cert}, {key_what} {key}: {e.strerror or e}") from None


def load(cert: Path, key: Path, own: bool) -> tuple[ssl.SSLContext, Description]:
    """``check``, then the server context (``server.web.tls``) for the pair."""
    desc = _check(cert, key, own)
    with _naming_files(cert, key, own):
        ctx = tls.server_context(cert, key)
    return ctx, desc
