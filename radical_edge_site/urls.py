"""URL map of the bridge. Proxy calls with API tokens are answered before Django
(``bridge_app.calls.proxy.ProxyApp``); the proxy patterns here serve browser sessions."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView

from bridge_app.api.docs import docs_view
from bridge_app.api.proxy_views import proxy_view
from bridge_app.api.views import EdgeListView, EdgesView
from bridge_app.observability import health
from bridge_app.observability.metrics import metrics_view
from bridge_app.streams.sse import events_view

EDGE = r"(?P<edge>[a-z0-9][a-z0-9._-]{0,62})"
PLUGIN = r"(?P<plugin>[A-Za-z0-9._-]+)"
ROUTE = r"(?P<route>.+)"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("edge/list", EdgeListView.as_view(), name="edge-list"),
    path("edges", EdgesView.as_view(), name="edges"),
    path("events", events_view, name="events"),
    # Where the original RADICAL Edge (FastAPI) served its API description.
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-json"),
    path("docs", docs_view, name="api-docs"),
    path("redoc", docs_view, name="api-redoc"),
    re_path(rf"^api/v1/edges/{EDGE}/{PLUGIN}/{ROUTE}$", proxy_view, name="proxy-api"),
    path("api/v1/", include("bridge_app.api.urls")),
    path("", include("portal_app.urls")),
    re_path(rf"^{EDGE}/{PLUGIN}/{ROUTE}$", proxy_view, name="proxy"),
]

if settings.OIDC_ENABLED:
    # Before the proxy pattern, which would otherwise take /oidc/authenticate/….
    urlpatterns.insert(0, path("oidc/", include("mozilla_django_oidc.urls")))
