"""``radical.edge``: the original RADICAL Edge SDK's import path, served by this SDK.

    from radical.edge import BridgeClient          # as scripts for the original wrote it

Shipped in the ``radical-edge-agent`` distribution (``radical`` is a namespace package, so
other ``radical.*`` packages install beside it); uninstall the original ``radical.edge``
first, or the two fight over this name. What differs is in docs/MIGRATING.md.
"""

from edge_agent import __version__
from edge_agent.client import (
    BadRequest,
    BridgeClient,
    BridgeError,
    EdgeClient,
    NotFound,
    PluginClient,
    Unauthorized,
)

__all__ = ["BadRequest", "BridgeClient", "BridgeError", "EdgeClient", "NotFound", "PluginClient", "Unauthorized",
           "__version__"]
