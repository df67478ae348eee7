"""Radical Edge agent: dials out to a bridge and serves plugins over one WebSocket.

This package is what gets installed on HPC nodes. It must import without Django and
keeps its mandatory dependencies to ``websockets``, ``psutil`` and ``httpx`` (the SDK).
Heavy backends (psij-python, rhapsody-py) are imported lazily by their plugins.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
