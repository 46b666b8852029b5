"""The ground floor: what every other part stands on and that knows nothing of vigil's
domain: the event loop, socket options, clocks and dates, strict JSON, rate buckets,
address lists, quiet logging, systemd's notify protocol and the pid file."""
