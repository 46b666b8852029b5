"""vigil installed as a person installs it on a Pi, in a Debian 12 VM with a real systemd.

One boot for the module (tests/vm: Debian bookworm, its kernel and systemd
252, under qemu TCG from a throwaway overlay): the checkout goes in as a
tarball over 9p, then, as root in the guest, ``make install`` (pip gets
everything from a wheelhouse made on the host, the test's way: the guest
has no network), ``vigil user add admin``, ``systemctl enable --now vigil``.
The tests then run in order against that one machine: the service and its
STATUS line, its hardening as the kernel sees it, reloads, the watchdog
killing a hung loop, the journal's priorities, a device agent with its
secret as a credential over the guest kernel's own SCTP, a reboot, and
last ``make uninstall`` without and with ``PURGE=1``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator

import pytest

from tests.support import require
from tests.vm.appliance import ADMIN_PW, SRC, curl, device_online, installed, wait_for
from tests.vm.image import ARCHES, unsupported
from tests.vm.machine import Machine

ARCH = ARCHES["amd64"]
WATCHDOG_SEC, RESTART_SEC = 30, 2  # dist/systemd/vigil.service.in
START_SLACK = 20  # the abort, the restart and vigil's start under TCG on a busy host
INSTALLED = (
    "/usr/local/lib/vigil", "/usr/local/bin/vigil", "/etc/systemd/system/vigil.service",
    "/etc/systemd/system/vigil-agent@.service", "/etc/modules-load.d/vigil.conf",
)  # fmt: skip


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    reason = unsupported(ARCH)
    require(reason is None, f"no systemd VM: {reason}")
    machine = installed(ARCH, tmp_path_factory.mktemp("vm"))
    try:
        yield machine
    finally:
        machine.close()


def proc_status(vm: Machine, pid: int) -> dict[str, str]:
    lines = vm.check(f"cat /proc/{pid}/status").splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def guest_now(vm: Machine) -> str:
    """The guest's clock now, as ``journalctl --since`` takes it."""
    return "@" + vm.check("date +%s").strip()


def journal(vm: Machine, since: str, *args: str) -> str:
    return vm.check(shlex.join(["journalctl", "-o", "cat", f"--since={since}", *args]))


def restart_count(vm: Machine) -> int:
    return int(vm.check("systemctl show -P NRestarts vigil"))


def test_the_service_runs_and_says_what_it_serves(vm: Machine) -> None:
    assert vm.check("systemctl is-enabled vigil").strip() == "enabled"
    assert vm.check("systemctl is-active vigil").strip() == "active"
    status = vm.run("systemctl status --no-pager vigil").out
    assert 'Status: "serving on port 8080, 8443; 1 user(s)"' in status, status
    assert curl(vm, "/api/me") == '200 {"user":"admin","role":"operator"}'
    assert curl(vm, "/api/me", pw="wrong").startswith("401 ")


def test_it_runs_as_vigil_without_privileges_on_a_read_only_system(vm: Machine) -> None:
    pid = vm.pid("vigil")
    uid, gid = vm.check("id -u vigil").strip(), vm.check("id -g vigil").strip()
    status = proc_status(vm, pid)
    assert status["Uid"].split() == [uid] * 4 and status["Gid"].split() == [gid] * 4, status
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status  # a syscall filter
    # its view of the file system (its mount namespace): read-only but for the state dir
    inside = f"nsenter -t {pid} -m --"
    for path in ("/usr/local/lib/vigil/probe", "/etc/vigil/probe", "/var/tmp/../probe"):
        done = vm.run(f"{inside} touch {path}")
        assert done.rc != 0 and "Read-only file system" in done.err, (path, done)
    vm.check(f"{inside} sh -c 'touch /var/lib/vigil/probe && rm /var/lib/vigil/probe'")
    assert vm.check(f"{inside} ls -A /root") == "" != vm.check("ls -A /root")  # ProtectHome
    owners = vm.check("stat -c '%U %a %n' /var/lib/vigil /var/lib/vigil/tls.local.key")
    assert owners.split("\n")[:2] == [
        "vigil 750 /var/lib/vigil",
        "vigil 600 /var/lib/vigil/tls.local.key",
    ], owners


def test_reload_lets_in_a_user_added_meanwhile(vm: Machine) -> None:
    pid = vm.pid("vigil")
    # `vigil user add` (root, becoming vigil) tells the running service itself
    vm.check("vigil user add bob --role viewer", stdin="tall ships sail at dawn\n")
    wait_for("bob can log in", lambda: curl(vm, "/api/me", "bob", "tall ships sail at dawn")
             .startswith("200 "), 10)  # fmt: skip
    # a user declared in the config meanwhile: in only after `systemctl reload vigil`
    hashed = vm.check("vigil hash-password", stdin="green tea after lunch\n").strip()
    entry = f'\n[[auth.users]]\nname = "carol"\npassword = "{hashed}"\nrole = "viewer"\n'
    vm.check("cat >> /etc/vigil/config.toml", stdin=entry)
    assert curl(vm, "/api/me", "carol", "green tea after lunch").startswith("401 ")
    since = guest_now(vm)
    vm.check("systemctl reload vigil", timeout=30)
    assert curl(vm, "/api/me", "carol", "green tea after lunch").startswith("200 ")
    assert vm.pid("vigil") == pid  # reloaded, not restarted
    assert "Reloaded vigil" in journal(vm, since, "-u", "vigil")
    status = vm.run("systemctl status --no-pager vigil").out
    assert 'Status: "serving on port 8080, 8443; 3 user(s)"' in status, status


def test_journal_filters_by_the_priorities_vigil_writes(vm: Machine) -> None:
    everything = vm.check("journalctl -o cat -u vigil")
    warnings = vm.check("journalctl -o cat -p warning -u vigil")
    assert "listening on https://" in everything and "GET /api/me" in everything
    assert "control channel: no devices declared" in warnings, warnings
    assert "listening on" not in warnings and "GET /api/me" not in warnings, warnings
    assert "<4>" not in everything  # journald took the prefix as the priority
    records = [json.loads(r) for r in vm.check("journalctl -o json -u vigil").splitlines()]
    mine = [r for r in records if "no devices declared" in str(r.get("MESSAGE"))]
    assert mine and {r["PRIORITY"] for r in mine} == {"4"}, mine


def test_a_hung_loop_is_killed_by_the_watchdog_and_restarted(vm: Machine) -> None:
    pid, restarts = vm.pid("vigil"), restart_count(vm)
    since = guest_now(vm)
    vm.check(f"kill -STOP {pid}")

    def restarted() -> bool:  # a new main process, and systemd has its READY=1
        active = vm.run("systemctl is-active vigil").out.strip() == "active"
        return active and vm.pid("vigil") not in (0, pid)

    took = wait_for("restarted", restarted, WATCHDOG_SEC + RESTART_SEC + START_SLACK + 30)
    assert took <= WATCHDOG_SEC + RESTART_SEC + START_SLACK, took
    said = journal(vm, since, "-u", "vigil")
    assert "Watchdog timeout (limit 30s)!" in said, said
    assert "Failed with result 'watchdog'" in said, said
    assert "Scheduled restart job" in said, said
    assert restart_count(vm) == restarts + 1
    assert curl(vm, "/api/me").startswith("200 ")


def test_a_device_agent_with_its_secret_as_a_credential_over_kernel_sctp(vm: Machine) -> None:
    vm.check("vigil add-device lamp-1")
    vm.check("install -m 0600 /var/lib/vigil/devices.local/lamp-1.secret /etc/vigil/agents/")
    vm.check("systemctl reload vigil && systemctl enable --now vigil-agent@lamp-1", timeout=60)

    wait_for("lamp-1 online", lambda: device_online(vm, "lamp-1"), 60)
    assert re.search(r"^sctp\s", vm.check("lsmod"), re.M)
    assocs = vm.check("cat /proc/net/sctp/assocs")
    assert re.search(r"\b9900\b", assocs), assocs  # the guest kernel's own association
    pid = vm.pid("vigil-agent@lamp-1")
    agent_uid = vm.check("id -u vigil-agent").strip()
    status = proc_status(vm, pid)
    assert status["Uid"].split() == [agent_uid] * 4 and int(status["CapEff"], 16) == 0, status
    # its secret only as systemd's private copy: the file itself is root's
    denied = vm.run("setpriv --reuid=vigil-agent --regid=vigil-agent --clear-groups "
                    "cat /etc/vigil/agents/lamp-1.secret")  # fmt: skip
    assert denied.rc != 0 and "Permission denied" in denied.err, denied
    environ = vm.check(f"tr '\\0' '\\n' < /proc/{pid}/environ")
    assert "CREDENTIALS_DIRECTORY=/run/credentials/vigil-agent@lamp-1.service" in environ
    body = '{"entity":"brightness","value":40}'
    done = curl(vm, "/api/devices/lamp-1/commands", "admin", ADMIN_PW,
                "-H", "Content-Type: application/json", "-d", body)  # fmt: skip
    assert done.startswith("200 "), done


def test_a_reboot_starts_vigil_and_its_agent_with_sctp_loaded(vm: Machine) -> None:
    vm.reboot()
    assert vm.check("systemctl is-active vigil vigil-agent@lamp-1").split() == ["active"] * 2
    assert re.search(r"^sctp\s", vm.check("lsmod"), re.M)
    assert vm.check("systemctl is-active systemd-modules-load").strip() == "active"
    assert "\nsctp\n" in vm.check("systemd-analyze cat-config modules-load.d")
    assert restart_count(vm) == 0  # counted since this boot

    wait_for("lamp-1 online after the reboot", lambda: device_online(vm, "lamp-1"), 60)
    assert curl(vm, "/api/me", "carol", "green tea after lunch").startswith("200 ")


def test_uninstall_keeps_config_state_and_users_unless_purged(vm: Machine) -> None:
    vm.check(f"cd {SRC} && make uninstall", timeout=120)
    for path in INSTALLED:
        assert vm.run(f"test -e {path}").rc != 0, path
    links = vm.run("ls /etc/systemd/system/*.wants").out
    assert "vigil" not in links, links
    units = vm.check("systemctl list-units --all --plain --no-legend 'vigil*'")
    assert "vigil.service" not in units and "vigil-agent@" not in units, units
    assert vm.run("pgrep -u vigil").rc != 0 and vm.run("pgrep -u vigil-agent").rc != 0
    kept = "/etc/vigil/config.toml /etc/vigil/agents/lamp-1.secret /var/lib/vigil/tls.local.key"
    vm.check(f"ls {kept}")
    vm.check("id vigil && id vigil-agent")

    vm.check(f"cd {SRC} && make uninstall PURGE=1", timeout=120)
    assert vm.run("ls -d /etc/vigil /var/lib/vigil").out == ""
    assert vm.run("id vigil").rc != 0 and vm.run("id vigil-agent").rc != 0
    assert vm.run("getent group vigil").rc != 0
