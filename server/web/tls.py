"""TLS for one connection, sans I/O: ciphertext in, plaintext out, and back.

``TlsSession`` wraps an ``ssl.SSLObject`` between two memory BIOs, so the
connection shell keeps doing all socket I/O itself (one ``recv``, one
``send`` per pass) and the loop stays non-blocking: a handshake is just
bytes in and bytes out until ``established``.

select() cannot see bytes the TLS layer has already decrypted and
buffered, so ``receive`` returns *all* plaintext that the ciphertext it was
given completes (it reads until the TLS layer wants more): nothing is left
behind that no readiness event would announce.

``server_context``: TLS 1.2 and 1.3 only; for 1.2 only ECDHE key exchange
with AEAD ciphers (AES-GCM, ChaCha20-Poly1305); no renegotiation, no
compression, the server's cipher order; session tickets off (no key to
rotate; a full handshake with P-256 is cheap enough for 10 people).
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
READ_SIZE = 65536


class TlsClosed(Exception):
    """The peer ended TLS (close_notify) or broke it; str() says why."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server's context for ``cert`` and ``key`` (raises OSError, ssl.SSLError)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)  # TLS 1.3's suites are all AEAD and stay on
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_TICKET
    )
    ctx.num_tickets = 0  # TLS 1.3: no session tickets either
    # an empty passphrase, never OpenSSL's prompt on the terminal for an encrypted key
    ctx.load_cert_chain(cert, key, password=b"")
    return ctx


class TlsSession:
    """The TLS state of one connection. ``pending()`` is ciphertext to send."""

    __slots__ = ("_in", "_obj", "_out", "established")

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=True)
        self.established = False

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext (``b""``: the peer closed); return the plaintext it completes.

        Raises ``TlsClosed`` when TLS ends or fails (a bad ClientHello, an
        old protocol, a close_notify, EOF in the middle of a record).
        """
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        chunks: list[bytes] = []
        try:
            if not self.established:
                self._obj.do_handshake()
                self.established = True
            while chunk := self._obj.read(READ_SIZE):
                chunks.append(chunk)
            raise TlsClosed("the peer closed the connection")  # b"": EOF, ragged or not
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            raise TlsClosed("the peer closed TLS") from None
        except ssl.SSLError as e:
            raise TlsClosed(e.reason or e.strerror or str(e)) from None
        return b"".join(chunks)

    def send(self, data: bytes | bytearray) -> None:
        """Encrypt ``data`` (after the handshake); the records wait in ``pending()``."""
        self._obj.write(data)

    def pending(self) -> bytes:
        """Ciphertext to send now (handshake messages, records, alerts)."""
        return self._out.read()

    def close_notify(self) -> bytes:
        """The alert that ends TLS cleanly (RFC 8446 §6.1), so the peer can tell it from a cut."""
        with contextlib.suppress(ssl.SSLError):  # WantRead: the peer's reply is not awaited
            self._obj.unwrap()
        return self._out.read()

    @property
    def version(self) -> str | None:
        return self._obj.version()
