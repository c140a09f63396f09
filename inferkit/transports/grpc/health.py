"""Standard gRPC health checking (``grpc.health.v1.Health``) following the server's readiness.

Kubernetes' gRPC probes, grpc_health_probe and load balancers ask ``Check`` for the overall
service ``""``; inferkit answers SERVING exactly when ``Server.ready()`` is true (started, not
draining, no model LOADING), as ``/v2/health/ready`` does on REST. The same answer is given for
each inferkit service by name. The service is grpclib's own, which needs the ``protobuf``
package; without it the health service is left out with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from grpclib.health.check import CheckBase

from inferkit.server import Server

__all__ = ["Readiness", "create_health"]

log = logging.getLogger("inferkit.grpc")


class Readiness(CheckBase):
    """A grpclib health check that asks ``server.ready()`` on every ``Check``.

    ``Watch`` streams are told about changes found by polling every ``poll_interval`` seconds
    (readiness changes at start, on load and unload, and when draining starts).
    """

    def __init__(self, server: Server, *, poll_interval: float = 1.0) -> None:
        self._server = server
        self._interval = poll_interval
        self._value: bool | None = None
        self._events: set[asyncio.Event] = set()
        self._poll_task: asyncio.Task[None] | None = None

    def __status__(self) -> bool | None:
        return self._value

    async def __check__(self) -> bool | None:
        value = await self._server.ready()
        if value != self._value:
            self._value = value
            for event in self._events:
                event.set()
        return value

    async def _poll(self) -> None:
        while True:
            await self.__check__()
            await asyncio.sleep(self._interval)

    async def __subscribe__(self) -> asyncio.Event:
        if self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll())
        event = asyncio.Event()
        self._events.add(event)
        return event

    async def __unsubscribe__(self, event: asyncio.Event) -> None:
        self._events.discard(event)
        if not self._events and self._poll_task is not None:
            task, self._poll_task = self._poll_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_health(server: Server, services: Iterable[Any]) -> list[Any]:
    """grpclib's ``Health`` for ``services`` and the overall ``""``, or nothing without protobuf."""
    try:
        from grpclib.health.service import OVERALL, Health
    except ImportError:
        log.warning(
            "gRPC health checking is off: it needs the protobuf package "
            "(pip install 'grpclib[protobuf]')"
        )
        return []
    check = Readiness(server)
    checks: dict[Any, list[CheckBase]] = {service: [check] for service in services}
    checks[OVERALL] = [check]
    return [Health(checks)]
