"""Third-party plugins as MCP tools, from the routes their agents announce (no code in the
bridge per plugin).

Each route of a plugin that is not built in (sysinfo, psij, queue_info, rhapsody and files
have tools of their own) becomes a tool named ``ext.PLUGIN.METHOD.PATH`` (``ext.echo.get.whoami``,
``ext.echo.get.sleep.seconds`` for ``sleep/{seconds}``), listed for callers with a role on an edge
that has the plugin. Its arguments: ``edge``, one string per ``{placeholder}`` of the path
(``{sid}`` is the caller's session, filled in by the bridge), ``query`` and, except for GET,
a JSON ``body``. Its annotations come from the route's read-only flag. Calls go through
``calls.plugin_call`` like every other tool: the proxy decides, the audit records.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from channels.db import database_sync_to_async
from mcp_types import Tool, ToolAnnotations

from .calls import Caller, PluginError

PREFIX = "ext."
BUILTIN_PLUGINS = frozenset({"sysinfo", "psij", "queue_info", "rhapsody", "files"})
BUILTIN_ROUTES = frozenset({"register_session", "unregister_session/{sid}", "version", "list_sessions", "health",
                            "ui_config"})
# "{name}", or "{name:path}" for the rest of the path (slashes and all: the files plugin's paths).
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
_NAME_PART = re.compile(r"[^A-Za-z0-9_-]+")
# Tools listed at most, however many plugins and routes the caller's edges announce.
MAX_TOOLS = 200


def tool_name(plugin: str, method: str, path: str) -> str:
    slug = ".".join(p for p in (_NAME_PART.sub("_", part.strip("{}").split(":")[0]) for part in path.split("/")
                                if part and part != "{sid}") if p)
    return f"{PREFIX}{_NAME_PART.sub('_', plugin)}.{method.lower()}.{slug or 'root'}"[:128]


@database_sync_to_async
def _registrations(user_id: int, hidden: frozenset[str]) -> list[tuple[str, str, str, list[Any]]]:
    """(edge, plugin, description, routes) of the third-party plugins on the user's edges."""
    from django.contrib.auth import get_user_model

    from ..domain.selectors import edge_list_for_user
    from ..models import PluginRegistration

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return []
    edges = edge_list_for_user(user=user).values("pk")
    rows = (PluginRegistration.objects.filter(edge__in=edges).exclude(name__in=BUILTIN_PLUGINS)
            .select_related("edge").order_by("name", "edge__name"))
    return [(r.edge.name, r.name, r.description, r.routes or []) for r in rows if f"plugin:{r.name}" not in hidden]


async def plugin_tools(caller: Caller, hidden: frozenset[str]) -> dict[str, dict[str, Any]]:
    """The generated tools the caller may see: name → {tool, plugin, method, path}."""
    found: dict[str, dict[str, Any]] = {}
    for edge, plugin, description, routes in await _registrations(caller.principal.user_id, hidden):
        for route in routes:
            if not isinstance(route, dict):
                continue
            method, path, readonly = str(route.get("method", "GET")).upper(), str(route.get("path", "")), bool(
                route.get("readonly"))
            if not path or path in BUILTIN_ROUTES or (caller.principal.read_only and not readonly):
                continue
            name = tool_name(plugin, method, path)
            if name in hidden:
                continue
            entry = found.get(name)
            if entry is None:
                if len(found) >= MAX_TOOLS:
                    return found
                entry = found[name] = {"plugin": plugin, "method": method, "path": path, "readonly": readonly,
                                       "description": description, "edges": []}
            entry["edges"].append(edge)
    for name, entry in found.items():
        entry["tool"] = _tool(name, entry)
    return found


def _tool(name: str, entry: dict[str, Any]) -> Tool:
    params = [p for p, _ in _PLACEHOLDER.findall(entry["path"]) if p != "sid"]
    properties: dict[str, Any] = {
        "edge": {"type": "string", "enum": sorted(set(entry["edges"])), "description": "Edge to call it on"},
        **{p: {"type": "string", "description": f"The {{{p}}} of the route"} for p in params},
        "query": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Query parameters"},
    }
    if entry["method"] != "GET":
        properties["body"] = {"description": "JSON body"}
    readonly = entry["readonly"]
    about = (entry["description"] or "").strip()
    return Tool(
        name=name, title=f"{entry['plugin']}: {entry['method']} {entry['path']}",
        description=(f"{about}\n\n" if about else "") + (
            f"Calls {entry['method']} {entry['path']} of the plugin '{entry['plugin']}' on an edge and returns its "
            "JSON answer in \"answer\"." + ("" if readonly else " May change state on the edge.")),
        input_schema={"type": "object", "properties": properties, "required": ["edge", *params],
                      "additionalProperties": False},
        annotations=ToolAnnotations(read_only_hint=readonly, destructive_hint=not readonly,
                                    idempotent_hint=entry["method"] in ("GET", "PUT", "DELETE"), open_world_hint=True),
    )


async def call_plugin_tool(caller: Caller, entry: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Run a generated tool: the route with its placeholders filled, through the proxy.
    Raises :class:`~.calls.PluginError` (a tool error) for bad arguments and refusals."""
    import jsonschema

    from .calls import plugin_call

    try:  # the schema the tool was listed with, as the SDK checks its own tools' arguments
        jsonschema.validate(arguments, entry["tool"].input_schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "arguments"
        raise PluginError(400, "bad_argument", f"{where}: {exc.message}") from None

    def value(name: str, rest: bool) -> str:
        raw = arguments.get(name)
        if not isinstance(raw, (str, int, float)) or raw == "":
            raise PluginError(400, "bad_argument", f"'{name}' is required (a string)")
        return quote(str(raw), safe="/" if rest else "")

    edge = arguments.get("edge")
    if not isinstance(edge, str) or not edge:
        raise PluginError(400, "bad_argument", "'edge' is required")
    path = _PLACEHOLDER.sub(lambda m: "{sid}" if m[1] == "sid" else value(m[1], bool(m[2])), entry["path"])
    query = arguments.get("query") or {}
    if not isinstance(query, dict):
        raise PluginError(400, "bad_argument", "'query' is an object of strings")
    answer = await plugin_call(caller, edge, entry["plugin"], entry["method"], path,
                               query=urlencode({k: str(v) for k, v in query.items()}),
                               body=arguments.get("body") if entry["method"] != "GET" else None)
    return {"answer": answer}
