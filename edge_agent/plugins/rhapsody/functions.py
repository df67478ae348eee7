"""Python functions that rhapsody tasks may call by name.

Callers never send code: a function task names a function that the agent's administrator
registered (plugin option ``functions``), or one of the few harmless built-ins below, and
passes JSON arguments. Registering a function is how an admin offers it::

    radical-edge-service ... --option 'rhapsody.functions=["mypkg.analysis:score"]'
    radical-edge-service ... --option 'rhapsody.functions={"score": "mypkg.analysis:score"}'

A list registers each function under its ``module:function`` spec; a dict under its key.
Functions run in the agent's worker threads (``async def`` functions in an event loop of
their own), as the agent's user.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import socket
import time
from typing import Any, Callable

log = logging.getLogger("edge_agent.plugins.rhapsody")

MAX_SLEEP = 3600.0


def noop(*args: Any, **kwargs: Any) -> None:
    """Do nothing and return null (for measuring overhead)."""
    return None


def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Return the arguments it was called with: ``{"args": [...], "kwargs": {...}}``."""
    return {"args": list(args), "kwargs": kwargs}


def add(*numbers: float) -> float:
    """Return the sum of the numbers."""
    return sum(numbers)


def sleep(seconds: float = 1.0) -> float:
    """Sleep (at most an hour) and return the seconds slept."""
    seconds = min(max(float(seconds), 0.0), MAX_SLEEP)
    time.sleep(seconds)
    return seconds


def fail(message: str = "failed on purpose") -> None:
    """Raise RuntimeError(message) (for testing failure handling)."""
    raise RuntimeError(message)


def hostname() -> str:
    """Return the name of the host the agent runs on."""
    return socket.gethostname()


BUILTIN_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "noop": noop,
    "echo": echo,
    "add": add,
    "sleep": sleep,
    "fail": fail,
    "hostname": hostname,
}


def import_function(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (dots after the colon reach attributes)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"function spec must look like 'package.module:function', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


class FunctionRegistry:
    """The functions callable by name on this agent.

    ``entries`` is the plugin option ``functions``: a list of ``"module:function"`` specs
    or a dict ``{name: "module:function"}``. Entries that fail to import are skipped and
    reported in :attr:`errors` (and the log), so one bad entry does not disable the plugin.
    """

    def __init__(self, entries: Any = None, *, builtins: bool = True) -> None:
        self.functions: dict[str, Callable[..., Any]] = dict(BUILTIN_FUNCTIONS) if builtins else {}
        self.builtin_names = set(self.functions)
        self.errors: dict[str, str] = {}
        for name, spec in _entries(entries):
            try:
                self.functions[name] = import_function(spec)
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.error("rhapsody: function %s (%s) not registered: %s", name, spec, self.errors[name])
            else:
                self.builtin_names.discard(name)

    def get(self, name: str) -> Callable[..., Any] | None:
        return self.functions.get(name)

    def names(self) -> list[str]:
        return sorted(self.functions)

    def describe(self) -> list[dict[str, Any]]:
        """Name, first docstring line and signature of each function (for callers and the UI)."""
        out = []
        for name in self.names():
            fn = self.functions[name]
            doc = (inspect.getdoc(fn) or "").strip().splitlines()
            try:
                signature = str(inspect.signature(fn))
            except (TypeError, ValueError):
                signature = "(...)"
            out.append({"name": name, "doc": doc[0] if doc else "", "signature": signature,
                        "builtin": name in self.builtin_names, "is_async": inspect.iscoroutinefunction(fn)})
        return out


def _entries(entries: Any) -> list[tuple[str, str]]:
    if entries in (None, "", [], {}):
        return []
    if isinstance(entries, str):
        entries = [e.strip() for e in entries.split(",") if e.strip()]
    if isinstance(entries, dict):
        pairs = list(entries.items())
    elif isinstance(entries, list):
        pairs = [(e, e) for e in entries]
    else:
        raise ValueError("option 'functions' must be a list of 'module:function' specs or a dict name -> spec")
    for name, spec in pairs:
        if not isinstance(name, str) or not isinstance(spec, str) or not name:
            raise ValueError(f"bad 'functions' entry {name!r}: {spec!r}")
    return pairs
