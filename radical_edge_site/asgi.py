"""ASGI entry point: ``radical_edge_site.asgi:application`` (daphne, uvicorn, …).

* HTTP: ``/mcp`` (the MCP server, ``bridge_app.mcp``), then the original RADICAL Edge SDK's
  credentials made ours (``bridge_app.calls.compat``), then ``GET /events`` (Server-Sent Events,
  ``bridge_app.streams.sse``), then the lean proxy handler
  (token-authenticated proxy calls), Django for the rest; while the process shuts down,
  answers say ``Connection: close`` (``bridge_app.core.shutdown``); proxied calls with an API
  token, which none of the layers before the proxy changes, skip them
  (``bridge_app.calls.fastpath``);
* WebSocket ``/register``: agents (``EdgeConsumer``);
* lifespan: the per-process runtime's start and graceful stop (``bridge_app.core.runtime``,
  which also starts on first use and hooks daphne, which has no lifespan).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radical_edge_site.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bridge_app.agents.consumers import EdgeConsumer  # noqa: E402
from bridge_app.calls.compat import CompatApp  # noqa: E402
from bridge_app.calls.fastpath import FastPath  # noqa: E402
from bridge_app.calls.proxy import ProxyApp  # noqa: E402
from bridge_app.core.lifespan import Lifespan  # noqa: E402
from bridge_app.core.runtime import RuntimeApp, install_for_daphne  # noqa: E402
from bridge_app.core.shutdown import CloseConnections  # noqa: E402
from bridge_app.mcp.app import McpApp  # noqa: E402
from bridge_app.streams.sse import EventsApp  # noqa: E402
from portal_app.routing import websocket_urlpatterns as portal_websockets  # noqa: E402

proxy_application = ProxyApp(django_application)
application = FastPath(RuntimeApp(ProtocolTypeRouter({
    "http": CloseConnections(McpApp(CompatApp(EventsApp(proxy_application)))),
    "websocket": URLRouter([path("register", EdgeConsumer.as_asgi()), *portal_websockets]),
    "lifespan": Lifespan(),
})), proxy_application)
install_for_daphne()

# Everything loaded so far (Django, the apps, URL patterns, templates) lives as long as the
# process. Moving it out of the cyclic collector's generations (gc.freeze) keeps every full
# collection from walking these (about 120,000) objects again; bridge_app.core.collector decides
# when full collections run.
import gc  # noqa: E402

from bridge_app.core import collector  # noqa: E402

gc.collect()
gc.freeze()
collector.install()
