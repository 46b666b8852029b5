"""The control channel: device agents over SCTP. ``registry`` and ``admission`` decide
(pure), ``channel`` is the socket shell around them."""
