"""The Radical Edge Python SDK: ``BridgeClient`` -> ``EdgeClient`` -> plugin clients.

Needs only ``httpx``; plugin clients never import their plugins' heavy backends.
"""

from .bridge import BridgeClient, ChildEdge, EdgeClient
from .errors import (
    BadRequest,
    BridgeError,
    BridgeUnavailable,
    Conflict,
    ConnectionFailed,
    EdgeDisconnected,
    EdgeOffline,
    EdgeTimeout,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SessionExpired,
    Unauthorized,
)
from .notifications import verify_signature
from .plugin import PluginClient

__all__ = [
    "BadRequest",
    "BridgeClient",
    "BridgeError",
    "BridgeUnavailable",
    "ChildEdge",
    "Conflict",
    "ConnectionFailed",
    "EdgeClient",
    "EdgeDisconnected",
    "EdgeOffline",
    "EdgeTimeout",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "PluginClient",
    "RateLimited",
    "SessionExpired",
    "Unauthorized",
    "verify_signature",
]
