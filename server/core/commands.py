"""One command, whoever sends it (a browser or curl through ``web.api``, the fleet
through ``fleet.mqtt``): the role, the device's lease (``people.leases``: another holder
means 409, a free device is taken for its sender), the control channel, one audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.base import jsontext
from server.base.buckets import retry_after
from server.people.auth import User
from server.people.leases import Held

from .services import Services

MAX_ACTION = 64  # characters of a command's action
MAX_ARGS = 2048  # bytes of a command's args as JSON: they are audited and sent to the device


def too_fast(what: str, wait: float) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """429 for one person's ``what`` beyond their rate (``[limits]``): status, body, headers."""
    retry = retry_after(wait)
    body = {"error": f"too many {what}; try again in {retry} s", "retry_after": retry}
    return 429, body, [("Retry-After", str(retry))]


def viewer_refusal(user: User, what: str) -> str | None:
    """The 403 text if ``user`` is a viewer, who cannot do ``what``."""
    return None if user.role == "operator" else f"{user.name} is a viewer: viewers cannot {what}"


Answer = tuple[int, dict[str, Any]]  # HTTP status and JSON body


class Command:
    """One command, whoever sends it: ``start`` issues it, ``settle`` records its answer.

    ``start(done)``: refused (403) for viewers; refused as the control
    channel would (404, 503, 400: unknown device, offline, unknown action);
    409 with the holder while someone else holds the device; else a free
    device is leased to the sender first when ``take`` (a person's command;
    a channel without presence only checks), and the command goes out.
    ``done(answer)`` comes exactly once, perhaps at once.
    ``settle(answer)`` appends the ``command`` audit record and returns the
    answer to give; HTTP calls it inside the connection's error boundary
    (``Deferred.finish``), so a record that cannot be written is a 500.
    """

    def __init__(
        self,
        svc: Services,
        user: User,
        device: str,
        action: str,
        args: dict[str, Any],
        *,
        take: bool = True,
    ) -> None:
        self.svc, self.user, self.device, self.action, self.args = svc, user, device, action, args
        self.take = take
        self.started = svc.now()

    def start(self, done: Callable[[Answer], None]) -> None:
        svc, user, device = self.svc, self.user, self.device
        refused = viewer_refusal(user, "send commands")
        if refused is not None:
            done((403, {"error": refused}))
            return
        refusal = svc.control.unavailable(device, self.action)
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
        svc.control.command(device, self.action, self.args, user.name, lambda *a: done(a))

    def settle(self, answer: Answer) -> Answer:
        status, result = answer
        self.svc.audit.append(
            "command",
            id=result.get("id"),
            user=self.user.name,
            device=self.device,
            action=self.action,
            args=self.args,
            status=status,
            ok=bool(result.get("ok")),
            result=result.get("result"),
            error=result.get("error"),
            latency_ms=round((self.svc.now() - self.started) * 1000, 1),
        )
        return answer


def too_much(
    svc: Services, user: User, action: str, args: dict[str, Any]
) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
    """A command refused before it is one (not audited): args too large (400), or more
    commands than ``user`` may send (429); the status, body and headers to answer."""
    if len(action) > MAX_ACTION or len(jsontext.dumps(args)) > MAX_ARGS:
        message = f"action has at most {MAX_ACTION} characters and args at most {MAX_ARGS} bytes"
        return 400, {"error": message}, []
    wait = svc.command_rate.take(user.name, svc.now())
    return too_fast("commands", wait) if wait else None


def issue_command(
    svc: Services,
    user: User,
    device: str,
    action: str,
    args: dict[str, Any],
    done: Callable[[int, dict[str, Any]], None],
    *,
    take: bool = True,
) -> None:
    """A ``Command`` for a channel without a connection (MQTT): started, then settled."""
    refused = too_much(svc, user, action, args)
    if refused is not None:
        done(*refused[:2])
        return
    command = Command(svc, user, device, action, args, take=take)
    command.start(lambda answer: done(*command.settle(answer)))
