"""The certificate vigil serves, and the context new TLS handshakes get.

Loaded when vigil starts and on SIGHUP: the configured certificate
(``[tls] cert`` and ``key``), or this device's own, made on first run
(``server.firstrun``) and made again when ``certificate.remake_reason``
says so (the clock was wrong when it was made). Checked once a minute
(``check``, from the sweep): this device's own certificate is made again
when it is no longer valid now, and the new context serves new handshakes
(open connections keep theirs); what is wrong with a certificate
(``certificate.warning``) is logged at load and then daily.
"""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime
from pathlib import Path

from server.config import TlsConfig
from server.web import certificate

log = logging.getLogger(__name__)


class ServedCertificate:
    def __init__(self, cfg: TlsConfig, state_dir: Path) -> None:
        self.cfg = cfg
        self.state_dir = state_dir  # where this device's own certificate lives
        self.context: ssl.SSLContext | None = None  # for new handshakes; None: not loaded
        self.description: certificate.Description | None = None

    def load(self) -> ssl.SSLContext:
        """Load (or make) the certificate ``cfg`` names; it serves new handshakes from now.

        Raises ``CertificateError`` (one line naming the file and what is wrong),
        ``ssl.SSLError`` or ``OSError``.
        """
        cfg = self.cfg
        if cfg.cert is None or cfg.key is None:
            ctx, desc, made = certificate.own_pair(self.state_dir, datetime.now(UTC))
        else:
            (ctx, desc), made = certificate.load(cfg.cert, cfg.key, own=False), None
        self.context, self.description = ctx, desc
        log.info(
            "TLS certificate %s, SHA-256 %s, expires %s",
            desc.path,
            desc.fingerprint,
            desc.not_after.date(),
        )
        if made is not None:
            log.warning(
                "made a new TLS certificate for this device (%s): SHA-256 %s, valid until %s;"
                " browsers ask again: compare the fingerprint with what they show",
                made,
                desc.fingerprint,
                desc.not_after.date(),
            )
        self._warn(datetime.now(UTC))
        return ctx

    def reload(self, cfg: TlsConfig, state_dir: Path) -> None:
        """SIGHUP: load ``cfg``'s certificate, or keep serving the old one and say why."""
        self.cfg, self.state_dir = cfg, state_dir
        try:
            self.load()
        except (OSError, ssl.SSLError, certificate.CertificateError) as e:
            log.error("reload: keeping the old TLS certificate: %s", e)

    def check(self, seconds: int) -> None:
        """Once a minute (``seconds`` since start): remake this device's own certificate if
        it is not valid now; warn daily of what is wrong with the one served."""
        if self.description is None:
            return
        now = datetime.now(UTC)
        if self._own and certificate.remake_reason(self.description, now) is not None:
            try:
                self.load()
            except (OSError, ssl.SSLError, certificate.CertificateError) as e:
                log.error("no new TLS certificate, keeping the one in use: %s", e)
            return
        if seconds % certificate.REPEAT_WARNING == 0:
            self._warn(now)

    @property
    def _own(self) -> bool:
        """This device's own certificate (not a configured one)."""
        return self.cfg.cert is None

    def _warn(self, now: datetime) -> None:
        assert self.description is not None
        said = certificate.warning(self.description, now, self._own)
        if said is not None:
            log.log(said[0], "%s", said[1])

    def dns_names(self) -> list[str]:
        """The DNS names the certificate served is for (lower case)."""
        if self.description is None:
            return []
        names = self.description.names
        return [n.partition(":")[2].lower() for n in names if n.startswith("DNS:")]
