"""The SCTP tuning both ends of the control channel use: dead peers noticed in seconds.

vigil's control channel (``server.control.channel``) sets these on its
listening socket before ``listen()``, the reference agent (``server.agent``)
on its socket before ``connect()``: heartbeats every ``heartbeat_ms``,
``max_retrans`` retransmissions before a path and the association fail, a
retransmission timeout within ``RTO_MIN_MS`` .. ``RTO_MAX_MS``, SACKs not
delayed, no Nagle. ``server/control/channel.py``'s header has the
arithmetic (a pulled cable is noticed within 2.7 s, 5 % loss takes no
device offline by mistake) and why each one is needed.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import sctp

from server.base.sockopts import family_of

__all__ = [
    "PADDRPARAMS",
    "RTO_INITIAL_MS",
    "RTO_MAX_MS",
    "RTO_MIN_MS",
    "SCTP_NODELAY",
    "SCTP_PEER_ADDR_PARAMS",
    "SPP_HB_ENABLE",
    "SPP_SACKDELAY_DISABLE",
    "family_of",
    "tune_peer",
]

# Retransmission timeout bounds (SCTP_RTOINFO, ms); the kernel's defaults
# (3000, 1000, 60000) would take about 10 s to notice a pulled cable. RTO_MAX
# bounds the potentially-failed heartbeats to [200, 400] ms (channel.py's header).
RTO_INITIAL_MS = 400  # before the first round trip is measured; also INIT's timer
RTO_MIN_MS = 100
RTO_MAX_MS = 200

SCTP_NODELAY = 3  # socket options, <linux/sctp.h>
SCTP_PEER_ADDR_PARAMS = 9
SPP_HB_ENABLE = 1
SPP_SACKDELAY_DISABLE = 1 << 6  # SACK every packet at once
# struct sctp_paddrparams (packed, aligned 4): assoc_id, address (a
# sockaddr_storage), hbinterval, pathmaxrxt, pathmtu, sackdelay, flags,
# ipv6_flowlabel, dscp
PADDRPARAMS = struct.Struct("=i128sIHIIIIBx")


def tune_peer(sock: Any, family: int, heartbeat_ms: int, max_retrans: int) -> None:
    """Make ``sock``'s future associations notice a dead peer in seconds.

    Heartbeat every ``heartbeat_ms``; a path fails after ``max_retrans``
    unanswered retransmissions and so does the association; the RTO stays
    within ``RTO_MIN_MS``..``RTO_MAX_MS``; SACKs are not delayed
    (``server/control/channel.py``'s header has the arithmetic and why);
    Nagle is off (SCTP_NODELAY). The heartbeat is set with a raw setsockopt
    because pysctp's wheels are built without SCTP_DRAFT10_LEVEL and drop
    spp_flags, without which the kernel ignores spp_hbinterval. (In C:
    setsockopt SCTP_PEER_ADDR_PARAMS with SPP_HB_ENABLE |
    SPP_SACKDELAY_DISABLE, SCTP_NODELAY, SCTP_RTOINFO, SCTP_ASSOCINFO.)
    """
    wildcard = struct.pack("=H", family)  # any address, port 0: the socket's default
    flags = SPP_HB_ENABLE | SPP_SACKDELAY_DISABLE
    params = PADDRPARAMS.pack(0, wildcard, heartbeat_ms, max_retrans, 0, 0, flags, 0, 0)
    sock.setsockopt(socket.IPPROTO_SCTP, SCTP_PEER_ADDR_PARAMS, params)
    # No Nagle: a command or result must not wait for the SACK of the previous
    # message (delayed 200 ms), which measured as a 200 ms p99 round trip.
    sock.setsockopt(socket.IPPROTO_SCTP, SCTP_NODELAY, 1)
    rto = sctp.rtoinfo()  # assoc 0: the socket's default
    rto.initial, rto.min, rto.max = RTO_INITIAL_MS, RTO_MIN_MS, RTO_MAX_MS
    sock.set_rtoinfo(rto)
    assoc = sctp.assocparams()
    assoc.assocmaxrxt = max_retrans
    sock.set_assocparams(assoc)
