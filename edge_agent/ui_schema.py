"""The UI schema a plugin announces, as a typed structure checked when the agent starts.

The portal draws a page from a plugin's ``ui_schema`` (docs/WRITING-A-PLUGIN.md, "A UI
without portal code"): a title, forms of fields that call the plugin's routes, monitors
that show what a route answers, and the event topics that update them. :func:`ui_schema_parse`
turns the plain dict a plugin sets into :class:`UISchema` or raises :class:`UISchemaError`
listing every mistake with where it is (``forms[0].fields[2].type: 'date' is not one of
...``), as the original's pydantic model did. Keys the portal does not read are allowed
(and kept in what the agent announces), so a schema may carry hints for newer portals.

Every URL in a schema (``endpoint``, ``auto_load``, ``*_endpoint``, ``*_url``, ...) must be a
plain route of the plugin: :func:`route_problem` is the rule, shared with the bridge, which
applies it again to what any agent announces (``bridge_app/agents/hello.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

FIELD_TYPES = ("text", "select", "number", "textarea", "checkbox", "hidden")
LAYOUTS = ("single", "grid2", "grid3")
MONITOR_TYPES = ("task_list", "metrics", "table", "raw")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Keys of a UI schema whose string values the portal calls as plugin routes.
URL_KEY = re.compile(r"^(endpoint|auto_load|url|href)$|_endpoint$|^endpoint_|_url$")
# Control characters: none in routes (browsers drop tabs and line ends, so ".\t." is "..").
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_ROUTE_CHARS = 1000
# Percent-decoding rounds before a string counts as hostile (a%25252e... hides '.' thrice).
_DECODE_ROUNDS = 4


def _decodings(text: str) -> list[str] | None:
    """``text`` and what percent-decoding makes of it, round after round; None if it still
    changes after ``_DECODE_ROUNDS`` rounds."""
    forms = [text]
    for _ in range(_DECODE_ROUNDS):
        decoded = unquote(forms[-1]) if "%" in forms[-1] else forms[-1]
        if decoded == forms[-1]:
            return forms
        forms.append(decoded)
    return None


def route_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative route of a plugin, or None if it is.

    Refused: a scheme (``https:``, ``javascript:``), ``//`` (which leaves the host),
    backslashes (browsers read them as ``/``), ``#``, control characters (browsers drop tabs
    and line ends, so ``.\\t.`` becomes ``..``), and ``.`` or ``..`` segments, after
    percent-decoding as often as it changes anything (``%2e%2e``, ``%252e%252e``). One
    leading ``/`` is allowed: plugin routes and the portal both read it as relative.
    """
    if len(path) > MAX_ROUTE_CHARS:
        return f"is longer than {MAX_ROUTE_CHARS} characters"
    if "#" in path:
        return "contains '#'"
    forms = _decodings(path)
    if forms is None:
        return "is percent-encoded more often than any route needs"
    for form in forms:
        if CONTROL.search(form):
            return "contains control characters"
        if "\\" in form:
            return "contains a backslash"
    for form in _decodings(path.split("?", 1)[0]) or forms:
        if _SCHEME.match(form.lstrip("/")):
            return "is an absolute URL (has a scheme)"
        if "//" in form:
            return "contains '//'"
        if any(segment in (".", "..") for segment in form.split("/")):
            return "has a '.' or '..' segment (it would leave the plugin)"
    return None


def url_problems(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """``(path, reason)`` for every URL-like key anywhere in ``value`` (a UI schema or a
    part of it) whose value is not a plain route of the plugin (:func:`route_problem`)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str) and URL_KEY.search(str(key)):
                problem = route_problem(item)
                if problem:
                    yield _join(path, str(key)), f"{item[:80]!r} {problem}"
            elif isinstance(item, (dict, list)):
                yield from url_problems(item, _join(path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from url_problems(item, f"{path}[{i}]")


class UISchemaError(ValueError):
    """A UI schema that the portal cannot draw. ``errors`` lists ``(path, message)`` pairs,
    paths written as in Python (``forms[0].fields[1].type``)."""

    def __init__(self, errors: list[tuple[str, str]], *, plugin: str = "") -> None:
        self.errors = errors
        self.plugin = plugin
        where = f"plugin {plugin!r}: " if plugin else ""
        super().__init__(f"{where}invalid UI schema: " + "; ".join(f"{p}: {m}" for p, m in errors))


@dataclass(frozen=True)
class Option:
    value: str
    label: str


@dataclass(frozen=True)
class Field:
    name: str
    type: str = "text"
    label: str = ""
    default: Any = None
    placeholder: str = ""
    required: bool = False
    options: tuple[Option, ...] = ()
    options_endpoint: str | None = None


@dataclass(frozen=True)
class Submit:
    endpoint: str
    label: str = "Submit"
    method: str = "POST"


@dataclass(frozen=True)
class Form:
    id: str
    title: str = ""
    layout: str = "single"
    fields: tuple[Field, ...] = ()
    submit: Submit | None = None


@dataclass(frozen=True)
class Column:
    key: str
    label: str = ""


@dataclass(frozen=True)
class Monitor:
    id: str
    title: str = ""
    type: str = "raw"
    #: The route the monitor shows: ``endpoint``, else ``auto_load`` when it is a route.
    endpoint: str | None = None
    #: Load when the page opens: True (the ``endpoint``) or a route of its own.
    auto_load: bool | str = False
    columns: tuple[Column, ...] = ()


@dataclass(frozen=True)
class Notification:
    topic: str
    id_field: str | None = None
    state_field: str | None = None


@dataclass(frozen=True)
class UISchema:
    title: str = ""
    icon: str = ""
    description: str = ""
    forms: tuple[Form, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    notifications: tuple[Notification, ...] = field(default=())


class _Reader:
    """Reads typed values out of plain JSON, noting each mistake with where it is."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def obj(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.fail(path, f"must be an object, not {_kind(value)}")
        return None

    def items(self, data: dict[str, Any], key: str, path: str) -> list[tuple[str, Any]]:
        value = data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(_join(path, key), f"must be a list, not {_kind(value)}")
            return []
        return [(f"{_join(path, key)}[{i}]", item) for i, item in enumerate(value)]

    def text(self, data: dict[str, Any], key: str, path: str, *, required: bool = False,
             default: str = "", choices: tuple[str, ...] = ()) -> str:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(_join(path, key), "is required")
            return default
        if not isinstance(value, str):
            self.fail(_join(path, key), f"must be a string, not {_kind(value)}")
            return default
        if required and not value.strip():
            self.fail(_join(path, key), "must not be empty")
        if choices and value not in choices:
            self.fail(_join(path, key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def flag(self, data: dict[str, Any], key: str, path: str) -> bool:
        value = data.get(key, False)
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, not {_kind(value)}")
            return False
        return value

    def unique(self, values: list[tuple[str, str]], what: str) -> None:
        seen: set[str] = set()
        for path, value in values:
            if value and value in seen:
                self.fail(path, f"{what} {value!r} is used twice")
            seen.add(value)



def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _option(r: _Reader, value: Any, path: str) -> Option | None:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return Option(str(value), str(value))
    data = r.obj(value, path)
    if data is None:
        return None
    raw = next((data[k] for k in ("value", "name", "id") if data.get(k) is not None), None)
    if raw is None or isinstance(raw, (dict, list)):
        r.fail(path, "an option needs a 'value' (or 'name' or 'id') that is a string or number")
        return None
    label = data.get("label", raw)
    return Option(str(raw), str(label))


def _field(r: _Reader, value: Any, path: str) -> Field | None:
    data = r.obj(value, path)
    if data is None:
        return None
    ftype = r.text(data, "type", path, default="text", choices=FIELD_TYPES)
    options = tuple(o for p, item in r.items(data, "options", path) if (o := _option(r, item, p)) is not None)
    options_endpoint = r.text(data, "options_endpoint", path) or None
    return Field(name=r.text(data, "name", path, required=True), type=ftype, label=r.text(data, "label", path),
                 default=data.get("default"), placeholder=r.text(data, "placeholder", path),
                 required=r.flag(data, "required", path), options=options, options_endpoint=options_endpoint)


def _form(r: _Reader, value: Any, path: str) -> Form | None:
    data = r.obj(value, path)
    if data is None:
        return None
    fields = [(p, f) for p, item in r.items(data, "fields", path) if (f := _field(r, item, p)) is not None]
    r.unique([(f"{p}.name", f.name) for p, f in fields], "field name")
    submit = None
    if data.get("submit") is not None:
        sub = r.obj(data["submit"], _join(path, "submit"))
        if sub is not None:
            spath = _join(path, "submit")
            method = r.text(sub, "method", spath, default="POST")
            if method.upper() not in METHODS:
                r.fail(_join(spath, "method"), f"{method!r} is not one of {', '.join(METHODS)}")
            submit = Submit(endpoint=r.text(sub, "endpoint", spath, required=True),
                            label=r.text(sub, "label", spath, default="Submit"), method=method.upper())
    return Form(id=r.text(data, "id", path, required=True), title=r.text(data, "title", path),
                layout=r.text(data, "layout", path, default="single", choices=LAYOUTS),
                fields=tuple(f for _, f in fields), submit=submit)


def _monitor(r: _Reader, value: Any, path: str) -> Monitor | None:
    data = r.obj(value, path)
    if data is None:
        return None
    columns = []
    for cpath, item in r.items(data, "columns", path):
        if isinstance(item, str):  # a key, labelled after it
            columns.append(Column(key=item, label=item.replace("_", " ")))
            continue
        col = r.obj(item, cpath)
        if col is not None:
            columns.append(Column(key=r.text(col, "key", cpath, required=True), label=r.text(col, "label", cpath)))
    auto_load = data.get("auto_load", False)
    if not isinstance(auto_load, (bool, str)):
        r.fail(_join(path, "auto_load"), f"must be true, false or a route, not {_kind(auto_load)}")
        auto_load = False
    endpoint = r.text(data, "endpoint", path) or (auto_load if isinstance(auto_load, str) else "") or None
    if endpoint is None and auto_load is True:
        r.fail(_join(path, "endpoint"), "is required to load the monitor automatically")
    return Monitor(id=r.text(data, "id", path, required=True), title=r.text(data, "title", path),
                   type=r.text(data, "type", path, default="raw", choices=MONITOR_TYPES),
                   endpoint=endpoint, auto_load=auto_load, columns=tuple(columns))


def _notification(r: _Reader, value: Any, path: str) -> Notification | None:
    data = r.obj(value, path)
    if data is None:
        return None
    return Notification(topic=r.text(data, "topic", path, required=True),
                        id_field=r.text(data, "id_field", path) or None,
                        state_field=r.text(data, "state_field", path) or None)


def ui_schema_parse(schema: Any, *, plugin: str = "") -> UISchema:
    """``schema`` (a plugin's ``ui_schema`` dict) as a :class:`UISchema`; raises
    :class:`UISchemaError` with every mistake found, each with its path."""
    r = _Reader()
    data = r.obj(schema, "ui_schema")
    if data is None:
        raise UISchemaError(r.errors, plugin=plugin)
    forms = [(p, f) for p, item in r.items(data, "forms", "") if (f := _form(r, item, p)) is not None]
    monitors = [(p, m) for p, item in r.items(data, "monitors", "") if (m := _monitor(r, item, p)) is not None]
    notes = tuple(n for p, item in r.items(data, "notifications", "") if (n := _notification(r, item, p)) is not None)
    r.unique([(f"{p}.id", f.id) for p, f in forms], "form id")
    r.unique([(f"{p}.id", m.id) for p, m in monitors], "monitor id")
    r.errors.extend(url_problems(data))
    parsed = UISchema(title=r.text(data, "title", ""), icon=r.text(data, "icon", ""),
                      description=r.text(data, "description", ""), forms=tuple(f for _, f in forms),
                      monitors=tuple(m for _, m in monitors), notifications=notes)
    if r.errors:
        raise UISchemaError(r.errors, plugin=plugin)
    return parsed
