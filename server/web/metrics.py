"""``GET /metrics``: what vigil's parts hold now, in Prometheus's text format.

Nothing is tracked twice. State (people and connections, devices, leases,
the MQTT bridge, the certificate) is read from the parts that own it when
a scraper asks (``Collector.collect``); what only the hot paths know is
counted there as plain numbers (``server.base.tally``: the server's
responses by status class and their latency, every command's outcome and
latency in ``core.commands``, the audit log's fsync times) and read the
same way. prometheus_client writes the format (names, escaping, ``le``
buckets, ``+Inf``) and reads the process's RSS, CPU time and file
descriptors (its ``ProcessCollector``, from /proc); its own counter and
histogram objects are not used, since each ``inc`` takes a lock (1.5 µs a
response against 0.2 µs, measured here). This module is imported only once
``[metrics]`` names a token (``app.Server``): importing prometheus_client
costs about 1.8 MB of RSS, which a vigil nobody scrapes does not pay.

Every label has a fixed set of values (status classes, connection states,
command outcomes, bridge states): no label per person, device or path, so
a scrape's size does not grow with what clients do (6.4 KB; 0.9 ms to make
here, /proc read included).

The route's access (the scraper's bearer token) is the gate's
(``web.gate``), its budget the handler's (``web.api.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from server.base.tally import Histogram, Tally
from server.core.commands import OUTCOMES
from server.core.services import Services
from server.web.certificate import Description
from server.web.exchange import State

# The text format's own name for what generate_latest writes (prometheus_client's latest
# default names version 1.0.0, which Prometheus before 3.0 does not know by that name).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BRIDGE_STATES = ("off", "connecting", "connected")
STATES = tuple(s for s in State if s is not State.CLOSED)


@dataclass(frozen=True, slots=True)
class Parts:
    """Where the metrics come from (``app.Server`` wires them)."""

    services: Services  # people, leases, devices, commands, the audit log
    connections: Callable[[], Iterable[State]]  # the state of each open connection
    responses: Tally  # by status class (1 .. 5), and their latency
    certificate: Callable[[], Description | None]  # the one served (None: TLS off)
    bridge: Callable[[], bool | None]  # the MQTT bridge connected? (None: it is off)
    declared: Callable[[], int]  # devices the config declares


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [(_le(bound), float(n)) for bound, n in histogram.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.sum)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _by(name: str, doc: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class Collector:
    """prometheus_client's custom collector: every vigil metric, read from ``parts``."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        parts, svc = self.parts, self.parts.services
        online = svc.presence.online()
        yield _gauge("vigil_people_online", "People online (grace periods included)", len(online))
        yield _gauge("vigil_people_max", "People who may be online at once", svc.presence.max_users)
        states = dict.fromkeys((s.value for s in STATES), 0.0)
        for state in parts.connections():
            states[state.value] += 1
        yield _by("vigil_connections", "Open HTTP connections by state", "state", states)
        responses = CounterMetricFamily(
            "vigil_http_requests", "HTTP responses by status class", labels=["code"]
        )
        for status_class, n in parts.responses.counts.items():
            responses.add_metric([f"{status_class}xx"], n)
        yield responses
        yield _histogram(
            "vigil_http_request_duration_seconds",
            "From a request's last bytes read to its answer queued",
            parts.responses.histogram,
        )
        yield from self._devices(svc)
        yield _histogram(
            "vigil_audit_fsync_duration_seconds",
            "The audit log's fsync, once per loop pass that wrote records",
            svc.audit.fsync_seconds,
        )
        bridge = parts.bridge()
        now = "off" if bridge is None else "connected" if bridge else "connecting"
        yield _by(
            "vigil_mqtt_bridge_state",
            "The MQTT bridge: off, connecting (or waiting to retry), connected",
            "state",
            {state: float(state == now) for state in BRIDGE_STATES},
        )
        cert = parts.certificate()
        if cert is not None:
            yield _gauge(
                "vigil_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served expires (Unix time)",
                cert.not_after.timestamp(),
            )

    def _devices(self, svc: Services) -> Iterator[Metric]:
        known = svc.control.known()
        yield _gauge(
            "vigil_control_channel_up",
            "1 if the SCTP control channel listens",
            float(svc.control.off_reason is None),
        )
        yield _gauge("vigil_devices_declared", "Devices the config declares", self.parts.declared())
        yield _gauge(
            "vigil_devices_online", "Devices connected now", sum(1 for d in known if d.online)
        )
        yield _gauge("vigil_leases_held", "Devices someone holds the lease of", len(svc.leases))
        commands = CounterMetricFamily(
            "vigil_commands",
            "Commands by outcome (one each command audit record)",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            commands.add_metric([outcome], svc.commands.counts[outcome])
        yield commands
        yield _histogram(
            "vigil_command_duration_seconds",
            "Commands from their start to a device's answer or the timeout",
            svc.commands.histogram,
        )


class Exposition:
    """The registry of one server: vigil's collector and the process's."""

    def __init__(self, parts: Parts) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(Collector(parts))
        ProcessCollector(registry=self.registry)

    def scrape(self) -> tuple[bytes, str]:
        """The metrics as Prometheus's text format, and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE
