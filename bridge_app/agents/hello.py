"""What the bridge accepts from an agent's ``hello``, checked before any of it is stored or
shown: an agent may be rogue, and what it announces ends up in the database, in the
directory's route tables and in every portal page of its edge.

Two outcomes, chosen for what an operator needs:

* **The hello is refused** (``HelloRefused``: ``bye bad_hello``, close 4003, no retry) for
  what no honest agent sends and no page could show: text the database cannot store (NUL,
  lone surrogates), control characters in names, versions and route paths, route paths
  that are not plain relative paths, plugin names unusable in a URL, and anything over the
  size limits (``HELLO_MAX_*`` in ``conf``). The agent prints the reason and the operator
  fixes the agent.
* **A plugin's UI schema is refused** and replaced by ``{"refused": reason}`` when it is
  too large or names a URL that would leave the plugin (``..`` however encoded, absolute
  URLs, schemes, ``//``, backslashes, control characters): the portal says why instead
  of drawing the page, and the edge and the plugin's routes keep working. One plugin's
  broken page is not worth taking a whole HPC node off the bridge.

The portal applies the same rule again in the page (``pluginPath`` in
``static/portal/js/core.js``), after filling in values, so schemas stored before this check
existed or values that spell ``..`` cannot leave the plugin either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

# The rule for URLs in UI schemas is the agent's too (it checks its plugins' schemas at start).
from edge_agent.ui_schema import CONTROL as _CONTROL
from edge_agent.ui_schema import MAX_ROUTE_CHARS, route_problem, url_problems

from ..conf import edge_settings

# Control characters: none in names and paths (CONTROL); tab and line ends allowed in descriptions.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_DEPTH = 32


class HelloRefused(Exception):
    """The hello may not register; ``detail`` tells the agent's operator why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


class _Unfit(Exception):
    """A value that cannot be stored (the message says where), or is ``too_large``."""

    def __init__(self, detail: str = "", *, too_large: bool = False) -> None:
        super().__init__(detail)
        self.too_large = too_large


def _reason(exc: _Unfit, what: str, limit: int, setting: str) -> str:
    if exc.too_large:
        return f"{what} larger than {_kib(limit)} ({setting})"
    return str(exc)


@dataclass(frozen=True)
class HelloLimits:
    total_bytes: int
    facts_bytes: int
    plugins: int
    routes: int
    description_chars: int
    ui_schema_bytes: int

    @classmethod
    def from_settings(cls) -> HelloLimits:
        return cls(total_bytes=edge_settings.HELLO_MAX_BYTES, facts_bytes=edge_settings.HELLO_MAX_FACTS_BYTES,
                   plugins=edge_settings.HELLO_MAX_PLUGINS, routes=edge_settings.HELLO_MAX_ROUTES,
                   description_chars=edge_settings.HELLO_MAX_DESCRIPTION_CHARS,
                   ui_schema_bytes=edge_settings.HELLO_MAX_UI_SCHEMA_BYTES)


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid UTF-8 (lone surrogate)"
    return None


def _size(value: Any, budget: int, where: str, depth: int = 0) -> int:
    """The JSON size of ``value`` (escapes aside), checking on the way that every string
    is storable; raises _Unfit as soon as it exceeds ``budget`` or nests too deep."""
    if depth > MAX_DEPTH:
        raise _Unfit(f"{where} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        problem = _text_problem(value)
        if problem:
            raise _Unfit(f"{where}: a string {problem}")
        size = 2 + (len(value) if value.isascii() else len(value.encode("utf-8")))
    elif isinstance(value, dict):
        size = 2
        for key, item in value.items():
            size += _size(key, budget - size, where, depth + 1) + 2
            size += _size(item, budget - size, f"{where}.{str(key)[:40]}", depth + 1)
            if size > budget:
                break
    elif isinstance(value, list):
        size = 2
        for item in value:
            size += _size(item, budget - size, where, depth + 1) + 1
            if size > budget:
                break
    else:
        size = len(str(value))
    if size > budget:
        raise _Unfit(too_large=True)
    return size


def _name_problem(value: Any, what: str, *, url_part: bool = False) -> None:
    if not isinstance(value, str):
        return
    problem = _text_problem(value)
    if problem:
        raise HelloRefused(f"{what} {problem}")
    if _CONTROL.search(value):
        raise HelloRefused(f"{what} {value[:80]!r} contains control characters")
    if url_part and (value in (".", "..") or "/" in value or "\\" in value):
        raise HelloRefused(f"{what} {value[:80]!r} cannot be part of a URL")


def hello_validate(hello: dict[str, Any], *, limits: HelloLimits | None = None) -> list[str]:
    """Check a decoded ``hello`` frame (see the module docstring).

    Raises HelloRefused with a reason for the agent. Replaces, in ``hello``, the UI schema
    of each plugin whose schema is refused by ``{"refused": reason}`` and returns those
    reasons (one line per plugin), for the bridge's log and the agent's.
    """
    limits = limits or HelloLimits.from_settings()
    _name_problem(hello.get("name"), "edge name")
    _name_problem(hello.get("agent_version"), "agent_version")
    host = hello.get("host")
    if isinstance(host, dict):
        _name_problem(host.get("hostname"), "host.hostname")
        try:
            _size(host, limits.facts_bytes, "host")
        except _Unfit as exc:
            raise HelloRefused("host facts refused: " + _reason(
                exc, "host facts are", limits.facts_bytes, "RADICAL_HELLO_MAX_FACTS_BYTES")) from None
    plugins = cast("list[Any]", hello.get("plugins") if isinstance(hello.get("plugins"), list) else [])
    if len(plugins) > limits.plugins:
        raise HelloRefused(f"{len(plugins)} plugins announced; this bridge accepts at most {limits.plugins} "
                           "(RADICAL_HELLO_MAX_PLUGINS)")
    refused: list[str] = []
    for entry in plugins:
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        label = f"plugin {str(name)[:80]!r}"
        _name_problem(name, "plugin name", url_part=True)
        _name_problem(entry.get("version"), f"{label}: version")
        description = entry.get("description")
        if isinstance(description, str):
            if len(description) > limits.description_chars:
                raise HelloRefused(f"{label}: description has {len(description)} characters, more than "
                                   f"{limits.description_chars} (RADICAL_HELLO_MAX_DESCRIPTION_CHARS)")
            problem = _text_problem(description) or ("contains control characters"
                                                     if _CONTROL_IN_TEXT.search(description) else None)
            if problem:
                raise HelloRefused(f"{label}: description {problem}")
        routes = entry.get("routes")
        if isinstance(routes, list):
            if len(routes) > limits.routes:
                raise HelloRefused(f"{label}: {len(routes)} routes, more than {limits.routes} "
                                   "(RADICAL_HELLO_MAX_ROUTES)")
            for route in routes:
                if not isinstance(route, dict):
                    continue
                _name_problem(route.get("method"), f"{label}: route method")
                path = route.get("path")
                if isinstance(path, str):
                    _name_problem(path, f"{label}: route path")
                    problem = route_problem(path)
                    if problem:
                        raise HelloRefused(f"{label}: route path {path[:80]!r} {problem}")
                try:
                    _size(route, 4 * MAX_ROUTE_CHARS, f"{label}: route")
                except _Unfit as exc:
                    raise HelloRefused(_reason(exc, f"{label}: a route is", 4 * MAX_ROUTE_CHARS,
                                               "a fixed limit")) from None
        schema = entry.get("ui_schema")
        if schema is not None:
            reason = _schema_problem(schema, limits)
            if reason:
                entry["ui_schema"] = {"refused": reason}
                refused.append(f"{label}: UI schema refused: {reason}")
    try:
        # A UI schema sits three levels down (plugins, entry, ui_schema) and may nest as
        # deep as MAX_DEPTH below that.
        _size(hello, limits.total_bytes, "hello", depth=-3)
    except _Unfit as exc:
        raise HelloRefused(_reason(exc, "the hello is", limits.total_bytes, "RADICAL_HELLO_MAX_BYTES")) from None
    return refused


def _schema_problem(schema: Any, limits: HelloLimits) -> str | None:
    try:
        _size(schema, limits.ui_schema_bytes, "ui_schema")
    except _Unfit as exc:
        return _reason(exc, "it is", limits.ui_schema_bytes, "RADICAL_HELLO_MAX_UI_SCHEMA_BYTES")
    # The first URL in the schema that is not a plain plugin route, if any.
    return next((f"{path} {reason}" for path, reason in url_problems(schema, "ui_schema")), None)
