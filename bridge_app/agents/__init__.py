"""Agents: the WebSocket consumer at ``/register`` and the hello it checks and registers."""
