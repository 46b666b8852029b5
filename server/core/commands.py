"""One command, whoever sends it (a browser or curl through ``web.api``, the fleet
through ``fleet.mqtt``, vigil itself for a safe state): the role, the entity and value
checked against the device's description (``link.entities``: 400 naming the rule), the
device's lease (``people.leases``: another holder means 409, a free device is taken for
its sender), the control channel, one audit record, counted by its outcome
(``OUTCOMES``, for ``/metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, cast

from server.base.buckets import retry_after
from server.config import RESERVED_USER
from server.link.entities import KEY, KEY_RULE, Kind, Value
from server.people.auth import User
from server.people.leases import End, Held, Lease

from .services import Services

# Who sends the safe values when a holder vanishes (a name no account may take).
VIGIL = User(RESERVED_USER, "operator")


def too_fast(what: str, wait: float) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """429 for one person's ``what`` beyond their rate (``[limits]``): status, body, headers."""
    retry = retry_after(wait)
    body = {"error": f"too many {what}; try again in {retry} s", "retry_after": retry}
    return 429, body, [("Retry-After", str(retry))]


def viewer_refusal(user: User, what: str) -> str | None:
    """The 403 text if ``user`` is a viewer, who cannot do ``what``."""
    return None if user.role == "operator" else f"{user.name} is a viewer: viewers cannot {what}"


Answer = tuple[int, dict[str, Any]]  # HTTP status and JSON body

# How a command ended (``/metrics``: vigil_commands_total), one for each ``command`` audit
# record: the device did it, or answered that it could not; no answer in time; the device
# or the channel was not there (or went away); vigil refused it (role, entity, value, lease).
OUTCOMES = ("ok", "failed", "timeout", "unavailable", "refused")
_BY_STATUS = {504: "timeout", 503: "unavailable"}
# Outcomes whose latency is a device's round trip (or the whole timeout), not a refusal's.
_TIMED = frozenset(("ok", "failed", "timeout"))


def outcome(status: int, ok: bool) -> str:
    """One of ``OUTCOMES`` for a command answered ``status`` (``ok``: the device did it)."""
    if status == 200:
        return "ok" if ok else "failed"
    return _BY_STATUS.get(status, "refused")


class Command:
    """One command, whoever sends it: ``start`` issues it, ``settle`` records its answer.

    ``start(done)``: refused (403) for viewers; refused as the control
    channel would (404, 503: unknown device, offline; 400: no such entity, or
    a value the entity cannot take, with the rule); 409 with the holder while
    someone else holds the device; else a free device is leased to the
    sender first when ``take`` (a person's command; a channel without presence,
    and vigil's safe values, only check), and the command goes out.
    ``done(answer)`` comes exactly once, perhaps at once.
    ``settle(answer)`` counts it by outcome (``Services.commands``, with its
    latency if a device had it), appends the ``command`` audit record and
    returns the answer to give; HTTP calls it inside the connection's error boundary
    (``Deferred.finish``), so a record that cannot be written is a 500.
    """

    def __init__(
        self,
        svc: Services,
        user: User,
        device: str,
        entity: str,
        value: Value,
        *,
        take: bool = True,
        reason: str | None = None,
    ) -> None:
        self.svc, self.user, self.device, self.entity, self.value = svc, user, device, entity, value
        self.take = take
        self.reason = reason  # why vigil sends it (a safe state); None: a person does
        self.started = svc.now()

    def start(self, done: Callable[[Answer], None]) -> None:
        svc, user, device = self.svc, self.user, self.device
        refused = viewer_refusal(user, "send commands")
        if refused is not None:
            done((403, {"error": refused}))
            return
        refusal = svc.control.check(device, self.entity, self.value)
        if refusal is not None:
            done((refusal.status, {"error": refusal.error}))
            return
        if self.take:
            lease = svc.leases.take(device, user.name, self.started, svc.wall())
        else:
            lease = svc.leases.check(device, user.name) or []
        if isinstance(lease, Held):
            done((409, lease.body()))
            return
        svc.announcer.lease_changes(lease)
        svc.control.command(
            device, self.entity, self.value, user.name, lambda *a: done(a), self.reason
        )

    def settle(self, answer: Answer) -> Answer:
        status, result = answer
        extra = {} if self.reason is None else {"reason": self.reason}
        ok = bool(result.get("ok"))
        latency = self.svc.now() - self.started
        how = outcome(status, ok)
        self.svc.commands.add(how, latency if how in _TIMED else None)
        self.svc.audit.append(
            "command",
            id=result.get("id"),
            user=self.user.name,
            device=self.device,
            entity=self.entity,
            value=self.value,
            status=status,
            ok=ok,
            state=result.get("state"),
            error=result.get("error"),
            latency_ms=round(latency * 1000, 1),
            **extra,
        )
        return answer


def too_much(
    svc: Services, user: User, entity: object, value: object
) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
    """A command refused before it is one (not audited): not an entity key and a plain
    value (400), or more commands than ``user`` may send (429); status, body, headers."""
    if not isinstance(entity, str) or not KEY.fullmatch(entity) or isinstance(value, list | dict):
        message = (
            'the body must be {"entity": "<key>", "value": <true, false, a number, a text '
            f"or null>}} (a key is {KEY_RULE})"
        )
        return 400, {"error": message}, []
    wait = svc.command_rate.take(user.name, svc.now())
    return too_fast("commands", wait) if wait else None


def issue_command(
    svc: Services,
    user: User,
    device: str,
    entity: object,
    value: object,
    done: Callable[[int, dict[str, Any]], None],
    *,
    take: bool = True,
) -> None:
    """A ``Command`` for a channel without a connection (MQTT): started, then settled."""
    refused = too_much(svc, user, entity, value)
    if refused is not None:
        done(*refused[:2])
        return
    assert isinstance(entity, str)
    command = Command(svc, user, device, entity, cast(Value, value), take=take)
    command.start(lambda answer: done(*command.settle(answer)))


def safe_state(svc: Services, lease: Lease, end: End) -> None:
    """The holder of ``lease`` vanished (``end``): every entity of the device that declares
    a safe value is sent it, by vigil, with the reason; each is audited and shown."""
    device = svc.control.device(lease.device)
    if device is None or not device.online:
        return
    reason = f"safe state: {lease.holder} {end.value}"
    for entity in device.entities:
        if entity.safe is None:
            continue
        value = None if entity.kind is Kind.BUTTON else entity.safe
        command = Command(svc, VIGIL, device.id, entity.key, value, take=False, reason=reason)
        command.start(partial(_record, command))


def _record(command: Command, answer: Answer) -> None:
    """Settle a command nobody waits for (vigil's own): its audit record."""
    command.settle(answer)
