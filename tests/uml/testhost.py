"""A test host: vigil and reference agents inside a UML guest, reachable from this host.

For tests that need a real device behind vigil (real kernel SCTP) while the
client runs here (curl, Python, chromium)::

    from tests.uml.testhost import uml_test_host

    with uml_test_host(config_text, agents=["lamp-1"]) as host:
        host.base_url        # "http://10.213.1.2:8080": vigil in the guest (plain: 308s)
        host.https_url       # "https://10.213.1.2:8443": what clients here use, trusting
        host.cert            # the certificate vigil made in the guest (it names 10.213.1.2)
        host.pull()          # pull the cable between this host and the guest
        host.plug()
        host.kill_agent("lamp-1")    # SIGKILL it in the guest: the device goes offline
        host.start_agent("lamp-1")   # start it again; returns once vigil welcomed it

``agents`` is a list of names, or a mapping of name to extra arguments of
``python -m server.agent`` (``{"lamp-2": ["--label", "Lamp 2", "--reply-delay", "9"]}``);
``start_agent(name, *args)`` takes such arguments too.

``config_text`` is a whole config.toml (the keys of README.md, "Configuration").
``HOST_IP`` in it becomes this host's address on the tap before the guest boots
(a service here that vigil in the guest uses, e.g. an MQTT broker).
It must let the host in: ``[http] host = "0.0.0.0"`` (or the guest's
address), and ``[auth] allow`` must cover ``host.host_ip`` (10.213.1.0/24;
the default allow list has 10.0.0.0/8). Relative paths in it are relative
to a fresh temporary directory, so give ``static_dir`` as an absolute path.
``[control]`` must be enabled; the agents connect to 127.0.0.1 at the
control port inside the guest. Each agent is declared before the guest
boots with ``python -m server add-device NAME`` (its secret in the
temporary directory) and started with the command line that prints;
``start_agent`` can restart those, no others.

On entry: a tap device (tests/uml/harness.py ``Tap``, a free /30 of
10.213.1.0/24, root and /dev/net/tun needed) is made, the guest boots with
it as vec0, starts vigil and the agents, and we wait until every agent was
welcomed and vigil answers ``/healthz`` from here. ``UmlError`` otherwise,
with the guest's logs: at once when the guest died (its first line says why,
a kernel panic say), after ``timeout`` s when it still runs. On exit, even
after a failure: vigil and the agents get SIGTERM, the guest powers off (or
is killed), the tap is deleted.
A guest whose host process died powers itself off after ``lifetime`` s.

``python -m tests.uml.testhost CONFIG [--agent NAME]...`` runs one by hand
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import require, write_config
from tests.uml.harness import Guest, Tap
from tests.uml.kernel import UmlError, unsupported

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class TestHost:
    """A running test host; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name

    base_url: str  # http://GUEST_IP:PORT
    guest_ip: str
    host_ip: str  # this host's address on the tap
    http_port: int
    control_port: int
    workdir: Path  # config.toml, vigil.log, agent-NAME.log (the guest writes them here)
    tap: Tap

    @property
    def tls_port(self) -> int:
        """vigil's HTTPS port: ``[tls] port`` of the config."""
        cfg = tomllib.loads((self.workdir / "config.toml").read_text())
        return int(cfg.get("tls", {}).get("port", 8443))

    @property
    def https_url(self) -> str:
        return f"https://{self.guest_ip}:{self.tls_port}"

    @property
    def cert(self) -> Path:
        """The certificate vigil serves: made in the guest on first start, beside its config
        (its names include the guest's address, up before vigil starts), or the configured one."""
        cfg = tomllib.loads((self.workdir / "config.toml").read_text())
        return self.workdir / (cfg.get("tls", {}).get("cert") or "tls.local.crt")

    def pull(self) -> None:
        """Pull the cable between this host and the guest (no FIN, no RST)."""
        self.tap.down()

    def plug(self) -> None:
        self.tap.up()

    def log(self, name: str = "vigil") -> str:
        """vigil's log so far (``log("agent-lamp-1")``: that agent's)."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_agent(self, name: str, timeout: float = 10) -> None:
        """SIGKILL agent ``name`` in the guest (no goodbye); return once it is dead."""
        self._request({"op": "kill", "agent": name}, timeout)

    def start_agent(self, name: str, *args: str, timeout: float = 15) -> None:
        """Start agent ``name`` (again) with extra ``args``; return once vigil welcomed it."""
        welcomed = self.log(f"agent-{name}").count(WELCOMED)
        self._request({"op": "start", "agent": name, "args": list(args)}, timeout)
        deadline = time.monotonic() + timeout
        while self.log(f"agent-{name}").count(WELCOMED) <= welcomed:
            if time.monotonic() > deadline:
                tail = self.log(f"agent-{name}")[-1500:]
                raise UmlError(f"agent {name} not welcomed within {timeout:g} s:\n{tail}")
            time.sleep(0.05)

    def _request(self, req: dict[str, object], timeout: float) -> None:
        """Hand ``req`` to the guest's serve loop; it deletes the file when done."""
        path = self.workdir / f"request-{time.monotonic_ns()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(req))
        tmp.rename(path)
        deadline = time.monotonic() + timeout
        while path.exists():
            if time.monotonic() > deadline:
                raise UmlError(f"the test host did not act on {req} within {timeout:g} s")
            time.sleep(0.05)
        error = self.workdir / f"{path.stem}.error"
        if error.exists():
            raise UmlError(f"{req}: {error.read_text()}")


WELCOMED = "welcomed by vigil"
HOST_IP = "@HOST_IP@"  # in config_text: this host's tap address


def _ports(config_text: str) -> tuple[int, int]:
    cfg = tomllib.loads(config_text)
    control = cfg.get("control", {})
    if not control.get("enabled", True):
        raise ValueError("uml_test_host: [control] enabled must be true")
    return int(cfg.get("http", {}).get("port", 8080)), int(control.get("port", 9900))


def _add_device(workdir: Path, name: str) -> list[str]:
    """Declare agent ``name`` to the guest's vigil; the command line that starts it."""
    cmd = [sys.executable, "-m", "server", "add-device", name]
    cmd += ["--config", str(workdir / "config.toml")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise UmlError(f"uml_test_host: add-device {name}: {done.stderr.strip()}")
    return shlex.split(done.stdout)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def uml_test_host(
    config_text: str,
    agents: Sequence[str] | Mapping[str, Sequence[str]] = (),
    *,
    timeout: float = 60,
    lifetime: float = 1800,
    echo: bool = False,
) -> Iterator[TestHost]:
    """Boot a guest running vigil with ``config_text`` and reference ``agents``; yield it."""
    http_port, control_port = _ports(config_text)
    workdir = Path(tempfile.mkdtemp(prefix="vigil-testhost-"))
    (workdir / "config.toml").write_text(config_text)
    extra = {n: list(a) for n, a in agents.items()} if isinstance(agents, Mapping) else {}
    extra |= {n: [] for n in agents if n not in extra}
    specs = {n: {"argv": _add_device(workdir, n), "args": a} for n, a in extra.items()}
    (workdir / "agents.json").write_text(json.dumps(specs))
    argv = [sys.executable, "-m", "tests.uml.testhost", "--serve", str(workdir)]
    argv += ["--lifetime", str(lifetime)]
    guest: Guest | None = None
    try:
        with Tap() as tap:
            (workdir / "config.toml").write_text(config_text.replace(HOST_IP, tap.host_ip))
            try:
                guest = Guest(argv, ROOT, tap=tap, echo=echo)
                host = TestHost(
                    f"http://{tap.guest_ip}:{http_port}",
                    tap.guest_ip,
                    tap.host_ip,
                    http_port,
                    control_port,
                    workdir,
                    tap,
                )
                _wait_ready(guest, host, timeout)
                yield host
            finally:
                if guest is not None:
                    _stop(guest, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(guest: Guest, host: TestHost, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = host.base_url + "/healthz"
    while (why := guest.ended()) is None:
        if (host.workdir / "ready").exists() and _answers(url):
            return
        if time.monotonic() > deadline:
            why = (
                f"test host not ready within {timeout:g} s "
                f"(is {host.host_ip} allowed, [http] host 0.0.0.0?)"
            )
            break
        time.sleep(0.1)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted(host.workdir.glob("*.log"))
    )
    console = "\n".join(guest.lines[-15:])
    raise UmlError(f"{why}\n{logs}\n--- console\n{console}")


def _stop(guest: Guest, workdir: Path) -> None:
    (workdir / "stop").touch()
    try:
        guest.wait(20)
    except UmlError:
        guest.kill()


# -- inside the guest ---------------------------------------------------------


def serve(workdir: Path, lifetime: float) -> int:
    """Run vigil and the agents until ``workdir/stop`` appears or ``lifetime`` passes."""
    cfg = workdir / "config.toml"
    agents: dict[str, dict[str, list[str]]] = json.loads((workdir / "agents.json").read_text())
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, argv: list[str]) -> None:
        with (workdir / f"{name}.log").open("ab") as log:
            procs[name] = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)

    def start_agent(name: str, args: list[str]) -> None:
        start(f"agent-{name}", agents[name]["argv"] + args)

    def handle(path: Path) -> None:
        req = json.loads(path.read_text())
        proc = procs.get(f"agent-{req['agent']}")
        if req["op"] == "kill" and proc is not None:
            proc.kill()
            proc.wait()
        elif (
            req["op"] == "start"
            and req["agent"] in agents
            and (proc is None or proc.poll() is not None)
        ):
            start_agent(req["agent"], req["args"])
        else:
            (workdir / f"{path.stem}.error").write_text(f"agent {req['agent']}: cannot {req['op']}")

    start("vigil", [sys.executable, "-m", "server", "--config", str(cfg)])
    for name, spec in agents.items():
        start_agent(name, spec["args"])
    end = time.monotonic() + lifetime
    ready = False
    while not (workdir / "stop").exists() and time.monotonic() < end:
        if not ready and all(
            WELCOMED in (workdir / f"agent-{n}.log").read_text(errors="replace") for n in agents
        ):
            (workdir / "ready").touch()
            ready = True
        for path in sorted(workdir.glob("request-*.json")):
            handle(path)
            path.unlink()
        time.sleep(0.05)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="vigil and agents in a UML guest, reachable here")
    p.add_argument("config", nargs="?", help="config.toml to run (by hand)")
    p.add_argument("--agent", action="append", default=[], help="reference agent NAME")
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # inside the guest
    p.add_argument("--lifetime", type=float, default=1800, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.lifetime)
    if not args.config:
        p.error("give a config.toml")
    with uml_test_host(Path(args.config).read_text(), args.agent, echo=True) as host:
        print(f"vigil at {host.base_url} (host side {host.host_ip}); Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def require_test_host() -> None:
    """Skip (in CI: fail) a test this machine cannot give a UML test host."""
    require(
        os.geteuid() == 0 and os.path.exists("/dev/net/tun"),
        "the UML test host's tap network needs root and /dev/net/tun",
    )
    reason = unsupported()
    require(reason is None, reason or "")


def uml_config(directory: Path, **sections: dict[str, Any]) -> str:
    """config.toml for vigil in the guest: the test users, reachable from this host, the
    control channel on; ``sections`` are added (``control`` keys merged in)."""
    base: dict[str, dict[str, Any]] = {
        "http": {"host": "0.0.0.0", "port": 8080},
        "auth": {"allow": ["10.213.1.0/24", "127.0.0.0/8"]},
        "control": {"enabled": True, "port": 9900, **sections.pop("control", {})},
        "audit": {"path": "audit.jsonl"},
    }
    return write_config(directory, base | sections).read_text()
