"""A real Home Assistant for tests: installed once in a venv of its own (cached), then started.

Home Assistant 2024.1.6 (``VERSION``: the last series that runs on Python
3.11) and what its MQTT integration and a start without the frontend need
(``REQUIREMENTS``), pinned by tests/ha/constraints.txt, go into a venv
outside the checkout, like the UML kernel (tests/uml/kernel.py): under
``$VIGIL_HA_CACHE``, else /var/cache/vigil-ha as root, else
``${XDG_CACHE_HOME:-~/.cache}/vigil-ha``, in ``<version>/venv``. It is made
once (a lock file keeps concurrent runs from making it twice; the marker
``<version>/installed``, written last, says it is complete and with what) and
reused; ``python -m tests.ha.harness`` (or the first test) makes it and says so
in one line, with how long it took.

``HomeAssistant(directory)`` starts ``hass --skip-pip`` (it never installs
anything at run time) on a free loopback port with a configuration.yaml of only
what the tests use (``homeassistant``, ``http``, ``api``, ``config``,
``websocket_api``, ``onboarding``: no ``default_config``, no frontend), waits
until it answers, completes onboarding through the REST API (the owner user,
then the token flow) and keeps the access token. ``setup_mqtt(broker)`` adds
the MQTT integration through the config flow (``handler: mqtt``, then the
broker step) as user ``fleet`` of tests/broker.py.

Then: ``states``/``state`` (GET /api/states), ``call_service``, the entity and
device registries (``entities``, ``devices``: the websocket API, by the small
client ``WebSocket`` here), ``log`` (home-assistant.log) and ``warnings`` (its
WARNING and ERROR lines, with the ones any start of this bare configuration
makes left out: ``BENIGN``). ``stop`` is SIGTERM (SIGKILL after 20 s).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import websocket

from tests.support import free_port, terminate

VERSION = "2024.1.6"
HERE = Path(__file__).resolve().parent
CONSTRAINTS = HERE / "constraints.txt"
# Home Assistant itself, and the requirements of the integrations the tests load that it
# does not depend on: mqtt (paho-mqtt), its dependency file_upload (janus), and
# onboarding's dependencies analytics (psutil-home-assistant; it imports energy, which
# imports the recorder: SQLAlchemy, fnv-hash-fast) and person (image_upload: Pillow).
# Nothing else: hass runs with --skip-pip.
REQUIREMENTS = (
    f"homeassistant=={VERSION}",
    "paho-mqtt==1.6.1",
    "janus==1.0.0",
    "psutil-home-assistant==0.0.1",
    "SQLAlchemy==2.0.23",
    "fnv-hash-fast==0.5.0",
    "Pillow==10.1.0",
)
CONFIGURATION = """\
homeassistant:
  name: vigil test
  unit_system: metric
  time_zone: UTC
  latitude: 52.5
  longitude: 13.4
  elevation: 0
  country: DE
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
websocket_api:
onboarding:
logger:
  default: warning
  logs:
    homeassistant.components.mqtt: info
"""
CLIENT_ID = "http://127.0.0.1/"  # onboarding's and the token flow's OAuth client
OWNER = ("owner", "owner-pw-vigil")
# What a start of this configuration logs whatever vigil does: hass told not to pip, and
# the MQTT integration, which sets up all its platforms, failing to import camera (stream
# needs numpy and PyAV, which nothing here uses: vigil publishes no camera).
BENIGN = (
    re.compile(r"Skipping pip installation of required modules"),
    re.compile(r"Setup failed for 'camera': Unable to import component: No module named"),
)


class HomeAssistantError(Exception):
    """Home Assistant could not be installed, did not start, or refused a step."""


def cache_dir() -> Path:
    if os.environ.get("VIGIL_HA_CACHE"):
        return Path(os.environ["VIGIL_HA_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/vigil-ha")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vigil-ha"


def _say(line: str) -> None:
    print(f"vigil-ha: {line}", file=sys.stderr, flush=True)


def unsupported() -> str | None:
    """Why Home Assistant VERSION cannot run with this Python, or None."""
    if sys.version_info[:2] not in ((3, 11), (3, 12)):
        found = ".".join(map(str, sys.version_info[:2]))
        return f"Home Assistant {VERSION} needs Python 3.11 or 3.12, not {found}"
    return None


def installed() -> Path:
    """The venv's ``hass``, installed first if need be (says what, in one line)."""
    if reason := unsupported():
        raise HomeAssistantError(reason)
    home = cache_dir() / VERSION
    venv, marker = home / "venv", home / "installed"
    want = "\n".join(REQUIREMENTS) + "\n" + CONSTRAINTS.read_text()
    hass = venv / "bin" / "hass"
    if not _complete(marker, want):
        home.mkdir(parents=True, exist_ok=True)
        with (home / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time
            if not _complete(marker, want):
                _install(venv, marker, want)
                return hass
    _say(f"Home Assistant {VERSION} in {venv} (cached)")
    return hass


def _complete(marker: Path, want: str) -> bool:
    return marker.exists() and marker.read_text().split("\n", 1)[1:] == [want]


def _install(venv: Path, marker: Path, want: str) -> None:
    started = time.monotonic()
    marker.unlink(missing_ok=True)
    shutil.rmtree(venv, ignore_errors=True)  # what an interrupted install left
    _say(f"installing Home Assistant {VERSION} into {venv} (once; a few minutes)")
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input"]
    _run([*pip, "--upgrade", "pip"])
    _run([*pip, "-c", str(CONSTRAINTS), *REQUIREMENTS])
    took = time.monotonic() - started
    size = _run(["du", "-sh", str(venv)]).split()[0]
    line = f"installed {' '.join(REQUIREMENTS)} into {venv} ({size}) in {took:.0f} s"
    marker.write_text(line + "\n" + want)  # last: from now on the venv is complete
    _say(line)


def _run(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode:
        lines = [
            line
            for line in (out.stderr.strip() or out.stdout.strip()).splitlines()
            if "is ignored: it is neither a file nor a directory" not in line
        ] or ["failed"]
        errors = [line for line in lines if line.startswith("ERROR:")]  # pip's first says why
        why = (errors or lines[-1:])[0]
        raise HomeAssistantError(f"{Path(argv[0]).name} {' '.join(argv[1:4])}…: {why}")
    return out.stdout


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies (a killed pytest leaves no hass)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class HomeAssistant:
    """A running Home Assistant, onboarded (see the module docstring)."""

    def __init__(self, directory: Path, timeout: float = 90) -> None:
        hass = installed()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (self.dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        self.log_path = self.dir / "home-assistant.log"
        self._out = (self.dir / "hass.out").open("ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(hass), "--config", str(self.dir), "--skip-pip", "--log-no-color"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self.http = httpx.Client(base_url=self.base, timeout=30)
        try:
            self._wait_up(timeout)
            self.ready_after = time.monotonic() - started
            self.token = self._onboard()
        except BaseException:
            self.stop()
            raise
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        _say(
            f"Home Assistant {VERSION} answered on {self.base} {self.ready_after:.1f} s after start"
        )

    # -- start, onboarding -------------------------------------------------------
    def _wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HomeAssistantError(f"hass exited {self.proc.returncode}: {self._tail()}")
            try:
                if self.http.get("/api/onboarding").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise HomeAssistantError(f"hass did not answer within {timeout:g} s: {self._tail()}")

    def _tail(self) -> str:
        text = self.log()
        if not text.strip():
            text = (self.dir / "hass.out").read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-15:])

    def _onboard(self) -> str:
        name, pw = OWNER
        user = {"client_id": CLIENT_ID, "name": "Owner", "username": name, "password": pw}
        r = self.http.post("/api/onboarding/users", json=user | {"language": "en"})
        self._ok(r, "onboarding: the owner")
        code = r.json()["auth_code"]
        grant = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID}
        r = self.http.post("/auth/token", data=grant)
        self._ok(r, "the token flow")
        return str(r.json()["access_token"])

    @staticmethod
    def _ok(r: httpx.Response, what: str) -> None:
        if r.status_code >= 300:
            raise HomeAssistantError(f"{what}: {r.status_code} {r.text[:300]}")

    # -- the MQTT integration ------------------------------------------------------
    def setup_mqtt(self, host: str, port: int, username: str, password: str) -> dict[str, Any]:
        """The MQTT integration, through the config flow as a person would (the config
        entry it made). Discovery on, prefix ``homeassistant`` (HA's defaults)."""
        r = self.http.post("/api/config/config_entries/flow", json={"handler": "mqtt"})
        self._ok(r, "mqtt config flow")
        flow = r.json()
        if flow.get("type") != "form" or flow.get("step_id") != "broker":
            raise HomeAssistantError(f"mqtt config flow: not the broker step: {flow}")
        broker = {"broker": host, "port": port, "username": username, "password": password}
        r = self.http.post(f"/api/config/config_entries/flow/{flow['flow_id']}", json=broker)
        self._ok(r, "mqtt config flow, broker step")
        done = r.json()
        if done.get("type") != "create_entry":
            raise HomeAssistantError(f"mqtt config flow: {done}")
        entry: dict[str, Any] = done["result"]
        return entry

    # -- REST ----------------------------------------------------------------------
    def states(self) -> list[dict[str, Any]]:
        r = self.http.get("/api/states")
        self._ok(r, "GET /api/states")
        states: list[dict[str, Any]] = r.json()
        return states

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """GET /api/states/<entity_id>; None if HA has no such entity."""
        r = self.http.get(f"/api/states/{entity_id}")
        if r.status_code == 404:
            return None
        self._ok(r, f"GET /api/states/{entity_id}")
        state: dict[str, Any] = r.json()
        return state

    def call_service(self, domain: str, service: str, **data: Any) -> list[dict[str, Any]]:
        """POST /api/services/<domain>/<service>: the states it changed (HA does not wait
        for an MQTT entity: publishing the command is all the call does)."""
        r = self.http.post(f"/api/services/{domain}/{service}", json=data)
        self._ok(r, f"{domain}.{service}")
        changed: list[dict[str, Any]] = r.json()
        return changed

    # -- websocket: the registries ----------------------------------------------------
    def ws(self, msg_type: str, **fields: Any) -> Any:
        """One websocket command's result (a new connection each time: they are few)."""
        url = f"ws://127.0.0.1:{self.port}/api/websocket"
        ws = websocket.create_connection(url, timeout=30)
        try:

            def receive() -> Any:
                return json.loads(ws.recv())

            hello = receive()
            if hello.get("type") != "auth_required":
                raise HomeAssistantError(f"websocket: {hello}")
            ws.send(json.dumps({"type": "auth", "access_token": self.token}))
            if (auth := receive()).get("type") != "auth_ok":
                raise HomeAssistantError(f"websocket auth: {auth}")
            ws.send(json.dumps({"id": 1, "type": msg_type, **fields}))
            while True:
                answer = receive()
                if answer.get("id") == 1 and answer.get("type") == "result":
                    break
        finally:
            ws.close()
        if not answer.get("success"):
            raise HomeAssistantError(f"{msg_type}: {answer.get('error')}")
        return answer["result"]

    def entities(self) -> list[dict[str, Any]]:
        """The entity registry (``config/entity_registry/list``)."""
        entries: list[dict[str, Any]] = self.ws("config/entity_registry/list")
        return entries

    def devices(self) -> list[dict[str, Any]]:
        """The device registry (``config/device_registry/list``)."""
        entries: list[dict[str, Any]] = self.ws("config/device_registry/list")
        return entries

    # -- the log --------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def warnings(self, since: int = 0) -> list[str]:
        """WARNING and ERROR records after offset ``since`` of the log, each with its
        continuation lines (a traceback), less ``BENIGN``."""
        records: list[str] = []
        for line in self.log()[since:].splitlines():
            if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ [A-Z]+ ", line):
                records.append(line)
            elif records:
                records[-1] += "\n" + line
        bad = [r for r in records if re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) ", r)]
        return [r for r in bad if not any(p.search(r) for p in BENIGN)]

    # -- stop ------------------------------------------------------------------------
    def stop(self, timeout: float = 20) -> None:
        terminate(self.proc, timeout)
        self.http.close()
        self._out.close()

    def __enter__(self) -> HomeAssistant:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main() -> int:
    try:
        installed()
    except HomeAssistantError as e:
        _say(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
