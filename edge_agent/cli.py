"""``radical-edge-service``: run an edge agent; ``radical-edge``: client-side commands
(``radical-edge mcp --url … --token-file …``, a stdio MCP server for assistants, see
``edge_agent/mcp_shim.py``).

    radical-edge-service --url https://bridge.example --token-file ~/.radical/edge.token

URL, name and token may also come from ``RADICAL_BRIDGE_URL``, ``RADICAL_EDGE_NAME`` and
``RADICAL_EDGE_TOKEN`` (or ``RADICAL_EDGE_TOKEN_FILE``).

Jobs and tasks run as the agent's account, so they can read whatever the agent can,
its token file included. The agent keeps the token from other accounts and out of the
jobs' way where it can: it refuses a token file its group or others may read, warns when
the file sits in its state directory (where jobs' working directories are), and takes
``RADICAL_EDGE_TOKEN`` out of the environment that jobs inherit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

from . import __version__, protocol
from .host import PluginHost, default_state_dir
from .logs import configure_logging
from .plugin import SESSION_OPTIONS, Plugin
from .registry import available_plugins, load_plugins
from .service import EdgeService

log = logging.getLogger("edge_agent")

DEFAULT_TOKEN_FILE = "~/.radical/edge.token"  # noqa: S105 - a path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="radical-edge-service",
        description="Connect this host to a Radical Edge bridge and serve plugins.",
    )
    p.add_argument("--url", default=os.environ.get("RADICAL_BRIDGE_URL"),
                   help="bridge URL, e.g. https://bridge.example (env RADICAL_BRIDGE_URL)")
    p.add_argument("--name", default=os.environ.get("RADICAL_EDGE_NAME"),
                   help="edge name; must match the token's edge (env RADICAL_EDGE_NAME)")
    p.add_argument("--token", default=None, help="edge token (env RADICAL_EDGE_TOKEN); prefer --token-file")
    p.add_argument("--token-file", default=os.environ.get("RADICAL_EDGE_TOKEN_FILE"),
                   help=f"file holding the edge token (default {DEFAULT_TOKEN_FILE} if it exists)")
    p.add_argument("--plugins", default=os.environ.get("RADICAL_EDGE_PLUGINS"),
                   help="comma-separated plugins to load (default: all installed)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                   help="plugin setting, e.g. psij.poll_interval=1 (repeatable; VALUE may be JSON); "
                        "every plugin takes max_sessions_per_user and max_sessions, and *.KEY sets them "
                        "for all plugins")
    p.add_argument("--state-dir", default=None,
                   help=f"where plugins keep their state (default {default_state_dir()})")
    p.add_argument("--ca-cert",
                   default=os.environ.get("RADICAL_BRIDGE_CA_CERT") or os.environ.get("RADICAL_BRIDGE_CERT"),
                   help="CA bundle to verify the bridge's certificate (site CAs; env RADICAL_BRIDGE_CA_CERT, "
                        "or RADICAL_BRIDGE_CERT as the original RADICAL Edge named it)")
    p.add_argument("--insecure", action="store_true",
                   help="do NOT verify the bridge's TLS certificate (testing only)")
    p.add_argument("--lifetime", type=float, default=_env_float("RADICAL_EDGE_LIFETIME"),
                   help="seconds this agent may run (a child edge: its job's walltime); it says bye "
                        "--bye-margin seconds before, and exits when the bridge revokes its token "
                        "(env RADICAL_EDGE_LIFETIME)")
    p.add_argument("--bye-margin", type=float, default=_env_float("RADICAL_EDGE_BYE_MARGIN") or 30.0,
                   help="with --lifetime: say bye this many seconds before the end (default 30)")
    p.add_argument("--connectivity", choices=["direct", "relay", "auto"],
                   default=os.environ.get("RADICAL_EDGE_CONNECTIVITY") or "direct",
                   help="reach the bridge directly, through a parent edge's relay, or auto: direct first, "
                        "then the relay (child edges; env RADICAL_EDGE_CONNECTIVITY)")
    p.add_argument("--relay-file", default=os.environ.get("RADICAL_EDGE_RELAY_FILE"),
                   help="file (mode 0600) naming the parent's relay, http://NAME:SECRET@HOST:PORT")
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024, help="largest request body accepted")
    p.add_argument("--list-plugins", action="store_true", help="list installed plugins and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--log-format", choices=["json", "text"], default=None,
                   help="log format (default json, or env RADICAL_LOG_FORMAT)")
    p.add_argument("--version", action="version", version=f"radical-edge-agent {__version__}")
    return p


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    try:
        return float(value) if value else None
    except ValueError:
        return None


class UnsafeTokenFile(Exception):
    """The token file may be read by other accounts: the agent refuses to use it."""


def read_token(args: argparse.Namespace, *, state_dir: Path | None = None) -> str | None:
    """The edge token from ``--token``, ``RADICAL_EDGE_TOKEN`` or the token file.

    Raises :class:`UnsafeTokenFile` for a token file its group or others may read, and
    OSError for one that cannot be read."""
    if args.token:
        log.warning("the edge token was given with --token: every account on this host can see it "
                    "(ps, /proc); use --token-file with a file of mode 0600")
        return args.token.strip()
    env = os.environ.get("RADICAL_EDGE_TOKEN")
    if env:
        return env.strip()
    path = args.token_file or (DEFAULT_TOKEN_FILE if Path(DEFAULT_TOKEN_FILE).expanduser().exists() else None)
    if not path:
        return None
    file = Path(path).expanduser()
    for warning in check_token_file(file, state_dir=state_dir or default_state_dir()):
        log.warning("%s", warning)
    return file.read_text().strip()


def check_token_file(path: Path, *, state_dir: Path) -> list[str]:
    """Check where the token file is and who may read it; returns warnings.

    A file its group or others may read or write is refused (:class:`UnsafeTokenFile`),
    as ssh refuses such a private key. Warned about: a file inside the agent's state
    directory, where jobs' default working directories are (jobs run as this account and
    could read it anywhere, but should not find it beside their output); a file another
    account owns, or in a directory others may write to (they could swap the token and
    make this agent serve their edge).
    """
    info = path.stat()  # follows a symlink: the file that is read
    warnings = []
    real, state = path.resolve(), state_dir.expanduser().resolve()
    if os.name == "posix":
        if info.st_mode & 0o077:
            raise UnsafeTokenFile(f"token file {path} may be read by other accounts (mode "
                                  f"{info.st_mode & 0o777:o}); run: chmod 600 {path}")
        if info.st_uid != os.getuid():
            warnings.append(f"token file {path} belongs to another account (uid {info.st_uid}), which may "
                            "replace it")
        parent = real.parent.stat().st_mode
        if parent & 0o022 and not parent & stat.S_ISVTX:
            warnings.append(f"token file {path} is in a directory other accounts may write to "
                            f"({real.parent}, mode {parent & 0o777:o}), so they may replace it: chmod go-w it")
    if real == state or state in real.parents:
        warnings.append(f"token file {path} is inside the agent's state directory {state_dir}, where jobs' "
                        "working directories are: move it out (e.g. to ~/.radical/edge.token, mode 0600)")
    return warnings


def parse_options(options: list[str]) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        plugin, dot, name = key.partition(".")
        if not sep or not dot or not plugin or not name:
            raise ValueError(f"--option needs PLUGIN.KEY=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        config.setdefault(plugin, {})[name] = value
    return config


def plugin_config(config: dict[str, dict[str, Any]], classes: list[type[Plugin]]) -> dict[str, dict[str, Any]]:
    """Spread ``*.KEY`` options (only the ones every plugin takes) over every plugin;
    a plugin's own ``PLUGIN.KEY`` wins."""
    shared = config.pop("*", {})
    unknown = sorted(set(shared) - set(SESSION_OPTIONS))
    if unknown:
        raise ValueError(f"--option *.{unknown[0]}: only {', '.join(SESSION_OPTIONS)} apply to every plugin")
    for cls in classes:
        config[cls.name] = {**shared, **config.get(cls.name, {})}
    return config


def state_dir_from(value: str | None) -> Path | None:
    """The ``--state-dir`` (or ``RADICAL_EDGE_STATE_DIR``) as an absolute path. A relative
    one is refused: jobs keep their paths across restarts, and an agent started from
    another directory would look for them somewhere else."""
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError(f"the state directory (--state-dir) must be an absolute path, not {value!r}; "
                         f"did you mean {Path.cwd() / path}?")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging("DEBUG" if args.verbose else "WARNING" if args.quiet else "INFO", args.log_format)
    if args.list_plugins:
        for name, spec in sorted(available_plugins().items()):
            print(f"{name:12s} {spec}")
        return 0
    if not args.url:
        print("error: no bridge URL (--url or RADICAL_BRIDGE_URL)", file=sys.stderr)
        return 2
    try:
        state_dir = state_dir_from(args.state_dir or os.environ.get("RADICAL_EDGE_STATE_DIR")) or default_state_dir()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        token = read_token(args, state_dir=state_dir)
    except UnsafeTokenFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read token file: {exc}", file=sys.stderr)
        return 2
    finally:
        # Jobs and tasks inherit the agent's environment: the token must not be in it.
        os.environ.pop("RADICAL_EDGE_TOKEN", None)
    if not token:
        print("error: no edge token (--token-file, --token or RADICAL_EDGE_TOKEN)", file=sys.stderr)
        return 2
    if args.relay_file:
        try:  # it holds the relay's secret: the same rules as the token file
            for warning in check_token_file(Path(args.relay_file).expanduser(), state_dir=state_dir):
                log.warning("%s", warning.replace("token file", "relay file"))
        except (UnsafeTokenFile, OSError) as exc:
            print(f"error: relay file: {exc}", file=sys.stderr)
            return 2
    try:
        names = [n.strip() for n in args.plugins.split(",") if n.strip()] if args.plugins else None
        classes = load_plugins(names)
        config = plugin_config(parse_options(args.option), classes)
        host = PluginHost(classes, state_dir=state_dir, config=config)
        # How this agent reaches its bridge: the edges plugin starts child agents the same way.
        host.bridge = {"url": args.url, "ca_cert": args.ca_cert, "insecure": args.insecure}
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # Edge names are lower-case; the original agent's were any string (docs/MIGRATING.md).
        name = args.name.lower() if args.name and args.name.isascii() else args.name
        service = EdgeService(url=args.url, token=token, host=host, name=name,
                              ca_cert=args.ca_cert, insecure=args.insecure, max_body=args.max_body,
                              exit_on_refusal=args.lifetime is not None, connectivity=args.connectivity,
                              relay_file=args.relay_file)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.lifetime is not None and args.lifetime <= 0:
        print("error: --lifetime must be a positive number of seconds", file=sys.stderr)
        return 2
    try:  # uvloop, where installed, roughly halves the agent's per-request overhead
        import uvloop
    except ImportError:
        return asyncio.run(_run(service, lifetime=args.lifetime, margin=args.bye_margin))
    return uvloop.run(_run(service, lifetime=args.lifetime, margin=args.bye_margin))


async def _run(service: EdgeService, *, lifetime: float | None = None, margin: float = 30.0) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    if lifetime is not None:
        # Say bye before the scheduler kills the job, so that callers get "ended with its
        # allocation" instead of a timeout; at least a second, whatever the margin.
        loop.call_later(max(1.0, lifetime - margin), service.stop, protocol.BYE_ALLOCATION_ENDED)
    log.info("radical-edge-agent %s starting; plugins: %s", __version__, ", ".join(service.host.plugins))
    await service.run()
    log.info("stopped")
    return 0


TOOL_USAGE = """usage: radical-edge COMMAND [options]

commands:
  files  browse, upload and download files on an edge, scp-style, resumable, with progress bars
         (radical-edge files put results.h5 polaris:~/data/; radical-edge files --help)
  mcp    serve the bridge's MCP tools on stdin/stdout, for MCP clients that launch local
         servers (radical-edge mcp --url https://bridge.example --token-file ~/.radical/api.token)

'radical-edge COMMAND --help' tells more. The agent itself is radical-edge-service."""


def tool_main(argv: list[str] | None = None) -> int:
    """``radical-edge``: client-side commands. Each imports what it needs when it runs, so
    the agent never needs their dependencies (the mcp SDK for ``mcp``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(TOOL_USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "files":
        from .plugins.files.cli import main as files_main

        return files_main(args)
    if args[0] == "mcp":
        from .mcp_shim import main as mcp_main

        return mcp_main(args[1:])
    print(f"radical-edge: unknown command {args[0]!r}\n\n{TOOL_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
