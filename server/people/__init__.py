"""The people on the panel: who they are (``auth``, ``users``), who is online
(``presence``) and who holds which device (``leases``). Pure: ``now`` comes in."""
