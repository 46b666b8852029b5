"""What the panel, curl and the fleet share: the services handlers use, one path for a
command whoever sends it, the device's view, and the announcer that turns every change
into its audit record, its log line and its event."""
