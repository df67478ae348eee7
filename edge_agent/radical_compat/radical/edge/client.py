"""``radical.edge.client``: where the original SDK's classes lived (see ``radical.edge``)."""

from edge_agent.client import BridgeClient, EdgeClient, PluginClient

__all__ = ["BridgeClient", "EdgeClient", "PluginClient"]
