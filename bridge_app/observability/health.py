"""Health endpoints for load balancers: ``/healthz`` (the process answers) and
``/readyz`` (it can reach its database and channel layer)."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from bridge_app import messages

log = logging.getLogger(__name__)
CHECK_TIMEOUT = 2.0


async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _db_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _layer_ping() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel(messages.READY_PREFIX)
    await layer.send(channel, messages.ready_ping())
    await layer.receive(channel)


async def readyz(request: HttpRequest) -> JsonResponse:
    checks = {}
    for name, check in (("database", sync_to_async(_db_ping)), ("channel_layer", _layer_ping)):
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)
