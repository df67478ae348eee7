"""Radical Edge settings: one table of defaults, read through one accessor (like DRF's
api_settings).

    from bridge_app.conf import edge_settings
    edge_settings.REQUEST_TIMEOUT

Each setting ``NAME`` below is set, in this order of precedence, by the Django setting
``RADICAL_EDGE["NAME"]`` (what tests override), else its default here. ``settings.py``
fills ``RADICAL_EDGE`` from the environment with :func:`from_environment`: the variable
``RADICAL_NAME``, read with the type of the default (a boolean takes 1/true/yes/on or
0/false/no/off; a tuple a comma list), and a value that cannot mean what was meant stops
the bridge at start, naming the variable. A few tuning knobs have no variable
(``NOT_FROM_ENVIRONMENT``). The defaults are written here only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from radical_edge_site.env import env_bool, env_float, env_int, env_list

DEFAULTS: dict[str, Any] = {
    # Largest request or response body carried through the proxy (413 above it).
    "MAX_BODY_BYTES": 64 * 1024 * 1024,
    # Seconds the proxy waits for an agent's answer (504 after); callers may ask for less
    # with the X-Request-Timeout header, or more up to MAX_REQUEST_TIMEOUT.
    "REQUEST_TIMEOUT": 60.0,
    "MAX_REQUEST_TIMEOUT": 600.0,
    # Agents ping this often; an edge silent for 3 intervals is offline.
    "HEARTBEAT_INTERVAL": 20.0,
    # Requests one edge may have in flight at once (429 above).
    "EDGE_MAX_INFLIGHT": 512,
    # Seconds an agent has to send hello after connecting.
    "HELLO_TIMEOUT": 10.0,
    # What a hello may announce (bridge_app/agents/hello.py), sizes as JSON: all of it; its host
    # facts; plugins; routes per plugin; characters of a plugin's description (each refuses
    # the hello, bye bad_hello); one plugin's UI schema (over it, only that schema is refused).
    "HELLO_MAX_BYTES": 1024 * 1024,
    "HELLO_MAX_FACTS_BYTES": 64 * 1024,
    "HELLO_MAX_PLUGINS": 64,
    "HELLO_MAX_ROUTES": 256,
    "HELLO_MAX_DESCRIPTION_CHARS": 4096,
    "HELLO_MAX_UI_SCHEMA_BYTES": 64 * 1024,
    # Seconds an original (0.0.x) agent's socket stays open after it was told to upgrade, so
    # that one which reconnects at once does so at most this often (bridge_app/calls/compat.py).
    "OLD_AGENT_HOLD": 60.0,
    # Seconds the proxy trusts its in-process caches of tokens and edges without a refresh
    # (they are also invalidated at once by channel-layer broadcasts).
    "CACHE_TTL": 10.0,
    # Size of the binary chunks large bodies are split into.
    "CHUNK_SIZE": 256 * 1024,
    # Seconds a replaced or shutting-down connection keeps answering its calls in flight.
    "DRAIN_TIMEOUT": 20.0,
    # Chunks of one streamed body in flight before the receiver grants more (flow control).
    "STREAM_WINDOW": 16,
    # Public URL of the bridge, reported by POST /edge/list (default: from the request).
    "PUBLIC_URL": "",
    # Rate limits of proxied calls (token buckets): calls per second and burst size, per
    # user and per edge; a rate of 0 turns that limit off. Shared across bridge processes
    # through Redis when REDIS_URL is set (synchronised every RATE_LIMIT_SYNC_INTERVAL s).
    "USER_RATE": 200.0,
    "USER_BURST": 400,
    "EDGE_RATE": 500.0,
    "EDGE_BURST": 1000,
    "RATE_LIMIT_SYNC_INTERVAL": 1.0,
    # Invalid API tokens per client address: burst, then this many per second (429 after).
    "AUTH_FAILURE_RATE": 0.2,
    "AUTH_FAILURE_BURST": 20,
    # Audit trail of proxied calls: records are written in batches of up to
    # AUDIT_FLUSH_SIZE; at most AUDIT_BUFFER_MAX wait in memory while the database is away.
    "AUDIT_CALLS": True,
    "AUDIT_FLUSH_SIZE": 1000,
    # Seconds a record waits at most before its batch is written (so it is visible, and a
    # killed process loses at most this much), and strict mode: a call is answered only
    # once its record is durably written (group commit; see audit.py).
    "AUDIT_FLUSH_INTERVAL": 0.5,
    "AUDIT_STRICT": False,
    "AUDIT_BUFFER_MAX": 100_000,
    # Days kept by `manage.py audit_prune`: proxied calls, and admin actions (0 = forever).
    "AUDIT_RETENTION_DAYS": 90,
    "ACTION_RETENTION_DAYS": 365,
    # Events for live pages and GET /events (events.py, sse.py): written in batches at most
    # every EVENTS_FLUSH_INTERVAL s; at most EVENTS_BUFFER_MAX wait in memory while the
    # database is away; event data larger than EVENT_MAX_BYTES (encoded) is replaced by a
    # note; kept EVENTS_RETENTION_DAYS for replay (`manage.py events_prune`).
    "EVENTS_FLUSH_INTERVAL": 0.2,
    "EVENTS_BUFFER_MAX": 100_000,
    "EVENT_MAX_BYTES": 512 * 1024,
    "EVENTS_RETENTION_DAYS": 7,
    # Events one edge's agent may emit per second, and in a burst; beyond that they are
    # dropped, counted and reported as one bridge/events_dropped event per flush (0 = off).
    "EVENTS_RATE_PER_EDGE": 200.0,
    "EVENTS_BURST_PER_EDGE": 2000,
    # GET /events: a comment after this many idle seconds; the reconnection delay suggested
    # to clients; events a slow subscriber may fall behind before its stream is cut (it
    # reconnects and catches up from the database); how often a stream re-reads which edges
    # its caller may see (new grants).
    "EVENTS_KEEPALIVE": 15.0,
    "EVENTS_RETRY_MS": 3000,
    "EVENTS_STREAM_BACKLOG": 20_000,
    "EVENTS_REFRESH_INTERVAL": 60.0,
    # GET /events: seconds a live event whose smaller ids have not all arrived waits for
    # them before the stream reads them from the database (streams/sse.py, "in id order").
    "EVENTS_HOLE_WAIT": 0.05,
    # Full garbage collections on the bridge's schedule (after edges disconnect, and every
    # housekeeping interval) rather than in the middle of a burst of connecting edges;
    # False leaves CPython's defaults (bridge_app/core/collector.py).
    "GC_SCHEDULED": True,
    # Edges a user who is not a site admin may add in the portal (each with its first
    # token); 0 turns self-service off, so only admins issue edge tokens.
    "USER_EDGES_MAX": 3,
    # The MCP server at /mcp (bridge_app/mcp, docs/MCP.md): on or off; tools and plugins an
    # admin hides from it ("submit_job", "plugin:rhapsody"); the longest a tool waits for a
    # job or tasks; output bytes a tool returns at once; tasks in one run_tasks call; bytes
    # one write_file call may write (its content travels inside one MCP message).
    "MCP_ENABLED": True,
    "MCP_HIDDEN": (),
    "MCP_MAX_WAIT": 300.0,
    "MCP_MAX_OUTPUT_BYTES": 64 * 1024,
    "MCP_MAX_TASKS": 100,
    "MCP_MAX_WRITE_BYTES": 2 * 1024 * 1024,
    # Notifications (bridge_app/notifications): the per-process delivery worker (False: run
    # `manage.py notify_worker` instead); webhook targets on loopback, link-local and private
    # addresses, and plain http, refused unless allowed; seconds per webhook attempt;
    # retries with exponential backoff (first delay, largest delay) and jitter for at most
    # NOTIFY_RETRY_FOR s, then dead-lettered; e-mails collect events for
    # NOTIFY_EMAIL_BATCH_SECONDS (at most NOTIFY_EMAIL_MAX_EVENTS per mail); subscriptions
    # per user; deliveries per second per user and per target host; how often each
    # process looks for work that another process left (retries, expired leases).
    "NOTIFY_WORKER": True,
    "NOTIFY_ALLOW_PRIVATE_TARGETS": False,
    "NOTIFY_ALLOW_HTTP": False,
    "NOTIFY_WEBHOOK_TIMEOUT": 10.0,
    "NOTIFY_RETRY_BASE": 2.0,
    "NOTIFY_RETRY_MAX_DELAY": 600.0,
    "NOTIFY_RETRY_FOR": 24 * 3600.0,
    "NOTIFY_EMAIL_BATCH_SECONDS": 60.0,
    "NOTIFY_EMAIL_MAX_EVENTS": 100,
    "NOTIFY_MAX_SUBSCRIPTIONS_PER_USER": 50,
    "NOTIFY_USER_RATE": 50.0,
    "NOTIFY_TARGET_RATE": 20.0,
    "NOTIFY_POLL_INTERVAL": 1.0,
    "NOTIFY_CONCURRENCY": 32,
    # Seconds a process holds a subscription (renewed while it delivers); a process that
    # dies leaves it to expire, and another takes over.
    "NOTIFY_LEASE_SECONDS": 60.0,
    # Derived events: an edge offline for this many minutes; a job this many minutes before
    # its walltime (0 turns either off).
    "NOTIFY_EDGE_OFFLINE_MINUTES": 10.0,
    "NOTIFY_WALLTIME_MINUTES": 10.0,
    # An account with less than this percentage of its allocation left (queue_info's usage
    # events; 0 turns it off).
    "NOTIFY_ALLOCATION_PERCENT": 10.0,
    # Seconds between checks for derived events, in each process.
    "NOTIFY_DERIVED_INTERVAL": 30.0,
    # Child edges (edges on compute nodes, docs/ARCHITECTURE.md): a child's token expires
    # CHILD_TOKEN_MARGIN s after its walltime once its job runs, and at most
    # CHILD_QUEUE_WAIT_MAX s (plus walltime and margin) after launch while it waits in the
    # queue; the child says bye CHILD_BYE_MARGIN s before its walltime unless asked otherwise.
    "CHILD_TOKEN_MARGIN": 300.0,
    "CHILD_QUEUE_WAIT_MAX": 7 * 86400.0,
    "CHILD_BYE_MARGIN": 30.0,
}


# Tuning knobs no environment variable sets (RADICAL_EDGE in the Django settings does).
NOT_FROM_ENVIRONMENT = frozenset({
    "AUDIT_FLUSH_SIZE", "AUDIT_BUFFER_MAX", "EVENTS_FLUSH_INTERVAL", "EVENTS_BUFFER_MAX", "EVENT_MAX_BYTES",
    "EVENTS_RETENTION_DAYS", "EVENTS_KEEPALIVE", "EVENTS_RETRY_MS", "EVENTS_STREAM_BACKLOG",
    "EVENTS_REFRESH_INTERVAL", "EVENTS_HOLE_WAIT", "NOTIFY_CONCURRENCY",
})
# Defaults of the environment that differ from the table's: the notification worker is off
# under pytest, whose in-process clients start runtimes on short-lived loops (live bridges
# in tests are subprocesses and get it).
ENVIRONMENT_DEFAULTS: dict[str, Callable[[], Any]] = {
    "NOTIFY_WORKER": lambda: "pytest" not in sys.modules,
}


def env_name(name: str) -> str:
    """The environment variable of setting ``name``."""
    return f"RADICAL_{name}"


def _read(variable: str, default: Any) -> Any:
    if isinstance(default, bool):
        return env_bool(variable, default)
    if isinstance(default, int):
        return env_int(variable, default)
    if isinstance(default, float):
        return env_float(variable, default)
    if isinstance(default, tuple):
        return tuple(env_list(variable)) if variable in os.environ else default
    return os.environ.get(variable, default)


def from_environment() -> dict[str, Any]:
    """Every setting an environment variable may set, typed, for ``RADICAL_EDGE`` in
    settings.py. Raises ImproperlyConfigured naming the variable of a bad value."""
    out = {}
    for name, default in DEFAULTS.items():
        if name in NOT_FROM_ENVIRONMENT:
            continue
        start = ENVIRONMENT_DEFAULTS[name]() if name in ENVIRONMENT_DEFAULTS else default
        out[name] = _read(env_name(name), start)
    return out


class EdgeSettings:
    """``edge_settings.NAME``: the site's ``RADICAL_EDGE[NAME]`` or its default. A value read
    once is kept as an attribute of this object, so that later reads (several per proxied
    call) are plain attribute reads; a change of ``settings.RADICAL_EDGE`` (tests'
    ``override_settings``) forgets them all."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown Radical Edge setting {name!r}")
        value = self.__dict__[name] = getattr(settings, "RADICAL_EDGE", {}).get(name, DEFAULTS[name])
        return value

    def reload(self) -> None:
        self.__dict__.clear()


edge_settings = EdgeSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "RADICAL_EDGE":
        edge_settings.reload()


setting_changed.connect(_reload)
