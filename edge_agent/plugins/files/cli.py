"""``radical-edge files``: the files plugin from a shell, scp-style.

    export RADICAL_BRIDGE_URL=https://bridge.example RADICAL_API_TOKEN=rda_…
    radical-edge files ls polaris:~/data
    radical-edge files put results.h5 polaris:~/data/         # resumable, with a progress bar
    radical-edge files get polaris:~/data/out.nc .             # resumable (Range)
    radical-edge files get -r polaris:~/data/run42 ./run42     # a directory, as a tar stream
    radical-edge files rm -r polaris:~/data/old

Remote paths are ``EDGE:PATH`` (or plain paths with ``--edge``/``RADICAL_EDGE``). Run a
command again after an interruption and it continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, cast

from ...client import BridgeClient
from ...client.errors import BridgeError
from .client import FilesClient


def _split(spec: str, default_edge: str | None) -> tuple[str, str]:
    edge, sep, path = spec.partition(":")
    if sep and edge and "/" not in edge:
        return edge, path or "~"
    if not default_edge:
        raise SystemExit(f"radical-edge: '{spec}' names no edge: write EDGE:PATH or pass --edge")
    return default_edge, spec


def _is_remote(spec: str) -> bool:
    edge, sep, _ = spec.partition(":")
    return bool(sep and edge and "/" not in edge)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radical-edge", description="Radical Edge from a shell.")
    p.add_argument("--url", default=os.environ.get("RADICAL_BRIDGE_URL"), help="bridge URL (RADICAL_BRIDGE_URL)")
    p.add_argument("--token", default=os.environ.get("RADICAL_API_TOKEN"), help="API token (RADICAL_API_TOKEN)")
    p.add_argument("--token-file", default=os.environ.get("RADICAL_API_TOKEN_FILE"), help="file holding the token")
    p.add_argument("--ca-cert", default=os.environ.get("RADICAL_BRIDGE_CA_CERT"), help="CA bundle for the bridge")
    sub = p.add_subparsers(dest="group", required=True)
    files = sub.add_parser("files", help="browse, upload and download files on an edge")
    files.add_argument("--edge", default=os.environ.get("RADICAL_EDGE"), help="edge of plain paths (RADICAL_EDGE)")
    files.add_argument("--json", action="store_true", help="print answers as JSON")
    files.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    cmd = files.add_subparsers(dest="cmd", required=True)
    ls = cmd.add_parser("ls", help="list a directory")
    ls.add_argument("path")
    ls.add_argument("-a", "--all", action="store_true", help="show names starting with a dot")
    ls.add_argument("--sort", default="name", choices=["name", "size", "mtime", "type"])
    get = cmd.add_parser("get", help="download a file (or with -r a directory)")
    get.add_argument("remote")
    get.add_argument("local", nargs="?", default=".")
    get.add_argument("-r", "--recursive", action="store_true")
    get.add_argument("--verify", action="store_true", help="compare SHA-256 checksums afterwards")
    put = cmd.add_parser("put", help="upload a file (or with -r a directory)")
    put.add_argument("local")
    put.add_argument("remote")
    put.add_argument("-r", "--recursive", action="store_true")
    put.add_argument("-f", "--overwrite", action="store_true", help="replace an existing file")
    rm = cmd.add_parser("rm", help="remove a file (or with -r a directory)")
    rm.add_argument("path")
    rm.add_argument("-r", "--recursive", action="store_true")
    mk = cmd.add_parser("mkdir", help="make a directory and its parents")
    mk.add_argument("path")
    for name, what in (("mv", "move or rename"), ("cp", "copy")):
        c = cmd.add_parser(name, help=what + " on one edge")
        c.add_argument("src")
        c.add_argument("dst")
        c.add_argument("-f", "--overwrite", action="store_true")
    for name, what in (("stat", "describe an entry"), ("sum", "SHA-256 of a file"), ("cat", "first lines"),
                       ("tail", "last lines")):
        c = cmd.add_parser(name, help=what)
        c.add_argument("path")
        if name in ("cat", "tail"):
            c.add_argument("-n", "--lines", type=int, default=100)
    fd = cmd.add_parser("find", help="find entries by name pattern")
    fd.add_argument("path")
    fd.add_argument("pattern")
    ch = cmd.add_parser("chmod", help="change a mode")
    ch.add_argument("mode")
    ch.add_argument("path")
    return p


def _client(args: argparse.Namespace) -> BridgeClient:
    token = args.token
    if not token and args.token_file:
        with open(os.path.expanduser(args.token_file)) as f:
            token = f.read().strip()
    try:
        return BridgeClient(args.url, token, ca_cert=args.ca_cert)
    except ValueError as exc:
        raise SystemExit(f"radical-edge: {exc}") from None


def _files(bc: Any, edge: str) -> FilesClient:
    return cast(FilesClient, bc.get_edge_client(edge).get_plugin("files"))


def _ls_line(e: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.get("mtime", 0)))
    name = e["name"] + ("/" if e["type"] == "directory" else "")
    if e["type"] == "symlink":
        name += f" -> {e.get('target')}"
    return f"{e.get('permissions', ''):10} {e.get('owner', ''):>8} {e.get('size', 0):>14,} {when} {name}"


def run(args: argparse.Namespace) -> int:
    bc = _client(args)
    progress = False if args.quiet else None
    out: Any = None
    try:
        if args.cmd in ("get",):
            edge, path = _split(args.remote, args.edge)
            fs = _files(bc, edge)
            if args.recursive:
                out = fs.download_dir(path, args.local, progress=progress)
            else:
                out = fs.download(path, args.local, progress=progress, verify=args.verify)
        elif args.cmd == "put":
            edge, path = _split(args.remote, args.edge)
            fs = _files(bc, edge)
            if args.recursive:
                out = fs.upload_dir(args.local, path, overwrite=args.overwrite, progress=progress)
            else:
                if path.endswith("/") or path in ("~", ""):
                    path = path.rstrip("/") + "/" + os.path.basename(args.local)
                out = fs.upload(args.local, path, overwrite=args.overwrite, progress=progress)
        elif args.cmd in ("mv", "cp"):
            edge, src = _split(args.src, args.edge)
            dst_edge, dst = _split(args.dst, edge)
            fs = _files(bc, edge)
            if dst_edge != edge:
                if args.cmd == "mv":
                    raise SystemExit("radical-edge: mv works within one edge; cp stages between edges")
                dest = _files(bc, dst_edge)
                if dst.endswith("/"):
                    dst += src.rstrip("/").rsplit("/", 1)[-1]
                out = fs.copy_to(src, dest, dst, overwrite=args.overwrite, progress=progress)
            else:
                fn = fs.move if args.cmd == "mv" else fs.copy
                out = fn(src, dst, overwrite=args.overwrite)
        else:
            edge, path = _split(args.path, args.edge)
            fs = _files(bc, edge)
            if args.cmd == "ls":
                entries = list(fs.iter_list(path, sort=args.sort, hidden=args.all))
                if args.json:
                    out = entries
                else:
                    for e in entries:
                        print(_ls_line(e))
                    return 0
            elif args.cmd == "rm":
                out = fs.remove(path, recursive=args.recursive)
            elif args.cmd == "mkdir":
                out = fs.mkdir(path, parents=True)
            elif args.cmd == "stat":
                out = fs.stat(path)
            elif args.cmd == "sum":
                digest = fs.checksum(path)
                if not args.json:
                    print(f"{digest}  {path}")
                    return 0
                out = {"sha256": digest, "path": path}
            elif args.cmd in ("cat", "tail"):
                lines = fs.head(path, args.lines) if args.cmd == "cat" else fs.tail(path, args.lines)
                print("\n".join(lines))
                return 0
            elif args.cmd == "find":
                answer = fs.find(path, args.pattern)
                if args.json:
                    out = answer
                else:
                    for m in answer["matches"]:
                        print(m["path"])
                    if answer["truncated"]:
                        print(f"(stopped: {answer['reason']})", file=sys.stderr)
                    return 0
            elif args.cmd == "chmod":
                out = fs.chmod(path, args.mode)
    except BridgeError as exc:
        print(f"radical-edge: {exc.error}: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nradical-edge: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        bc.close()
    if args.json or args.cmd == "stat":
        print(json.dumps(out, indent=2, default=str))
    elif isinstance(out, dict) and args.cmd in ("get", "put"):
        moved = out.get("sent", out.get("received"))
        note = f" (continued from byte {out['resumed_from']:,})" if out.get("resumed_from") else ""
        print(f"{out.get('path')}: {out.get('size', 0) or 0:,} bytes{note}"
              + (f", {moved:,} transferred" if moved is not None else ""), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
