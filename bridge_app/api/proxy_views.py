"""The proxy for browser sessions (the portal), and the proxy routes in the OpenAPI schema.

Calls with an API token never get here: ``proxy.ProxyApp`` serves them before Django.
This view serves the same paths for callers authenticated by a session cookie, with
Django's CSRF protection on unsafe methods, through the same ``proxy_call``, and with the
same answers as token callers: the same body limit (413, not Django's 2.5 MB form limit),
bodies streamed to the edge rather than read whole, JSON errors (CSRF failures too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import MultiValueDict
from django.views.decorators.csrf import csrf_exempt

from edge_agent import protocol

from ..calls.proxy import (
    CallInfo,
    ProxyError,
    ProxyTarget,
    answer_gates,
    gate_answer,
    notify_observers,
    proxy_call,
    request_id_from,
)
from ..calls.responses import add_security_headers, django_error
from ..conf import edge_settings
from ..core.directory import Principal

PROXY_METHODS = ["get", "post", "put", "patch", "delete"]


def _error(exc: ProxyError, request_id: str) -> HttpResponse:
    return django_error(exc, request_id)


@sync_to_async
def _principal_for(user) -> Principal:
    return Principal(
        user_id=user.pk,
        username=user.get_username(),
        is_superuser=user.is_superuser,
        scope="full",
        group_ids=frozenset(user.groups.values_list("pk", flat=True)),
    )


_csrf = CsrfViewMiddleware(lambda request: None)


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check, with the token taken from the ``X-CSRFToken`` header only:
    the body is the plugin's, and parsing it as a form would read it whole (and, past
    DATA_UPLOAD_MAX_MEMORY_SIZE, refuse it). Returns the refusal, or None."""
    request._post, request._files = QueryDict(), MultiValueDict()  # what Django sets for non-form bodies
    return _csrf.process_view(request, None, (), {})


def _body(request: HttpRequest) -> tuple[bytes, AsyncIterator[bytes] | None, int | None]:
    """The body as ``proxy_call`` takes it: whole when small, else a stream of pieces read
    from what the ASGI handler spooled (proxy_call enforces MAX_BODY_BYTES on it)."""
    declared = request.META.get("CONTENT_LENGTH")
    length = int(declared) if declared and declared.isdigit() else None
    if length is not None and length <= protocol.INLINE_BODY_LIMIT:
        return request.read(), None, None

    async def pieces() -> AsyncIterator[bytes]:
        while piece := request.read(edge_settings.CHUNK_SIZE):
            yield piece

    return b"", pieces(), length


@csrf_exempt  # checked in the view, see _csrf_refusal
async def proxy_view(request: HttpRequest, edge: str, plugin: str, route: str) -> HttpResponse:
    headers = {k.lower(): v for k, v in request.headers.items()}
    target = ProxyTarget(edge, plugin, route)
    info = CallInfo(request_id_from(headers), None, target, request.method or "GET")
    user = await request.auser()
    if not user.is_authenticated:
        exc = ProxyError(401, "unauthorized", "log in, or send 'Authorization: Bearer <API token>'",
                         {"WWW-Authenticate": 'Bearer realm="radical-edge"'})
        return _error(exc, info.request_id)
    refusal = _csrf_refusal(request)
    if refusal is not None:
        return refusal
    principal = await _principal_for(user)
    info.principal = principal
    try:
        body, stream, length = _body(request)
        reply = await proxy_call(
            principal=principal, target=target, method=info.method,
            query=request.META.get("QUERY_STRING", ""), headers=headers,
            body=body, body_stream=stream, body_length=length, info=info,
        )
    except ProxyError as exc:
        info.status, info.error = exc.status, exc.error
        if answer_gates:
            exc = await gate_answer(info) or exc
        notify_observers(info)
        return _error(exc, info.request_id)
    info.status = reply.status
    refused = await gate_answer(info) if answer_gates else None
    if refused is not None:
        if reply.stream is not None:
            await reply.stream.aclose()
        notify_observers(info)
        return _error(refused, info.request_id)
    if reply.stream is not None:
        response: HttpResponse = StreamingHttpResponse(reply.stream, status=reply.status)
    else:
        response = HttpResponse(reply.body, status=reply.status)
    for key, value in reply.headers:
        response[key.decode("latin-1")] = value.decode("latin-1")
    add_security_headers(response)
    response["X-Request-ID"] = info.request_id
    notify_observers(info)
    return response


def openapi_add_proxy_paths(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: document the proxy routes, which are served
    outside DRF."""
    params = [
        {"name": "edge", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "plugin", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "route", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "plugin route, e.g. `metrics/{sid}`; may contain slashes"},
        {"name": "X-Request-Timeout", "in": "header", "required": False,
         "schema": {"type": "number"}, "description": "seconds to wait for the edge (default 60)"},
    ]
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    responses = {
        "200": {"description": "the plugin's answer, passed through byte for byte"},
        "401": {"description": "missing or invalid credentials", **error},
        "403": {"description": "the caller may not use this route (read-only role or token)", **error},
        "404": {"description": "unknown (or not visible) edge, plugin or route", **error},
        "413": {"description": "request body over the limit", **error},
        "429": {"description": "rate limit or the edge's in-flight limit reached", **error},
        "502": {"description": "the edge disconnected before answering", **error},
        "503": {"description": "the edge is offline or suspended", **error},
        "504": {"description": "the edge did not answer in time (the work is cancelled)", **error},
    }
    operation = {
        "tags": ["proxy"],
        "summary": "Call a plugin route on an edge",
        "description": "Carried over the edge's WebSocket to its agent; the answer is passed back unchanged.",
        "parameters": params,
        "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
        "responses": responses,
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    }
    for path in ("/{edge}/{plugin}/{route}", "/api/v1/edges/{edge}/{plugin}/{route}"):
        result.setdefault("paths", {})[path] = {
            m: {**operation, "operationId": f"proxy_{m}_{'api' if path.startswith('/api') else 'root'}"}
            for m in PROXY_METHODS
        }
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["error", "detail"],
    }
    components.setdefault("securitySchemes", {})["bearerAuth"] = {"type": "http", "scheme": "bearer"}
    from ..streams.sse import openapi_add_events_path  # GET /events is served outside DRF too

    return openapi_add_events_path(result)
