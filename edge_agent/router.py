"""Route templates such as ``status/{sid}/{job_id}`` matched against request paths.

The agent dispatches every request through a :class:`Router`; the bridge builds the same
router from a plugin's published route list to learn whether a call is read-only before
forwarding it. Matching indexes routes by (segment count, first literal segment), so a
lookup touches only a handful of candidates no matter how many routes a plugin has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class RouteNotFound(LookupError):
    """No route template matches the path."""


class MethodNotAllowed(LookupError):
    """A template matches the path, but not for this method."""

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    target: Any = None
    readonly: bool = False
    # Parsed template: each segment is (is_param, name_or_literal); a trailing
    # "{name:path}" parameter swallows the rest of the path.
    segments: tuple[tuple[bool, str], ...] = field(default=(), compare=False)
    greedy: bool = field(default=False, compare=False)


def _parse(template: str) -> tuple[tuple[tuple[bool, str], ...], bool]:
    parts = [p for p in template.strip("/").split("/")] if template.strip("/") else []
    segs: list[tuple[bool, str]] = []
    greedy = False
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name.endswith(":path"):
                if i != len(parts) - 1:
                    raise ValueError(f"{{…:path}} must be the last segment in {template!r}")
                name, greedy = name[: -len(":path")], True
            if not name.isidentifier():
                raise ValueError(f"bad parameter name {name!r} in {template!r}")
            segs.append((True, name))
        else:
            if "{" in part or "}" in part:
                raise ValueError(f"bad segment {part!r} in {template!r}")
            segs.append((False, part))
    return tuple(segs), greedy


class Router:
    """Maps (method, path) to a target plus path parameters."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        # (segment count, first literal or None) -> routes; greedy routes live apart.
        self._index: dict[tuple[int, str | None], list[Route]] = {}
        self._greedy: list[Route] = []

    def add(self, method: str, template: str, target: Any = None, *, readonly: bool | None = None) -> Route:
        """Register a route. ``readonly`` defaults to True for GET/HEAD/OPTIONS."""
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method!r}")
        segs, greedy = _parse(template)
        if readonly is None:
            readonly = method in ("GET", "HEAD", "OPTIONS")
        route = Route(method, template.strip("/"), target, readonly, segs, greedy)
        self._routes.append(route)
        if greedy:
            self._greedy.append(route)
        else:
            first = segs[0][1] if segs and not segs[0][0] else None
            self._index.setdefault((len(segs), first), []).append(route)
        return route

    @property
    def routes(self) -> list[Route]:
        return list(self._routes)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """Return the route and its parameters, or raise RouteNotFound / MethodNotAllowed.

        Literal segments win over parameters: ``jobs/list`` matches a ``jobs/list`` route
        before a ``jobs/{id}`` one.
        """
        parts = path.strip("/").split("/") if path.strip("/") else []
        n = len(parts)
        candidates = self._index.get((n, parts[0] if parts else None), [])
        if parts:
            candidates = candidates + self._index.get((n, None), [])
        allowed: list[str] = []
        best: tuple[int, Route, dict[str, str]] | None = None
        for route in candidates:
            params = _match_segments(route.segments, parts)
            if params is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed.append(route.method)
                continue
            literals = sum(1 for is_param, _ in route.segments if not is_param)
            if best is None or literals > best[0]:
                best = (literals, route, params)
        if best is not None:
            return best[1], best[2]
        for route in self._greedy:
            fixed = route.segments[:-1]
            if n < len(fixed) + 1:
                continue
            params = _match_segments(fixed, parts[: len(fixed)])
            if params is None:
                continue
            if route.method != method and not (method == "HEAD" and route.method == "GET"):
                allowed.append(route.method)
                continue
            params[route.segments[-1][1]] = "/".join(parts[len(fixed) :])
            return route, params
        if allowed:
            raise MethodNotAllowed(sorted(set(allowed)))
        raise RouteNotFound(path)


def _match_segments(segments: tuple[tuple[bool, str], ...], parts: list[str]) -> dict[str, str] | None:
    if len(segments) != len(parts):
        return None
    params: dict[str, str] = {}
    for (is_param, name), part in zip(segments, parts):
        if is_param:
            if not part:
                return None
            params[name] = part
        elif name != part:
            return None
    return params


def router_from_manifest(routes: list[dict[str, Any]]) -> Router:
    """Build a target-less router from a plugin's published route list (bridge side).

    Malformed entries are skipped: a plugin's manifest is agent-supplied data.
    """
    router = Router()
    for entry in routes:
        if not isinstance(entry, dict):
            continue
        method, path = entry.get("method"), entry.get("path")
        if not isinstance(method, str) or not isinstance(path, str):
            continue
        try:
            router.add(method, path, readonly=bool(entry.get("readonly", False)))
        except ValueError:
            continue
    return router
