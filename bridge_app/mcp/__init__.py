"""The bridge's MCP server (docs/MCP.md): AI assistants as clients, under the same API
tokens, roles, rate limits and audit trail as the REST proxy.

* ``app``: the ASGI entry (``/mcp``, Streamable HTTP, stateless) and the protected-resource
  metadata; authentication with API tokens;
* ``server``: the tools, resources and prompts (the official SDK's ``MCPServer``);
* ``calls``: how a tool reaches a plugin: ``proxy.proxy_call`` with a ``CallInfo`` naming
  the MCP client and tool, and the call observers (audit, metrics).

The bridge needs the ``mcp`` SDK (requirements.txt); the agent and SDK package does not
(``edge_agent.mcp_shim`` imports it only when ``radical-edge mcp`` runs).
"""
