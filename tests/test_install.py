"""vigil as a system service: `make install DESTDIR=…`, its units, `make uninstall`, the state dir.

The staged install is checked as a packager would: what lands where with
which modes, that no path of the staging root leaks into what was
installed, that an edited config survives a second install, and that
uninstall keeps config and state unless PURGE=1. Then, in a private mount
namespace where the staged /usr/local is bind-mounted over the real one
(so the paths the units name exist, and nothing on this machine changes),
``systemd-analyze verify`` checks the units and the installed code reads
the installed config.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from server.base.pidfile import PID_FILE
from server.config import LOCAL_USERS_FILE
from server.web.certificate import CERT_FILE, KEY_FILE
from tests.support import ROOT, Vigil, require, write_config

LIBDIR = "/usr/local/lib/vigil"
UNITS = "etc/systemd/system"


def make(target: str, destdir: Path, *extra: str) -> None:
    done = subprocess.run(
        ["make", "-s", target, f"DESTDIR={destdir}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``make install DESTDIR=…`` for the whole module (it builds a venv)."""
    root = tmp_path_factory.mktemp("destdir")
    make("install", root)
    return root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_what_lands_where_with_which_modes(staged: Path) -> None:
    expected = {
        "usr/local/bin/vigil": 0o755,
        f"{UNITS}/vigil.service": 0o644,
        f"{UNITS}/vigil-agent@.service": 0o644,
        "etc/modules-load.d/vigil.conf": 0o644,
        "etc/vigil": 0o751,  # agents may pass through to agents/, not list it
        "etc/vigil/config.toml": 0o640,  # root:vigil
        "etc/vigil/agents": 0o755,  # NAME.secret root's 0600 (LoadCredential), NAME.toml
        "var/lib/vigil": 0o750,
        f"{LIBDIR[1:]}/static/index.html": 0o644,
        f"{LIBDIR[1:]}/static/i18n/zh-CN.js": 0o644,
        f"{LIBDIR[1:]}/README.md": 0o644,
        f"{LIBDIR[1:]}/README.zh-CN.md": 0o644,
        f"{LIBDIR[1:]}/gpio-example.toml": 0o644,
    }
    assert {p: mode(staged / p) for p in expected} == expected
    assert (staged / LIBDIR[1:] / "venv/bin/python").resolve() == Path("/usr/bin/python3").resolve()
    assert sorted(os.listdir(staged / "etc/vigil")) == ["agents", "config.toml"]
    assert os.listdir(staged / "var/lib/vigil") == []
    # nothing installed names the staging root (scripts, pyvenv.cfg, compiled code)
    leaks = []
    for path in staged.rglob("*"):
        if path.is_file() and not path.is_symlink() and str(staged).encode() in path.read_bytes():
            leaks.append(str(path.relative_to(staged)))
    assert leaks == []


def test_the_installed_config_is_config_toml_with_system_paths(staged: Path) -> None:
    installed = tomllib.loads((staged / "etc/vigil/config.toml").read_text())
    shipped = tomllib.loads((ROOT / "config.toml").read_text())
    assert installed["http"].pop("static_dir") == f"{LIBDIR}/static"
    assert installed["state"].pop("dir") == "/var/lib/vigil"
    assert installed["audit"].pop("path") == "audit.jsonl"  # /var/lib/vigil/audit.jsonl
    for section, key in (("http", "static_dir"), ("state", "dir"), ("audit", "path")):
        del shipped[section][key]
    assert installed == shipped


def test_units_and_command(staged: Path) -> None:
    service = (staged / UNITS / "vigil.service").read_text().splitlines()
    python = f"{LIBDIR}/venv/bin/python -P"
    for line in (
        "Type=notify",
        f"ExecStart={python} -m server --config /etc/vigil/config.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=30",
        "User=vigil",
        "StateDirectory=vigil",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    ):
        assert line in service
    agent = (staged / UNITS / "vigil-agent@.service").read_text().splitlines()
    for line in (
        f"ExecStart={python} -m server.agent --name %i"
        " --secret-file ${CREDENTIALS_DIRECTORY}/secret $VIGIL_AGENT_ARGS",
        "LoadCredential=secret:/etc/vigil/agents/%i.secret",
        "EnvironmentFile=-/etc/vigil/agents/%i.env",
        "User=vigil-agent",
    ):
        assert line in agent
    command = (staged / "usr/local/bin/vigil").read_text()
    assert f"{python} -m server --config /etc/vigil/config.toml" in command


def in_namespace(staged: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) with the staged /usr/local mounted over the real one, for it alone."""
    require(os.geteuid() == 0, "a private mount namespace needs root")
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian: systemd)")
    setup = f"mount --make-rprivate / && mount --bind {staged}/usr/local /usr/local && "
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", setup + script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def test_systemd_analyze_verify_passes_without_a_warning(staged: Path) -> None:
    units = f"{staged}/{UNITS}"
    done = in_namespace(
        staged,
        f"systemd-analyze verify --man=no {units}/vigil.service {units}/vigil-agent@lamp-1.service",
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_units_are_hardened(staged: Path) -> None:
    """``systemd-analyze security`` rates each unit's exposure (0 to 10): at most 2.5 ("OK")."""
    units = f"{staged}/{UNITS}"
    done = in_namespace(
        staged,
        "systemd-analyze security --offline=yes --threshold=25 --no-pager"
        f" {units}/vigil.service {units}/vigil-agent@.service",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    levels = re.findall(r"Overall exposure level for (\S+): ([\d.]+) ", done.stdout)
    assert [name for name, _ in levels] == ["vigil.service", "vigil-agent@i.service"]
    assert all(float(level) <= 2.5 for _, level in levels), levels


def test_systemd_analyze_verify_catches_a_bad_unit(staged: Path, tmp_path: Path) -> None:
    """The check above can fail: a unit naming a program that is not there."""
    text = (staged / UNITS / "vigil.service").read_text()
    (tmp_path / "vigil.service").write_text(text.replace(f"{LIBDIR}/venv", f"{LIBDIR}/gone"))
    done = in_namespace(staged, f"systemd-analyze verify --man=no {tmp_path}/vigil.service")
    assert done.returncode != 0
    assert f"{LIBDIR}/gone/bin/python is not executable" in done.stderr


def test_the_installed_code_reads_the_installed_config(staged: Path) -> None:
    config = staged / "etc/vigil/config.toml"
    python = f"{LIBDIR}/venv/bin/python -P"
    done = in_namespace(
        staged,
        f"{python} -m server check-config --config {config}"
        f" && {python} -c 'import h11, sctp, server.app; print(server.app.__file__)'",
    )
    assert done.returncode == 0, done.stderr
    checked, module = done.stdout.splitlines()
    assert checked == f"{config}: ok (0 user(s), 0 device(s))"
    assert module.startswith(f"{LIBDIR}/venv/lib/python3.")  # the installed copy, not ours
    assert module.endswith("/site-packages/server/app.py")


def test_install_again_keeps_the_config_and_uninstall_keeps_the_data(
    staged: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(staged, root, symlinks=True)
    config = root / "etc/vigil/config.toml"
    edited = config.read_text().replace("max_users = 10 ", "max_users = 4 ")
    config.write_text(edited)
    (root / "var/lib/vigil" / LOCAL_USERS_FILE).write_text("# someone's users\n")
    make("install", root)
    assert config.read_text() == edited
    assert mode(config) == 0o640

    make("uninstall", root)
    assert not (root / LIBDIR[1:]).exists()
    assert not (root / "usr/local/bin/vigil").exists()
    assert not (root / UNITS / "vigil.service").exists()
    assert not (root / UNITS / "vigil-agent@.service").exists()
    assert not (root / "etc/modules-load.d/vigil.conf").exists()
    assert config.read_text() == edited
    assert (root / "var/lib/vigil" / LOCAL_USERS_FILE).exists()

    make("uninstall", root, "PURGE=1")
    assert not (root / "etc/vigil").exists()
    assert not (root / "var/lib/vigil").exists()


def test_everything_written_at_run_time_goes_to_the_state_dir(tmp_path: Path) -> None:
    """As installed: config in one directory, state in another; the first run writes only there."""
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    config = write_config(
        etc, {"state": {"dir": str(state)}, "audit": {"path": "audit.jsonl"}}, users={}
    )
    vigil = Vigil(config)
    try:
        vigil.wait_for_log("first run: created an operator")
        assert f"stored, in {state / LOCAL_USERS_FILE}" in vigil.log()
        assert sorted(os.listdir(state)) == sorted(
            [LOCAL_USERS_FILE, CERT_FILE, KEY_FILE, PID_FILE, "audit.jsonl"]
        )
        assert mode(state) == 0o750  # made by vigil
        assert (state / PID_FILE).read_text() == f"{vigil.proc.pid}\n"
        second = subprocess.run(
            [sys.executable, "-m", "server", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (second.returncode, second.stderr) == (
            1,
            f"vigil: {state / PID_FILE}: another vigil runs on this state dir\n",
        )
    finally:
        assert vigil.stop() == 0
    assert PID_FILE not in os.listdir(state)
    assert sorted(os.listdir(etc)) == ["config.toml", "vigil.log"]  # the test's own log
