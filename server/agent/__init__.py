"""The reference device agent (``python -m server.agent``): a separate process on the
device's side of the control channel."""
