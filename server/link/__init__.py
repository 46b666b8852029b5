"""The control protocol, both ends of it: what vigil's control channel and a device agent
share (the message codec, the device's secret and its proof, the SCTP tuning)."""
