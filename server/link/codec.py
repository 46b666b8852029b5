"""The control protocol's wire: what both ends agree on (README, "Devices")."""

from __future__ import annotations

import re

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # it appears in URLs
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ - (not first: . _ -)"
# Dead-peer detection, the same at both ends (server/control/channel.py's header has the
# arithmetic): SCTP heartbeats every HEARTBEAT_MS, PATH_MAX_RETRANS retransmissions.
HEARTBEAT_MS = 400
PATH_MAX_RETRANS = 4
