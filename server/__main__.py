"""Command line: ``python -m server [run] | hash-password | check-config | add-device | tls-info``.

Every failure a person can cause (bad config, port in use, unreadable static
dir or audit file) ends in one line on stderr naming the file, key or port,
and a non-zero exit status; never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import shlex
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path

from server import certificate, firstrun
from server import config as configmod
from server.auth import hash_password
from server.certificate import CertificateError
from server.control import DEVICE_ID, DEVICE_ID_RULE
from server.devices import SECRET_BYTES

DEFAULT_CONFIG = "config.toml"


def _fail(message: str, status: int = 1) -> int:
    print(f"vigil: {message}", file=sys.stderr)
    return status


def _fixed_mmap_threshold() -> None:
    """Keep big transient buffers out of the heap (glibc only).

    scrypt allocates 16 MiB per verification; glibc's adaptive mmap threshold
    would afterwards serve such blocks from the heap and keep them resident.
    A fixed threshold returns them to the kernel when freed (RSS stays low).
    """
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        pass


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    access = logging.StreamHandler(sys.stderr)
    access.setFormatter(logging.Formatter("%(message)s"))
    access_log = logging.getLogger("server.access")
    access_log.addHandler(access)
    access_log.propagate = False


def cmd_hash_password(_args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            return _fail("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        return _fail("empty password")
    print(hash_password(password))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        return _fail(str(e))
    print(f"{cfg.path}: ok ({len(cfg.auth.users)} user(s), {len(cfg.control.devices)} device(s))")
    return 0


DEVICES_HEADER = """\
# Devices added by `python -m server add-device ID` (git-ignored, like the
# secrets in devices.local/). Each secret_file holds one device's secret; its
# agent needs the same file (--secret-file) or its contents in
# VIGIL_DEVICE_SECRET. vigil re-reads this file on SIGHUP. To retire a
# device, or to give it a new secret, remove its entry and its secret file.
"""


def cmd_add_device(args: argparse.Namespace) -> int:
    """Declare device ``args.id`` with a new secret; print the agent's command line."""
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        return _fail(str(e))
    dev_id = args.id
    if not DEVICE_ID.fullmatch(dev_id):
        return _fail(f"{dev_id!r}: a device id must be {DEVICE_ID_RULE}")
    if any(d.id == dev_id for d in cfg.control.devices):
        return _fail(
            f"device {dev_id!r} is already declared (in {cfg.path.name} or "
            f"{configmod.LOCAL_DEVICES_FILE}); for a new secret remove it there and its "
            "secret file, then add it again"
        )
    base = cfg.path.parent
    rel = f"{configmod.LOCAL_SECRETS_DIR}/{dev_id}.secret"
    try:
        (base / configmod.LOCAL_SECRETS_DIR).mkdir(mode=0o700, exist_ok=True)
        fd = os.open(base / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
        local = base / configmod.LOCAL_DEVICES_FILE
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as f:
            if f.tell() == 0:
                f.write(DEVICES_HEADER)
            f.write(f'\n[[devices]]\nid = "{dev_id}"\nsecret_file = "{rel}"\n')
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}")
    secret_file = base / rel
    host = cfg.control.host if cfg.control.host not in ("0.0.0.0", "::") else "127.0.0.1"
    argv = [sys.executable, "-m", "server.agent", "--name", dev_id, "--host", host]
    argv += ["--port", str(cfg.control.port), "--secret-file", str(secret_file)]
    print(
        f"vigil: device {dev_id} added; its secret is in {secret_file} (mode 0600).\n"
        "  Its agent, on the next line; on another machine copy the secret file there\n"
        "  (keep it 0600) and give vigil's address as --host. A running vigil takes the\n"
        "  new device on SIGHUP (kill -HUP <pid>).",
        file=sys.stderr,
    )
    print(shlex.join(argv))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from server.app import Server
    from server.loop import Loop

    try:
        cfg = configmod.load(args.config)
        if not cfg.auth.users:
            firstrun.create_operator(cfg.path)
            cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}")
    _setup_logging()
    _fixed_mmap_threshold()
    loop = Loop(cfg.http.backend)
    try:
        server = Server(cfg, loop)
    except OSError as e:
        return _fail(f"{e.filename or cfg.audit.path}: {e.strerror}")
    try:
        server.bind()  # a port in use is the one line a person sees, before anything else
        firstrun.ensure_certificate(cfg)
        server.start()
    except (CertificateError, ssl.SSLError) as e:  # an SSLError is an OSError: first
        server.close()
        return _fail(f"TLS certificate: {e}")
    except OSError as e:
        where = f"{cfg.http.host}:{cfg.http.port}"
        if server.listener is not None and cfg.tls.enabled and server.tls_listener is None:
            where = f"{cfg.http.host}:{cfg.tls.port} (HTTPS)"
        elif server.listener is not None:
            where = f"[control] {cfg.control.host}:{cfg.control.port} (SCTP)"
        server.close()
        return _fail(f"cannot listen on {where}: {e.strerror or e}")
    try:
        loop.run()
    finally:
        server.close()
        loop.close()
    logging.getLogger(__name__).info("stopped")
    return 0


def cmd_tls_info(args: argparse.Namespace) -> int:
    """The certificate new HTTPS connections get: fingerprint, names, expiry."""
    try:
        cfg = configmod.load(args.config)
        cert, _key = certificate.location(cfg.tls.cert, cfg.tls.key, cfg.path.parent)
        if not cert.exists():
            return _fail(f"{cert}: no certificate yet (the first `python -m server` makes one)")
        desc = certificate.describe(cert)
    except (configmod.ConfigError, CertificateError) as e:
        return _fail(str(e))
    days = desc.days_left(datetime.now(UTC))
    print(f"certificate: {cert}")
    print(f"SHA-256:     {desc.fingerprint}")
    print(f"names:       {', '.join(desc.names)}")
    print(f"expires:     {desc.not_after:%Y-%m-%d %H:%M} UTC ({days:.0f} days)")
    if not cfg.tls.enabled:
        print("note:        [tls] enabled = false: vigil serves no HTTPS")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--config", default=DEFAULT_CONFIG, type=Path, help="config file")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the server (the default)")
    sub.add_parser("hash-password", help="print the hash of a password (stdin or prompt)")
    check = sub.add_parser("check-config", help="validate the config file, exit 0 or 1")
    check.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")
    add = sub.add_parser(
        "add-device", help="declare a device with a new secret; print its agent's command line"
    )
    add.add_argument("id", help="the device's id, e.g. lamp-1")
    add.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")
    info = sub.add_parser("tls-info", help="show the HTTPS certificate: fingerprint, expiry")
    info.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")
    args = parser.parse_args(argv)
    commands = {
        "tls-info": cmd_tls_info,
        "hash-password": cmd_hash_password,
        "check-config": cmd_check_config,
        "add-device": cmd_add_device,
    }
    return commands.get(args.command, cmd_run)(args)


if __name__ == "__main__":
    sys.exit(main())
