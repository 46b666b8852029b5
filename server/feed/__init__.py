"""What everyone sees of what everyone did: the events (``bus``, sent as Server-Sent
Events and to the fleet) and the durable record (``audit``)."""
