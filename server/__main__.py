"""Command line: ``python -m server [run] | user … | hash-password | check-config | add-device |
tls-info | backup | restore``.

Every failure a person can cause (bad config, port in use, unreadable static
dir or audit file, a TLS certificate or key that cannot be used) ends in one
line on stderr naming the file, key or port, and a non-zero exit status;
never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import shlex
import signal
import ssl
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from server import config as configmod
from server import firstrun
from server.backup import archive, restore
from server.base import pidfile
from server.base.notify import Notifier
from server.link.codec import DEVICE_ID, DEVICE_ID_RULE
from server.link.secret import SECRET_BYTES
from server.people import users
from server.people.auth import hash_password
from server.people.sessions import totp_step
from server.web import certificate
from server.web.certificate import CertificateError

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


# -- logging: on a terminal with the time; under journald with a priority instead


def _on_journal() -> bool:
    """stderr is journald's stream: ``$JOURNAL_STREAM`` is its ``device:inode`` (systemd.exec)."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """Each line starts ``<N>``, its syslog priority (journald reads it, sd-daemon(3)),
    and has no time of its own: the journal stamps every line. A traceback's lines
    all carry the record's priority."""

    PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
    }

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = self.PRIORITY.get(record.levelno, 2)  # above ERROR: CRITICAL, <2>
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    if _on_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    access = logging.StreamHandler(sys.stderr)
    access.setFormatter(logging.Formatter("%(message)s"))
    access_log = logging.getLogger("server.access")
    access_log.addHandler(access)
    access_log.propagate = False


def _read_password() -> str:
    """A password from the terminal (asked twice) or one line of stdin; ValueError if none."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the passwords differ")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError("empty password")
    return password


def cmd_hash_password(_args: argparse.Namespace) -> int:
    try:
        password = _read_password()
    except ValueError as e:
        return _fail(str(e))
    print(hash_password(password))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """The config, and a configured certificate and key as vigil would load them."""
    try:
        cfg = configmod.load(args.config)
        if cfg.tls.enabled and cfg.tls.cert is not None and cfg.tls.key is not None:
            certificate.load(cfg.tls.cert, cfg.tls.key, own=False)
    except (configmod.ConfigError, CertificateError) as e:
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
    base = cfg.state.dir
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
    """Serve until stopped, holding the state dir's pid file (server.pidfile) meanwhile."""
    try:
        cfg = configmod.load(args.config)
        cfg.state.dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        pid_fd = pidfile.hold(cfg.state.dir)
    except (configmod.ConfigError, pidfile.AlreadyRunning) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}")
    try:
        return _serve(args, cfg)
    finally:
        pidfile.release(cfg.state.dir, pid_fd)


def _serve(args: argparse.Namespace, cfg: configmod.Config) -> int:
    from server.app import Server
    from server.base.loop import Loop

    try:
        if not cfg.auth.users:
            firstrun.create_operator(cfg.state.dir)
            cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{e.filename}: {e.strerror}")
    _setup_logging()
    _fixed_mmap_threshold()
    loop = Loop(cfg.http.backend)
    try:
        server = Server(cfg, loop, Notifier.from_environ())
    except OSError as e:
        return _fail(f"{e.filename or cfg.audit.path}: {e.strerror}")
    try:
        server.bind()  # a port in use is the one line a person sees, before anything else
        firstrun.ensure_certificate(cfg)
        server.start()
    except CertificateError as e:  # names the file: "[tls] key /etc/x.key: Is a directory"
        server.close()
        return _fail(str(e))
    except ssl.SSLError as e:  # an OSError too: first
        server.close()
        return _fail(f"TLS: {e}")
    except OSError as e:
        what = f"cannot start: {e.filename + ': ' if e.filename else ''}{e.strerror or e}"
        if server.listener is None:
            what = f"cannot listen on {cfg.http.host}:{cfg.http.port}: {e.strerror or e}"
        elif cfg.tls.enabled and server.tls_listener is None:
            what = f"cannot listen on {cfg.http.host}:{cfg.tls.port} (HTTPS): {e.strerror or e}"
        elif cfg.control.enabled:  # the TLS files raise CertificateError: this is SCTP
            where = f"[control] {cfg.control.host}:{cfg.control.port} (SCTP)"
            what = f"cannot listen on {where}: {e.strerror or e}"
        server.close()
        return _fail(what)
    try:
        loop.run()
    finally:
        server.close()
        loop.close()
    logging.getLogger(__name__).info("stopped")
    return 0


# -- people: python -m server user add|passwd|del|list (server.users writes the file)


def _tell_server(state_dir: Path) -> str:
    """SIGHUP to the vigil running on ``state_dir``; what was done, for the person."""
    pid = pidfile.running(state_dir)
    if pid is None:
        return "vigil is not running (on this state dir): it reads the users when it starts"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return "vigil is not running (on this state dir): it reads the users when it starts"
    except PermissionError:
        return (
            f"vigil runs as pid {pid}, which this user may not signal: to apply the change now,"
            f" sudo systemctl reload vigil (or sudo kill -HUP {pid})"
        )
    return f"told vigil (pid {pid}) to reload (SIGHUP): the change applies now"


def cmd_user(args: argparse.Namespace) -> int:
    """``user list``, or add, passwd, del one person in the state dir's users.local.toml."""
    try:
        cfg = configmod.load(args.config)
    except configmod.ConfigError as e:
        return _fail(str(e))
    state = cfg.state.dir
    local = configmod.local_users(state)
    roles = {u.name: u.role for u in local}
    if args.action == "list":
        for u in cfg.auth.users:
            where = configmod.LOCAL_USERS_FILE if u.name in roles else cfg.path.name
            print(f"{u.name:<20} {u.role:<9} {'TOTP' if u.totp else '-':<5} {where}")
        return 0
    name = args.name
    problem = users.name_problem(name)
    if problem:
        return _fail(f"{name!r}: {problem}")
    if args.action == "logout":
        return _logout(cfg, name)
    if name not in roles and any(u.name == name for u in cfg.auth.users):
        return _fail(
            f"{name!r} is declared in {cfg.path} ([[auth.users]]): change it there"
            " (python -m server hash-password makes a password's hash), then reload vigil"
        )
    if args.action == "add" and name in roles:
        return _fail(f"{name!r} exists already (user passwd {name} sets a new password)")
    if args.action != "add" and name not in roles:
        return _fail(f"no user {name!r} (user list shows who there is)")
    if args.action == "del":
        if len(cfg.auth.users) == 1:
            return _fail(f"{name!r} is the only user: add another one first")
        new = [u for u in local if u.name != name]
        done = f"user {name} removed (logged out at the reload)"
    elif args.action == "totp":
        account = next(u for u in local if u.name == name)
        changed = _totp(account, args.off)
        if isinstance(changed, str):
            return _fail(changed)
        new = [changed if u.name == name else u for u in local]
        done = f"user {name}: second factor {'removed' if args.off else 'on'}"
    else:
        try:
            password = _read_password()
        except ValueError as e:
            return _fail(str(e))
        weak = users.weakness(name, password)
        if weak:
            return _fail(f"password refused: {weak}")
        role = args.role if args.action == "add" else roles[name]
        totp = next((u.totp for u in local if u.name == name), "")
        user = configmod.Account(name, hash_password(password), role, totp)
        new = [user if u.name == name else u for u in local]
        if args.action == "add":
            new.append(user)
            done = f"user {name} added ({role})"
        else:
            done = f"user {name}: new password set"
    try:
        target = users.save(state, new)
    except OSError as e:
        path = state / configmod.LOCAL_USERS_FILE
        return _fail(f"{path}: cannot write ({e.strerror or e}); it is unchanged")
    print(f"vigil: {done}: {target}")
    print(f"vigil: {_tell_server(state)}")
    return 0


def _totp(account: configmod.Account, off: bool) -> configmod.Account | str:
    """``account`` with a new, confirmed second factor (or without one); or why not.

    The secret goes to the terminal only (the otpauth:// URI and its QR code):
    never to the log, never on a command line.
    """
    if off:
        if not account.totp:
            return f"{account.name!r} has no second factor"
        return replace(account, totp="")
    import pyotp
    import qrcode

    secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
    uri = pyotp.TOTP(secret).provisioning_uri(name=account.name, issuer_name="vigil")
    print(f"Add this to an authenticator app (scan the code, or paste the URI):\n{uri}")
    qr = qrcode.QRCode(border=2)
    qr.add_data(uri)
    qr.print_ascii(out=sys.stdout, invert=True)
    print("Then type the 6-digit code it shows, to confirm: ", end="", flush=True)
    code = sys.stdin.readline().strip()
    if totp_step(secret, code, time.time()) is None:
        return "that is not the current code: nothing changed (run it again)"
    return replace(account, totp=secret)


def _logout(cfg: configmod.Config, name: str) -> int:
    """End ``name``'s sessions in the running vigil: their time in logout.local.toml, then
    SIGHUP. Entries older than a session can live are dropped."""
    if not any(u.name == name for u in cfg.auth.users):
        return _fail(f"no user {name!r} (user list shows who there is)")
    now = time.time()
    keep = {n: t for n, t in cfg.auth.logouts if now - t < cfg.auth.session_max_age}
    state = cfg.state.dir
    try:
        target = users.save_logouts(state, keep | {name: now})
    except OSError as e:
        path = state / configmod.LOGOUT_FILE
        return _fail(f"{path}: cannot write ({e.strerror or e}); nobody was logged out")
    print(f"vigil: {name}'s sessions begun before now end at the reload: {target}")
    print(f"vigil: {_tell_server(state)}")
    return 0


def cmd_tls_info(args: argparse.Namespace) -> int:
    """The certificate new HTTPS connections get: fingerprint, names, expiry."""
    try:
        cfg = configmod.load(args.config)
        cert, _key = certificate.location(cfg.tls.cert, cfg.tls.key, cfg.state.dir)
        if not cert.exists():
            return _fail(f"{cert}: no certificate yet (the first `python -m server` makes one)")
        desc = certificate.describe(cert)
    except (configmod.ConfigError, CertificateError) as e:
        return _fail(str(e))
    now = datetime.now(UTC)
    days = desc.days_left(now)
    print(f"certificate: {cert}")
    print(f"SHA-256:     {desc.fingerprint}")
    print(f"names:       {', '.join(desc.names)}")
    print(f"expires:     {desc.not_after:%Y-%m-%d %H:%M} UTC ({days:.0f} days)")
    invalid = desc.invalid_because(now)
    if invalid is not None:
        print(f"note:        not valid now: {invalid}")
    if not certificate.clock_is_set(now):
        print(f"note:        the clock says {now:%Y-%m-%d %H:%M} UTC: it is not set")
    if not cfg.tls.enabled:
        print("note:        [tls] enabled = false: vigil serves no HTTPS")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """One archive of everything this vigil needs to come back as itself (server.backup.archive)."""
    try:
        configmod.load(args.config)  # its errors name the key; the backup's only the file
        done = archive.write(args.config, args.file, args.audit, datetime.now(UTC))
    except (configmod.ConfigError, archive.BackupError) as e:
        return _fail(str(e))
    audit = f", {done.audit_files} of the audit log" if args.audit else ""
    print(
        f"vigil: backed up {done.files} files{audit} to {args.file} ({done.bytes} bytes,"
        " mode 0600).\n  It holds the password hashes, device secrets and TLS key: keep it"
        " as you keep them.",
        file=sys.stderr,
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Bring a backup back onto this machine: same people, devices and certificate."""
    try:
        with args.file.open("rb") as f:
            staged = archive.read_archive(f)
    except OSError as e:
        return _fail(f"{args.file}: cannot read: {e.strerror}")
    except archive.BackupError as e:
        return _fail(f"{args.file}: {e}; nothing was changed")
    try:
        done = restore.restore(staged, args.config, args.force, lambda s: print(f"vigil: {s}"))
    except archive.BackupError as e:
        return _fail(f"{e}; nothing was changed")
    finally:
        staged.close()
    m = staged.manifest
    print(
        f"vigil: restored {done.files} files from {args.file} (made {m.created} on {m.host}"
        f" by vigil {m.vigil}): config {args.config}, state {done.layout.state}"
    )
    try:
        cfg = configmod.load(args.config)
        cert, _key = certificate.location(cfg.tls.cert, cfg.tls.key, cfg.state.dir)
        fingerprint = certificate.describe(cert).fingerprint if cert.exists() else "none yet"
    except (configmod.ConfigError, CertificateError) as e:
        return _fail(f"restored, but the config does not load here: {e}")
    print(
        f"vigil: {len(cfg.auth.users)} user(s), {len(cfg.control.devices)} device(s),"
        f" certificate SHA-256 {fingerprint}\n"
        "vigil: start vigil now (sudo systemctl start vigil, or python -m server)"
    )
    return 0


def _backup_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    save = sub.add_parser(
        "backup",
        help="write one archive of config, users, devices and their secrets, TLS key (0600)",
        description="A gzip'd tar with a manifest (sha256 of every member). A running vigil"
        " need not stop. FILE must not exist yet.",
    )
    save.add_argument("file", type=Path, metavar="FILE")
    save.add_argument("--audit", action="store_true", help="the audit log too")
    load = sub.add_parser(
        "restore",
        help="bring a backup back onto this machine (vigil stopped)",
        description="Checks the whole archive before it writes anything; refuses a damaged"
        " or foreign one. The config keeps this machine's [state] dir and [http] static_dir.",
    )
    load.add_argument("file", type=Path, metavar="FILE")
    load.add_argument(
        "--force", action="store_true", help="replace the users, devices, certificate here"
    )
    for p in (save, load):
        p.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")


def _user_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    user = sub.add_parser(
        "user",
        help="add, change or remove a person (users.local.toml in the state dir)",
        description=f"Passwords come from a prompt (asked twice) or one line of stdin; "
        f"at least {users.MIN_LENGTH} characters, not containing the user name. "
        "A running vigil is told to reload.",
    )
    user.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")
    actions = user.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="a new person (password from a prompt or stdin)")
    add.add_argument("name")
    add.add_argument("--role", choices=configmod.ROLES, default="operator")
    actions.add_parser("passwd", help="a new password for a person").add_argument("name")
    actions.add_parser("del", help="remove a person (logged out at once)").add_argument("name")
    actions.add_parser("list", help="everyone who may log in, with role, second factor, file")
    totp = actions.add_parser(
        "totp", help="a second factor (TOTP): shows a QR code, asks for one code to confirm"
    )
    totp.add_argument("name")
    totp.add_argument("--off", action="store_true", help="remove the second factor")
    actions.add_parser(
        "logout", help="end a person's sessions in the running vigil (they log in again)"
    ).add_argument("name")
    for p in actions.choices.values():
        p.add_argument("--config", default=argparse.SUPPRESS, type=Path, help="config file")


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
    _user_parser(sub)
    _backup_parsers(sub)
    args = parser.parse_args(argv)
    commands = {
        "tls-info": cmd_tls_info,
        "hash-password": cmd_hash_password,
        "check-config": cmd_check_config,
        "add-device": cmd_add_device,
        "user": cmd_user,
        "backup": cmd_backup,
        "restore": cmd_restore,
    }
    return commands.get(args.command, cmd_run)(args)


if __name__ == "__main__":
    sys.exit(main())
