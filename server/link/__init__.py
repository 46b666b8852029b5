"""The control protocol, both ends of it: what vigil's control channel and a device agent
share (the message codec, the sealed channel, the device's secret, the SCTP tuning)."""
