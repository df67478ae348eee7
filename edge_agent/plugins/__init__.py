"""Built-in plugins. Each is imported only when the agent loads it."""
