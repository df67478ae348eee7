"""sysinfo: host metrics. ``plugin`` runs on the agent, ``client`` is the SDK side."""
