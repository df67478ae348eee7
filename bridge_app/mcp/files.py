"""MCP tools and a resource for the ``files`` plugin (docs/plugins/files.md): list, stat,
read, write, mkdir, move, copy, delete, checksum, find, and a job's working directory.

Every call goes through the same ``call`` as the other tools (``calls.plugin_call``, so
through ``proxy_call``): roles, the read-only rule, rate limits and the audit trail apply,
and the route carries the path, so the audit trail records which path each tool touched.
Confinement (roots, ``..``, symlinks) is the plugin's; its refusals come back as tool errors
with its own code (``outside_roots``, ``bad_path``, ``not_found`` ...).

Writes use the plugin's one-shot ``PUT put/{path}``: the content arrives inside one MCP
message (the SDK takes at most 4 MiB), so it always fits one request; tus (resumable,
chunked) is for the SDK and command line, which send files of any size.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from mcp_types import ToolAnnotations
from pydantic import Field

from ..conf import edge_settings
from .calls import Caller, PluginError, RawAnswer, caller_of

PLUGIN = "files"

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
# Creates a directory; making it again changes nothing.
MAKE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
# May replace what is there (only with overwrite=true); the same call again leaves the same state.
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
# Move and copy: may replace the destination (overwrite=true); a move cannot be repeated.
TRANSFER = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)

EdgeName = Annotated[str, Field(description="Edge name, as list_edges shows it", min_length=1, max_length=63)]
FilePath = Annotated[str, Field(
    description="Absolute path on the edge (/home/alice/data/x.txt) or one from the edge user's home "
                "(~/data/x.txt); it must lie inside the directories the edge serves (file_roots)",
    min_length=1, max_length=4096)]
Destination = Annotated[str, Field(description="Destination path; ending in / means into that directory",
                                   min_length=1, max_length=4096)]
Overwrite = Annotated[bool, Field(description="Replace an existing destination file")]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Call = Callable[..., Awaitable[Any]]


def route(name: str, path: str) -> str:
    """``name/PATH`` as the plugin's routes take it: an absolute path without its leading
    slash, or ``~/...``; URL-encoded segment by segment."""
    return f"{name}/{quote(path[1:] if path.startswith('/') else path, safe='/~')}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _decode_text(data: bytes, *, at_end: bool) -> tuple[str, int] | None:
    """``data`` as UTF-8 text and the bytes used, or None for binary data. A multi-byte
    character cut by the end of a range (not at the end of the file) is left for the next
    read."""
    if b"\x00" in data:
        return None
    for cut in range(0, 1 if at_end else 4):
        try:
            return data[:len(data) - cut].decode("utf-8"), len(data) - cut
        except UnicodeDecodeError:
            continue
    return None


def register_file_tools(server: MCPServer, call: Call) -> None:
    """The files tools, resource and job-directory tool on ``server``; ``call`` is the
    server's plugin call (hidden-plugin check, then ``calls.plugin_call``)."""

    async def fcall(caller: Caller, edge: str, method: str, path: str, **kwargs: Any) -> Any:
        return await call(caller, edge, PLUGIN, method, path, **kwargs)

    @server.tool(title="Directories an edge serves", annotations=READ)
    async def file_roots(edge: EdgeName, ctx: Context) -> dict[str, Any]:
        """The directories the edge's files plugin serves (its roots: usually $HOME and the
        scratch directory), the edge user's home and the upload limits. Every file tool
        works only inside these roots."""
        caller = await caller_of(ctx, "file_roots")
        return await fcall(caller, edge, "GET", "roots")

    @server.tool(title="List a directory", annotations=READ)
    async def list_files(
        edge: EdgeName, path: FilePath, ctx: Context,
        offset: Annotated[int, Field(ge=0, description="Entry to start at (pass back next_offset for the next "
                                                       "page)")] = 0,
        limit: Annotated[int, Field(ge=1, le=5000, description="Entries per page")] = 200,
        sort: Literal["name", "size", "mtime", "type"] = "name",
        order: Literal["asc", "desc"] = "asc",
        hidden: Annotated[bool, Field(description="Include names starting with a dot")] = True,
    ) -> dict[str, Any]:
        """One page of a directory's entries (directories first): name, path, type (file,
        directory, symlink ...), size, mtime, mode, owner; symlinks with their target.
        total is the number of entries; next_offset is null on the last page."""
        caller = await caller_of(ctx, "list_files")
        return await fcall(caller, edge, "GET", route("list", path), query=_q(
            offset=offset, limit=limit, sort=sort, order=order, hidden=_bool(hidden)))

    @server.tool(title="File or directory details", annotations=READ)
    async def stat_file(edge: EdgeName, path: FilePath, ctx: Context) -> dict[str, Any]:
        """One entry's details: type, size, mtime, mode, owner and group, the root it is in,
        an etag for files and the real path of a symlink. not_found if it does not exist."""
        caller = await caller_of(ctx, "stat_file")
        return await fcall(caller, edge, "GET", route("stat", path))

    @server.tool(title="Read a file", annotations=READ)
    async def read_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        offset: Annotated[int, Field(ge=0, description="Byte offset to read from (pass back next_offset to go "
                                                       "on)")] = 0,
        max_bytes: Annotated[int | None, Field(ge=1, description="Most bytes to return (at most the bridge's "
                                                                 "MCP output limit, 64 KiB by default)")] = None,
        head: Annotated[int | None, Field(ge=1, le=100_000, description="Return the first N lines instead of a "
                                                                        "byte range (text files)")] = None,
        tail: Annotated[int | None, Field(ge=1, le=100_000, description="Return the last N lines instead of a "
                                                                        "byte range (text files)")] = None,
        encoding: Annotated[Literal["text", "base64"], Field(description=(
            "text (UTF-8; binary files are refused with binary_file) or base64 (any file, the bytes "
            "base64-encoded)"))] = "text",
    ) -> dict[str, Any]:
        """Read part of a file: a byte range from offset (default: the start, as much as the
        output limit allows), or its first (head) or last (tail) N lines (joined with
        newlines, without a final one). Returns the text
        (or base64 in content_base64), the size of the file, next_offset and truncated
        (more to read). Binary files need encoding=base64. Large files: read them in pieces
        with offset, or use checksum_file to compare them without reading."""
        caller = await caller_of(ctx, "read_file")
        limit = _limit(max_bytes)
        if head is not None and tail is not None:
            raise ToolError("bad_argument: pass head or tail, not both")
        if head is not None or tail is not None:
            if encoding != "text":
                raise ToolError("bad_argument: head and tail read text lines; use offset and max_bytes with "
                                "encoding=base64 for binary files")
            answer = await fcall(caller, edge, "GET", route("tail" if tail else "head", path),
                                 query=_q(lines=tail or head))
            text = "\n".join(answer.get("lines") or [])
            raw = text.encode("utf-8")
            cut = len(raw) > limit
            if cut:
                raw = raw[-limit:] if tail else raw[:limit]
                text = raw.decode("utf-8", "ignore")
            return {"path": answer.get("path", path), "size": answer.get("size"), "encoding": "text",
                    "text": text, "lines": len(answer.get("lines") or []), "from_end": bool(tail),
                    "truncated": bool(answer.get("truncated")) or cut}
        return await _read_range(fcall, caller, edge, path, offset, limit, encoding)

    @server.tool(title="Write a file", annotations=WRITE)
    async def write_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        content: Annotated[str, Field(description="The whole file: text, or base64 with encoding=base64")],
        encoding: Literal["text", "base64"] = "text",
        overwrite: Annotated[bool, Field(description="Replace the file if it exists (else: exists error)")] = False,
        sha256: Annotated[str | None, Field(description="Expected SHA-256 (hex) of the bytes: the edge refuses "
                                                        "them if it differs", pattern=r"^[0-9a-fA-F]{64}$")] = None,
    ) -> dict[str, Any]:
        """Create (or with overwrite=true replace) a file with the given content, text
        (written as UTF-8) or base64 for binary data. The file appears complete or not at
        all; an existing file is never replaced unless overwrite is true, and a directory
        never. The parent directory must exist (make_directory). Returns path, size and
        sha256. At most RADICAL_MCP_MAX_WRITE_BYTES (2 MiB by default) per call; larger
        files go with the command line (radical-edge files put) or the SDK."""
        caller = await caller_of(ctx, "write_file")
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise ToolError("bad_argument: content is not valid base64") from None
        else:
            data = content.encode("utf-8")
        cap = edge_settings.MCP_MAX_WRITE_BYTES
        if len(data) > cap:
            raise ToolError(f"too_large: {len(data)} bytes is more than one write_file call may write ({cap} "
                            "bytes, RADICAL_MCP_MAX_WRITE_BYTES); use the command line (radical-edge files put) "
                            "or the SDK for large files")
        return await fcall(caller, edge, "PUT", route("put", path), content=data,
                           query=_q(overwrite="true" if overwrite else None, sha256=sha256))

    @server.tool(title="Make a directory", annotations=MAKE)
    async def make_directory(
        edge: EdgeName, path: FilePath, ctx: Context,
        parents: Annotated[bool, Field(description="Also make missing parents; an existing directory is then "
                                                   "fine (like mkdir -p)")] = False,
    ) -> dict[str, Any]:
        """Create a directory. Without parents, its parent must exist and the directory must
        not (exists error)."""
        caller = await caller_of(ctx, "make_directory")
        return await fcall(caller, edge, "POST", route("mkdir", path), query=_q(parents="true" if parents else None),
                           body={})

    @server.tool(title="Move or rename", annotations=TRANSFER)
    async def move_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        to: Destination,
        overwrite: Overwrite = False,
    ) -> dict[str, Any]:
        """Move or rename a file or directory within the edge's roots (across file systems
        it is copied, then removed). An existing destination is never replaced unless
        overwrite is true; a root cannot be moved."""
        caller = await caller_of(ctx, "move_file")
        return await fcall(caller, edge, "POST", route("move", path), body=_dest(to, overwrite))

    @server.tool(title="Copy a file or directory", annotations=TRANSFER)
    async def copy_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        to: Destination,
        overwrite: Overwrite = False,
    ) -> dict[str, Any]:
        """Copy a file or a whole directory tree on the edge (symlinks stay symlinks). The
        copy appears complete or not at all; an existing destination is never replaced
        unless overwrite is true. Returns the entries and bytes copied."""
        caller = await caller_of(ctx, "copy_file")
        return await fcall(caller, edge, "POST", route("copy", path), body=_dest(to, overwrite))

    @server.tool(title="Delete a file or directory", annotations=DELETE)
    async def delete_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        recursive: Annotated[bool, Field(description=(
            "Delete a directory with everything in it. Without it only files, symlinks and empty "
            "directories are deleted (not_empty error)"))] = False,
    ) -> dict[str, Any]:
        """Delete a file, a symlink (the link, not its target) or, with recursive=true, a
        directory and all it contains. This cannot be undone; a root cannot be deleted."""
        caller = await caller_of(ctx, "delete_file")
        return await fcall(caller, edge, "DELETE", route("remove", path),
                           query=_q(recursive="true" if recursive else None))

    @server.tool(title="Checksum a file", annotations=READ)
    async def checksum_file(
        edge: EdgeName, path: FilePath, ctx: Context,
        algorithm: Literal["sha256", "sha1", "md5", "sha512"] = "sha256",
    ) -> dict[str, Any]:
        """A file's digest, computed on the edge (the file is not transferred): compare
        files, or check a transfer, without reading them."""
        caller = await caller_of(ctx, "checksum_file")
        return await fcall(caller, edge, "GET", route("checksum", path), query=_q(algorithm=algorithm))

    @server.tool(title="Find files by name", annotations=READ)
    async def find_files(
        edge: EdgeName, path: FilePath, ctx: Context,
        pattern: Annotated[str, Field(description="Shell glob on the name, e.g. *.out (all lower case matches "
                                                  "case-insensitively)", min_length=1, max_length=255)],
        type: Annotated[Literal["file", "directory", "symlink"] | None, Field(
            description="Only entries of this type")] = None,
        max_results: Annotated[int, Field(ge=1, le=10_000)] = 200,
    ) -> dict[str, Any]:
        """Search a directory tree for names matching a glob. Returns matches (path, name,
        type, size, mtime) and truncated with the reason (max_results or timeout)."""
        caller = await caller_of(ctx, "find_files")
        return await fcall(caller, edge, "GET", route("find", path),
                           query=_q(pattern=pattern, type=type, max=max_results))

    @server.tool(title="A job's working directory", annotations=READ)
    async def job_files(
        edge: EdgeName,
        job_id: Annotated[str, Field(description="The job_id that submit_job returned", min_length=1,
                                     max_length=200)],
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=5000, description="Entries to list")] = 200,
    ) -> dict[str, Any]:
        """Where a batch job ran and what it left there: its working directory (listed with
        the files plugin when the edge serves it), and the paths of its stdout and stderr.
        Read the files with read_file, fetch more with list_files."""
        caller = await caller_of(ctx, "job_files")
        if "/" in job_id or job_id in (".", ".."):
            raise ToolError(f"bad_argument: {job_id!r} is not a job id")
        status = await call(caller, edge, "psij", "GET", f"status/{{sid}}/{job_id}", query="output=false")
        directory = status.get("directory")
        out: dict[str, Any] = {"job_id": job_id, "state": status.get("state"), "directory": directory,
                               "stdout_path": status.get("stdout_path"), "stderr_path": status.get("stderr_path"),
                               "listing": None}
        if directory:
            try:
                out["listing"] = await fcall(caller, edge, "GET", route("list", directory), query=_q(limit=limit))
            except PluginError as exc:
                out["listing_error"] = f"{exc.error}: {exc.detail}"
        return out

    @server.resource("radical-edge://files/{edge}/{+path}", name="file", title="A file on an edge",
                     security=ResourceSecurity(reject_absolute_paths=False))
    async def file_resource(edge: str, path: str, ctx: Context) -> str | bytes:
        """A file on an edge: the path after the edge is absolute without its leading slash
        (radical-edge://files/EDGE/home/alice/run/out.txt) or ~/... from the edge user's
        home. Text comes as text, anything else as a blob; files larger than the MCP output
        limit are refused (read them in pieces with read_file)."""
        caller = await caller_of(ctx, "resource:file")
        limit = edge_settings.MCP_MAX_OUTPUT_BYTES
        shown = path if path.startswith("~") else "/" + path
        try:  # the refusal's words (outside_roots, not_found ...) for the client, not a generic error
            got = await _read_range(fcall, caller, edge, shown, 0, limit, "base64")
        except ToolError as exc:
            raise ResourceError(str(exc)) from None
        if got["truncated"]:
            raise ResourceError(f"too_large: '{shown}' has {got['size']} bytes, more than a resource returns "
                            f"({limit}); read it in pieces with read_file")
        data = base64.b64decode(got["content_base64"])
        text = _decode_text(data, at_end=True)
        return text[0] if text is not None else data


async def _read_range(fcall: Call, caller: Caller, edge: str, path: str, offset: int, limit: int,
                      encoding: str) -> dict[str, Any]:
    info = await fcall(caller, edge, "GET", route("stat", path))
    kind = info.get("target_type") if info.get("type") == "symlink" else info.get("type")
    if kind == "directory":
        raise ToolError(f"is_a_directory: '{info.get('path', path)}' is a directory; list it with list_files")
    if kind != "file" and info.get("type") != "symlink":  # a link leading out: the download says why
        raise ToolError(f"not_a_file: '{info.get('path', path)}' is a {kind or 'special file'}, not a regular file")
    size = int(info.get("size") or 0)
    data = b""
    if offset < size:
        end = min(size, offset + limit) - 1
        answer: RawAnswer = await fcall(caller, edge, "GET", route("download", path), raw=True,
                                        headers={"range": f"bytes={offset}-{end}"})
        data = answer.body
        m = _CONTENT_RANGE.match(answer.headers.get("content-range", ""))
        if m and m[3] != "*":
            size = int(m[3])  # the file as it was read, should it have changed since the stat
        if answer.status == 200:  # no range applied: the whole file
            data = data[offset:offset + limit]
        data = data[:limit]
    out: dict[str, Any] = {"path": info.get("path", path), "size": size, "offset": offset}
    if encoding == "base64":
        used = len(data)
        out.update(encoding="base64", content_base64=base64.b64encode(data).decode("ascii"),
                   note="content_base64 holds the bytes, base64-encoded")
    else:
        decoded = _decode_text(data, at_end=offset + len(data) >= size)
        if decoded is None:
            raise ToolError(f"binary_file: '{out['path']}' is not UTF-8 text (it has NUL bytes or invalid UTF-8); "
                            "read it with encoding=base64, or compare it with checksum_file")
        out.update(encoding="text", text=decoded[0])
        used = decoded[1]
    out.update(bytes=used, next_offset=offset + used, truncated=offset + used < size)
    return out


def _dest(to: str, overwrite: bool) -> dict[str, Any]:
    """Move and copy's body; a destination ending in / is the directory to put it into."""
    return {"to": to, "overwrite": overwrite, "into": to.endswith("/") and to.rstrip("/") != ""}


def _limit(max_bytes: int | None) -> int:
    cap = edge_settings.MCP_MAX_OUTPUT_BYTES
    return min(max_bytes or cap, cap)


def _q(**params: Any) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v is not None and v != ""})
