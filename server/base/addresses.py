"""Network addresses as vigil reads them: one module for HTTP and the SCTP control channel.

Pure. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a dual-stack
listener reports for an IPv4 peer) are compared and shown as the IPv4
address they carry; a zone index (``fe80::1%eth0``) is ignored. An
allow-list (``AllowList``) is CIDR ranges of both families, checked at
accept time (``[auth] allow``) and when an SCTP association comes up
(``[control] allow``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_address(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``addr`` as an address object, IPv4-mapped IPv6 turned into IPv4."""
    ip = ipaddress.ip_address(addr.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(addr: str) -> bool:
    """Is ``addr`` this machine (127.0.0.0/8, ::1, IPv4-mapped loopback)?"""
    try:
        return normalise_address(addr).is_loopback
    except ValueError:
        return False


def display_address(addr: str) -> str:
    """``addr`` as people read it (``::ffff:127.0.0.1`` → ``127.0.0.1``)."""
    try:
        return str(normalise_address(addr))
    except ValueError:
        return addr


class AllowList:
    """CIDR ranges; ``allows(addr)`` for IPv4, IPv6 and IPv4-mapped addresses."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def allows(self, addr: str) -> bool:
        try:
            ip = normalise_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.networks if net.version == ip.version)
