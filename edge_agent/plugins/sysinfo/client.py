"""SDK client of the sysinfo plugin."""

from __future__ import annotations

from typing import Any

from ...client.plugin import PluginClient


class SysInfoClient(PluginClient):
    def get_metrics(self) -> dict[str, Any]:
        """Live metrics: ``system``, ``cpu``, ``memory``, ``disks``, ``network``, ``gpus``."""
        return self.call("GET", "metrics/{sid}")
