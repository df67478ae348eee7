"""Where deliveries go: webhooks (with the server-side request forgery rules) and e-mail.

A webhook target must be ``https`` (``http`` only where NOTIFY_ALLOW_HTTP) and resolve to
public addresses only: loopback, link-local, private, shared, multicast and reserved ranges
are refused unless the site sets NOTIFY_ALLOW_PRIVATE_TARGETS. The rule is applied when a
subscription is saved and again on every attempt, to the addresses resolved then, and the
connection goes to the address that was checked (the URL's host goes in ``Host`` and TLS
SNI), so a name that re-resolves elsewhere (DNS rebinding) cannot slip through. Redirects
are not followed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..conf import edge_settings
from . import signing

# httpcore imports ``sniffio`` on every request to learn which event loop runs it; without
# the package installed, each import fails after a search of sys.path (a tenth of the
# bridge's CPU per delivery). Recording it as absent makes that failure immediate.
if importlib.util.find_spec("sniffio") is None:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]


class TargetRefused(ValueError):
    """A webhook URL the bridge will not call (the message says why)."""


def address_allowed(address: str) -> bool:
    if edge_settings.NOTIFY_ALLOW_PRIVATE_TARGETS:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def url_check(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an acceptable webhook URL, or :class:`TargetRefused`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise TargetRefused("webhook URLs must be https")
    if scheme == "http" and not edge_settings.NOTIFY_ALLOW_HTTP:
        raise TargetRefused("webhook URLs must be https (this site does not allow plain http)")
    if parts.username or parts.password:
        raise TargetRefused("webhook URLs may not carry credentials; the signature authenticates the bridge")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _checked(host: str, infos: list[tuple]) -> list[str]:
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    refused = [a for a in addresses if not address_allowed(a)]
    if refused:
        raise TargetRefused(f"{host} resolves to {refused[0]}, a loopback, link-local, private or reserved "
                            "address, which this site does not allow as a webhook target")
    return addresses


def url_validate(url: str) -> None:
    """Refuse (:class:`TargetRefused`) a URL the bridge would not call now."""
    _, host, port = url_check(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"{host} does not resolve: {exc}") from None
    _checked(host, infos)


# Checked resolutions, briefly reused: the connection goes to a checked address either way,
# and a resolver round trip per delivery would cost more than the delivery.
RESOLVED_TTL = 30.0
_resolved: dict[tuple[str, int, bool], tuple[float, str]] = {}


async def resolve_checked(host: str, port: int) -> str:
    """An address of ``host`` to connect to, every one of them checked."""
    key = (host, port, bool(edge_settings.NOTIFY_ALLOW_PRIVATE_TARGETS))
    hit = _resolved.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < RESOLVED_TTL:
        return hit[1]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TargetRefused(f"{host} does not resolve: {exc}") from None
    address = _checked(host, infos)[0]
    if len(_resolved) > 10_000:
        _resolved.clear()
    _resolved[key] = (now, address)
    return address


@dataclass
class Outcome:
    ok: bool
    status: int | None = None
    error: str = ""


def webhook_body(sub_id: int, event: dict[str, Any]) -> bytes:
    return json.dumps({**event, "subscription": sub_id}, separators=(",", ":"), default=str).encode()


async def webhook_post(client: httpx.AsyncClient, *, url: str, secret: str, sub_id: int,
                       event: dict[str, Any]) -> Outcome:
    """POST one event, signed; any 2xx is success."""
    try:
        scheme, host, port = url_check(url)
        address = await resolve_checked(host, port)
    except TargetRefused as exc:
        return Outcome(False, None, f"refused: {exc}")
    parts = urlsplit(url)
    literal = f"[{address}]" if ":" in address else address
    default_port = 443 if scheme == "https" else 80
    netloc = literal if port == default_port else f"{literal}:{port}"
    target = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    body = webhook_body(sub_id, event)
    headers = {
        "Host": parts.netloc.rpartition("@")[2],
        "Content-Type": "application/json",
        "User-Agent": "radical-edge-bridge (notifications)",
        signing.HEADER: signing.sign(secret, body),
        "Radical-Event-Id": str(event.get("id")),
        "Radical-Subscription-Id": str(sub_id),
        "Idempotency-Key": str(event.get("id")),
    }
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    try:
        response = await client.post(target, content=body, headers=headers, extensions=extensions,
                                     timeout=edge_settings.NOTIFY_WEBHOOK_TIMEOUT)
    except httpx.TimeoutException:
        return Outcome(False, None, f"no answer within {edge_settings.NOTIFY_WEBHOOK_TIMEOUT:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return Outcome(True, response.status_code)
    if 300 <= response.status_code < 400:
        return Outcome(False, response.status_code, f"HTTP {response.status_code}: redirects are not followed")
    snippet = response.text[:200].strip()
    return Outcome(False, response.status_code, f"HTTP {response.status_code}" + (f": {snippet}" if snippet else ""))


# -- e-mail ---------------------------------------------------------------------------------


def describe(event: dict[str, Any]) -> str:
    """One line about an event, for people."""
    if event.get("kind") == "topology":
        return f"edge {event['edge']} went {'online' if event.get('online') else 'offline'}"
    data = cast("dict[str, Any]", event.get("data") if isinstance(event.get("data"), dict) else {})
    what = f"{event['edge']} {event['plugin']}/{event['topic']}"
    if "job_id" in data:
        return f"{what}: job {data['job_id']} is {data.get('state', '?')}" + (
            f" (exit code {data['exit_code']})" if data.get("exit_code") is not None else "")
    if isinstance(data.get("tasks"), list):
        states: dict[str, int] = {}
        for task in data["tasks"]:
            if isinstance(task, dict):
                states[str(task.get("state"))] = states.get(str(task.get("state")), 0) + 1
        return f"{what}: " + ", ".join(f"{n} task(s) {s}" for s, n in sorted(states.items()))
    if "message" in data:
        return f"{what}: {data['message']}"
    return f"{what}: {json.dumps(data, default=str)[:200]}"


def email_message(*, sub: Any, events: list[dict[str, Any]], address: str, unsubscribe_url: str):
    from django.conf import settings
    from django.core.mail import EmailMessage

    n = len(events)
    label = sub.name or f"subscription #{sub.pk}"
    subject = f"[Radical Edge] {describe(events[0])}" if n == 1 else f"[Radical Edge] {n} events for {label}"
    lines = [f"{len(events)} event(s) matched your notification “{label}”:", ""]
    lines += [f"- #{e['id']} {describe(e)}" for e in events]
    lines += ["", f"Stop these e-mails: {unsubscribe_url}"]
    return EmailMessage(
        subject=subject[:200], body="\n".join(lines), from_email=settings.DEFAULT_FROM_EMAIL, to=[address],
        headers={"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                 "Auto-Submitted": "auto-generated"},
    )
