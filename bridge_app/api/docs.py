"""``/docs``, ``/redoc`` and ``/openapi.json``: where the original RADICAL Edge (FastAPI)
served its API description; here the drf-spectacular schema of ``/api/v1/schema/``.

``/docs`` and ``/redoc`` are one server-rendered page (the portal's CSP allows no inline
scripts and we serve no CDN assets, so no Swagger UI): every operation with its summary,
and a link to the JSON. Like the schema, they need a login or an API token.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from drf_spectacular.generators import SchemaGenerator
from rest_framework import exceptions

from .authentication import ApiTokenAuthentication

METHODS = ("get", "post", "put", "patch", "delete")


@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def docs_view(request: HttpRequest) -> HttpResponse:
    """The API's operations as a page (see the module docstring)."""
    user = request.user
    if not user.is_authenticated:
        try:
            found = ApiTokenAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed:
            found = None
        if found is None:
            return redirect(f"{settings.LOGIN_URL}?next={request.path}")
        user = found[0]
    schema = _schema()
    operations = [
        {"method": method.upper(), "path": path, "summary": op.get("summary", ""),
         "description": (op.get("description") or "")[:400]}
        for path, item in sorted(schema.get("paths", {}).items())
        for method, op in item.items() if method in METHODS
    ]
    return render(request, "api/docs.html", {"schema": schema, "operations": operations})
