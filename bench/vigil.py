"""Starting vigil for a measurement: a config.toml in a temp dir, one user.

The user ``bench`` (operator) gets a random password hashed by vigil's own
``python -m server hash-password``; ``Vigil.auth`` is the header wrk sends.
Each ``Vigil.start()`` writes a fresh directory with config.toml and the
audit log, and serves the bench's static dir; it may run under cProfile.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO, Bench, BenchError, Server, free_port

USER = "bench"
ROLE = "operator"


def _toml(value: object) -> str:
    """A TOML value for a str, bool, int or list of str (JSON's syntax is TOML's here)."""
    return json.dumps(value)


@dataclass(frozen=True, slots=True)
class Vigil:
    bench: Bench
    password_hash: str
    auth: dict[str, str]  # the Authorization header of user ``bench``

    @classmethod
    def setup(cls, bench: Bench) -> Vigil:
        """Hash a fresh password with vigil; raise BenchError if vigil cannot."""
        password = secrets.token_urlsafe(16)
        out = subprocess.run(
            [bench.python, "-m", "server", "hash-password"],
            cwd=REPO,
            input=password,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines:
            raise BenchError(f"vigil hash-password failed: {out.stderr.strip()[-200:]}")
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        return cls(bench, lines[-1].strip(), {"Authorization": f"Basic {token}"})

    def start(
        self,
        name: str = "vigil",
        *,
        backend: str = "select",
        access_log: bool = False,
        profile: Path | None = None,
        sections: dict[str, dict[str, object]] | None = None,
    ) -> Server:
        """Return a not yet started vigil Server with its own config dir.

        ``sections``: more config sections (not [http], [auth], [control],
        [limits], [audit], [tls]), e.g. ``{"mqtt": {...}}``.

        With ``profile``, vigil runs under cProfile, which writes that file
        when vigil exits (on SIGTERM, when the Server stops).
        """
        port = free_port()
        home = self.bench.workdir / f"vigil-{port}"
        home.mkdir()
        http = {
            "host": "127.0.0.1",
            "port": port,
            "static_dir": str(self.bench.static_dir()),
            "max_connections": 768,
            "backend": backend,
            "access_log": access_log,
            "keepalive_timeout": 300,  # the idle section's connections must outlive a run
        }
        config = ["[http]", *(f"{k} = {_toml(v)}" for k, v in http.items())]
        config += ["", "[auth]", "max_users = 10", f"allow = {_toml(['127.0.0.0/8'])}"]
        config += ["", "[[auth.users]]", f"name = {_toml(USER)}", f"role = {_toml(ROLE)}"]
        config += [f"password = {_toml(self.password_hash)}"]
        config += ["", "[control]", "enabled = false"]
        # one bench user stands for many people: wrk's 50 and the idle section's 500
        # connections are theirs (a person's own budget is [limits] connections_per_user)
        config += ["", "[limits]", "connections_per_user = 1000"]
        config += ["", "[audit]", f"path = {_toml(str(home / 'audit.jsonl'))}"]
        tls_port = free_port()
        config += ["", "[tls]", f"port = {tls_port}", ""]
        for name, values in (sections or {}).items():
            config += [f"[{name}]", *(f"{k} = {_toml(v)}" for k, v in values.items()), ""]
        path = home / "config.toml"
        path.write_text("\n".join(config))
        argv = [self.bench.python, "-m", "server", "--config", str(path)]
        if profile is not None:
            argv[1:1] = ["-m", "cProfile", "-o", str(profile)]
        # vigil makes its own certificate there on start (server/web/certificate.py)
        return self.bench.server(name, argv, port, (tls_port, home / "tls.local.crt"))
