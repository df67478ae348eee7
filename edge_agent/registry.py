"""Plugin discovery: the built-in plugins plus the ``radical.edge.plugins`` entry points.

A third-party package adds a plugin by declaring, in its own pyproject.toml::

    [project.entry-points."radical.edge.plugins"]
    my_plugin = "my_package.plugin:MyPlugin"

Built-ins are listed here as well so that an agent run from a source checkout (without
being pip-installed) still finds them.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from .plugin import Plugin

log = logging.getLogger("edge_agent.registry")

ENTRY_POINT_GROUP = "radical.edge.plugins"

BUILTIN_PLUGINS = {
    "sysinfo": "edge_agent.plugins.sysinfo.plugin:SysInfoPlugin",
    "psij": "edge_agent.plugins.psij.plugin:PsijPlugin",
    "queue_info": "edge_agent.plugins.queue_info.plugin:QueueInfoPlugin",
    "rhapsody": "edge_agent.plugins.rhapsody.plugin:RhapsodyPlugin",
    "files": "edge_agent.plugins.files.plugin:FilesPlugin",
    "edges": "edge_agent.plugins.edges.plugin:EdgesPlugin",
}


def available_plugins() -> dict[str, str]:
    """Name -> "module:Class" for every plugin this agent can load."""
    found = dict(BUILTIN_PLUGINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_plugin(spec: str) -> type[Plugin]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"{spec} is not a Plugin subclass")
    return cls


def load_plugins(names: list[str] | None = None) -> list[type[Plugin]]:
    """Load the named plugins (default: all available). A name may also be a
    ``"package.module:Class"`` spec. Unknown names are an error; a plugin that fails to
    import is skipped with a warning only when it was not asked for by name."""
    available = available_plugins()
    wanted = names if names else list(available)
    # "package.module:Class" loads a plugin that is not installed as an entry point.
    for name in wanted:
        if ":" in name:
            available[name] = name
    unknown = [n for n in wanted if n not in available]
    if unknown:
        raise ValueError(f"unknown plugin(s): {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    classes: list[type[Plugin]] = []
    for name in wanted:
        try:
            cls = load_plugin(available[name])
        except Exception as exc:
            if names:
                raise RuntimeError(f"plugin {name!r} failed to load: {exc}") from exc
            log.warning("plugin %s not loaded: %s", name, exc)
            continue
        if not cls.name:
            raise RuntimeError(f"plugin class {available[name]} has no name")
        classes.append(cls)
    return classes
