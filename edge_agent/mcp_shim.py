"""``radical-edge mcp``: a stdio MCP server that forwards everything to a bridge's ``/mcp``.

For MCP clients that only launch local stdio servers (desktop assistants, IDEs):

    radical-edge mcp --url https://bridge.example --token-file ~/.radical/api.token

It lists and calls the bridge's tools, resources and prompts with the official ``mcp`` SDK
(``pip install "radical-edge-agent[mcp]"``), as the token's user; the bridge decides what
that user may do and records every call, naming the client that launched the shim.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_TOKEN_FILE = "~/.radical/api.token"  # noqa: S105 - a path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radical-edge mcp", description=__doc__.split("\n\n")[1])
    parser.add_argument("--url", default=os.environ.get("RADICAL_BRIDGE_URL"),
                        help="the bridge's URL (or RADICAL_BRIDGE_URL); /mcp is added")
    parser.add_argument("--token-file", default=os.environ.get("RADICAL_API_TOKEN_FILE"),
                        help=f"file holding an API token (default: RADICAL_API_TOKEN, else {DEFAULT_TOKEN_FILE})")
    parser.add_argument("--ca-cert", help="CA bundle to verify the bridge's TLS certificate")
    parser.add_argument("--timeout", type=float, default=330.0, help="seconds to wait for one answer")
    return parser


def read_token(path: str | None) -> str | None:
    """The token from ``path``, else RADICAL_API_TOKEN, else the default file if present.
    A token file others may read is refused, as the agent refuses its edge token."""
    if path is None and os.environ.get("RADICAL_API_TOKEN"):
        return os.environ["RADICAL_API_TOKEN"].strip()
    file = Path(path or DEFAULT_TOKEN_FILE).expanduser()
    if path is None and not file.exists():
        return None
    if os.name == "posix" and file.stat().st_mode & 0o077:
        raise PermissionError(f"{file} may be read by other accounts: chmod 600 it")
    return file.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url:
        print("error: no bridge URL (--url or RADICAL_BRIDGE_URL)", file=sys.stderr)
        return 2
    try:
        token = read_token(args.token_file)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not token:
        print("error: no API token (--token-file or RADICAL_API_TOKEN)", file=sys.stderr)
        return 2
    try:
        import anyio
        import mcp  # noqa: F401
    except ImportError:
        print('error: the MCP shim needs the mcp SDK: pip install "radical-edge-agent[mcp]"', file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    if not url.endswith("/mcp"):
        url += "/mcp"
    anyio.run(serve, url, token, args.ca_cert, args.timeout)
    return 0


async def serve(url: str, token: str, ca_cert: str | None, timeout: float) -> None:
    """Serve MCP on stdin/stdout, forwarding each request to the bridge as it comes."""
    import httpx2
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    from . import __version__

    verify: Any = ca_cert if ca_cert else True
    headers = {"Authorization": f"Bearer {token}", "User-Agent": f"radical-edge-mcp-shim/{__version__}"}

    async def remote(ctx: Any, method: str, params: Any) -> Any:
        """One request to the bridge, stateless, in the name of the client that launched us."""
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        client_params = getattr(ctx.session, "client_params", None)
        info = getattr(client_params, "client_info", None) or types.Implementation(name="stdio", version="")
        shim_info = types.Implementation(name=f"{info.name} (via radical-edge mcp)", version=info.version)
        async with (
            httpx2.AsyncClient(headers=headers, verify=verify, timeout=httpx2.Timeout(30, read=timeout)) as http,
            Client(streamable_http_client(url, http_client=http), client_info=shim_info) as client,
        ):
            session = client.session
            if method == "tools/list":
                return await session.list_tools()
            if method == "tools/call":
                return await session.call_tool(params.name, params.arguments or {})
            if method == "resources/list":
                return await session.list_resources()
            if method == "resources/templates/list":
                return await session.list_resource_templates()
            if method == "resources/read":
                return await session.read_resource(params.uri)
            if method == "prompts/list":
                return await session.list_prompts()
            if method == "prompts/get":
                return await session.get_prompt(params.name, params.arguments)
        raise AssertionError(method)

    def forward(method: str):
        async def handler(ctx: Any, params: Any) -> Any:
            return await remote(ctx, method, params)
        return handler

    server: Server = Server(
        "radical-edge", version=__version__,
        instructions="Radical Edge: HPC edges, batch jobs and tasks through a bridge (proxied over stdio).",
        on_list_tools=forward("tools/list"), on_call_tool=forward("tools/call"),
        on_list_resources=forward("resources/list"), on_list_resource_templates=forward("resources/templates/list"),
        on_read_resource=forward("resources/read"), on_list_prompts=forward("prompts/list"),
        on_get_prompt=forward("prompts/get"),
    )
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    raise SystemExit(main())
