"""Bench only: the sealed channel's AEAD taken out, for ``make bench``'s ``seal`` section.

Python imports ``sitecustomize`` at start-up from the first directory on
``sys.path`` that has one; bench/section_seal.py puts this directory on
``PYTHONPATH`` for vigil, the reference agents and its device fleet in the
variant it compares the product against. There, ``Session.seal`` and
``Session.open`` hand the plaintext through as it is: the handshake still
runs (its cost is measured on its own), every message then travels as the
codec's JSON, as before the seal. Nothing in ``server/`` can switch this on:
the product has one protocol, sealed.
"""

from server.link import seal


def _through(_session: seal.Session, _stream: int, data: bytes) -> bytes:
    return data


seal.Session.seal = _through  # type: ignore[method-assign]
seal.Session.open = _through  # type: ignore[method-assign]
