"""Test support: start the real vigil process with a config written by the test.

``Vigil`` runs ``python -m server --config FILE`` on a free port (loopback by
default), waits until it listens (HTTPS too: ``https``, ``tls_port``), and
stops it with SIGTERM. ``USERS`` are the people every test config knows;
passwords are their names reversed; ``basic`` is the one way tests write a
Basic ``Authorization`` header.

TLS: ``Vigil.cert`` is the certificate it serves (the configured one, or the
one it made on first run beside its config) and ``Vigil.ssl_context()``
trusts exactly that one; ``make_certificate`` makes a pair with openssl for
tests that configure their own; ``spki_sha256`` is what Chromium's
``--ignore-certificate-errors-spki-list`` takes.

Stdlib only at import (pytest and server.auth are imported where used), so
that tests/wire.py and tests/netns.py can use it outside pytest too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
IN_CI = bool(os.environ.get("CI"))

USERS: dict[str, str] = {
    "alice": "operator",
    "bob": "operator",
    "vera": "viewer",
    **{f"user{i:02d}": "operator" for i in range(1, 12)},
}


def password(user: str) -> str:
    return user[::-1] + "-pw"


def basic(user: str, pw: str | None = None) -> str:
    token = base64.b64encode(f"{user}:{pw if pw is not None else password(user)}".encode())
    return "Basic " + token.decode()


@functools.cache
def _hash(pw: str) -> str:
    from server.people.auth import hash_password

    return hash_password(pw)


# For tests that fill the event ring or the chat history quickly: no chat rate limit.
CHATTY: dict[str, dict[str, Any]] = {"limits": {"chat_burst": 100000, "chat_per_minute": 1000000}}


def require(condition: bool, reason: str) -> None:
    """Skip a test that cannot run here; in CI (CI=true) fail instead: nothing skips silently."""
    if condition:
        return
    import pytest

    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def restore_fresh(archive: Path, root: Path) -> tuple[Path, Path, str]:
    """``python -m server restore ARCHIVE`` onto a fresh install's layout under ``root``
    (``etc/vigil/config.toml`` naming ``var/lib/vigil``): the config, the state dir, and
    what restore printed; the test fails if it refused."""
    etc, state = root / "etc/vigil", root / "var/lib/vigil"
    etc.mkdir(parents=True)
    fresh = etc / "config.toml"
    fresh.write_text(f'[http]\nstatic_dir = "{ROOT / "static"}"\n\n[state]\ndir = "{state}"\n')
    done = server_cmd("restore", str(archive), "--config", str(fresh))
    assert done.returncode == 0, done.stderr
    return fresh, state, done.stdout


def enough_fds(want: int) -> None:
    """Raise this process's RLIMIT_NOFILE to ``want`` (vigil, started after, inherits it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        enough = hard == resource.RLIM_INFINITY or hard >= want
        require(enough, f"RLIMIT_NOFILE hard limit {hard} < {want}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def audit_records(log: Any, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` records of an ``AuditLog``, newest first, as GET /api/audit has them."""
    return list(json.loads(log.newest_json(limit))["records"])


def server_cmd(
    *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m server ARGS…`` run to its end (the CLI, or a start expected to fail)."""
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def _limit_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def vm_rss_kib(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match is not None
    return int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User and system CPU time process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def url_host(host: str) -> str:
    """``host`` as it goes into a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def make_certificate(directory: Path, names: list[str], stem: str = "test") -> tuple[Path, Path]:
    """A self-signed P-256 pair made by openssl: ``STEM.crt`` with SAN ``names``, ``STEM.key``."""
    cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    argv = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={stem}", "-addext",
        "subjectAltName=" + ",".join(names), "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    return cert, key


def fingerprint(der: bytes) -> str:
    """The SHA-256 of a DER certificate as people compare it: AA:BB:… (hex, upper case)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def der_sha256(cert: Path) -> str:
    """``fingerprint`` of the PEM certificate at ``cert``."""
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))


def spki_sha256(cert: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's SPKI pin)."""

    def openssl(*args: str, data: bytes) -> bytes:
        done = subprocess.run(["openssl", *args], input=data, capture_output=True, check=True)
        return done.stdout

    pem_key = openssl("x509", "-pubkey", "-noout", data=cert.read_bytes())
    der = openssl("pkey", "-pubin", "-outform", "der", data=pem_key)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_config(
    directory: Path,
    sections: dict[str, dict[str, Any]] | None = None,
    users: dict[str, str] | None = None,
) -> Path:
    """config.toml in ``directory`` with the contract keys; ``sections`` override them."""
    base: dict[str, dict[str, Any]] = {
        "http": {
            "host": "127.0.0.1",
            "port": free_port(),
            "static_dir": str(ROOT / "static"),
            "max_connections": 768,
            "allowed_hosts": ["vigil.test"],  # tests/wire.py's Host
        },
        "auth": {"realm": "vigil", "max_users": 10, "allow": ["127.0.0.0/8", "::1/128"]},
        "presence": {"keepidle": 1, "keepintvl": 1, "keepcnt": 2, "grace": 2},
        "control": {"enabled": False},
        "audit": {"path": str(directory / "audit.jsonl")},
        "tls": {"port": free_port()},  # HTTPS on (the default), on a port of its own
    }
    for name, values in (sections or {}).items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for user, role in (USERS if users is None else users).items():
        lines += [
            "[[auth.users]]",
            f"name = {toml_value(user)}",
            f"password = {toml_value(_hash(password(user)))}",
            f"role = {toml_value(role)}",
            "",
        ]
    path = directory / "config.toml"
    path.write_text("\n".join(lines))
    return path


def terminate(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``timeout`` s; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


class Vigil:
    """A running vigil process."""

    def __init__(
        self,
        config: Path,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        """``nofile``: the process's RLIMIT_NOFILE (soft and hard), if not this process's."""
        self.config = config
        self.log_path = config.parent / "vigil.log"
        import tomllib

        cfg = tomllib.loads(config.read_text())
        http, tls = cfg["http"], cfg.get("tls", {})
        self.host, self.port = http["host"], http["port"]
        self.base = f"http://{url_host(self.host)}:{self.port}"
        self.tls_port: int | None = tls.get("port", 8443) if tls.get("enabled", True) else None
        self.https = f"https://{url_host(self.host)}:{self.tls_port}"
        self.cert = config.parent / (tls.get("cert") or "tls.local.crt")
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [python, "-m", "server", "--config", str(config)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=None if nofile is None else functools.partial(_limit_files, nofile),
        )
        self.wait_listening()

    def wait_listening(self, timeout: float = 20.0) -> None:  # a UML guest is slow
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vigil exited {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            # the listeners exist before the certificate is loaded: wait until it is
            if self.tls_port is None or "listening on https://" in self.log()[self._log_start :]:
                return
            time.sleep(0.05)
        raise RuntimeError(f"vigil did not listen on {self.port}:\n{self.log()}")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this vigil's certificate and nothing else."""
        return ssl.create_default_context(cafile=str(self.cert))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 3.0) -> str:
        """The first log line after offset ``since`` matching ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log()[since:].splitlines():
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line /{pattern}/ in:\n{self.log()[since:]}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        returncode = terminate(self.proc, timeout)
        self._log.close()
        return returncode


class Chatter:
    """A person posts a chat message every ``interval`` s through ``client`` (whose
    credentials say who), so every stream gets events. ``posted`` counts the posts vigil
    acknowledged; ``errors`` has every post that failed, and why (an exception too: a
    chatter that cannot post fails its test)."""

    def __init__(self, client: httpx.Client, interval: float = 0.2) -> None:
        self._client = client
        self._interval = interval
        self._stop = threading.Event()
        self.errors: list[str] = []
        self.posted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self._interval):
            n += 1
            try:
                r = self._client.post("/api/chat", json={"text": f"tick {n}"})
            except httpx.HTTPError as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                continue
            if r.status_code != 200:
                self.errors.append(f"{r.status_code} {r.text}")
            else:
                self.posted += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


def https_client(vigil: Vigil, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=vigil.https, headers={"Authorization": basic(user)}, verify=vigil.ssl_context()
    )
