"""files: browse, upload, download and stage data on an edge (docs/plugins/files.md).

Every route takes the path in the URL, after the route's name: absolute without its
leading slash (``list/home/alice/data`` is ``/home/alice/data``) or from the agent user's
home (``list/~/data``). So the bridge's audit trail records which path every call touched.

    GET    roots                          the directories served
    GET    list/{path}                    ?offset&limit&sort=name|size|mtime|type&order&hidden
    GET    stat/{path}
    GET    download/{path}                Range, If-Range, If-None-Match; ?inline=1;
                                          a directory: ?archive=tar|tgz|zip
    GET    checksum/{path}                ?algorithm=sha256|sha1|md5|sha512
    GET    head/{path}  GET tail/{path}   ?lines=N
    GET    find/{path}                    ?pattern=*.txt&max=&timeout=&type=
    POST   mkdir/{path}                   ?parents=true, {"mode": "750"}
    POST   move/{path}  POST copy/{path}  {"to": PATH, "overwrite": false}
    DELETE remove/{path}                  ?recursive=true for directories
    POST   chmod/{path}                   {"mode": "640"}
    PUT    put/{path}                     the body is the file (up to the bridge's body limit);
                                          ?overwrite=true&sha256=HEX
    POST   upload/{path}                  tus creation (uploads.py); then
    HEAD|GET|PATCH|DELETE uploads/{id}/{path}   tus offset, status, data, termination
                                          (the path again, so that the audit trail has it
                                          for every chunk; ``uploads/{id}`` works too)
    GET    uploads                        the caller's unfinished uploads (?path=)

GET routes are read-only (viewers and read-only tokens may call them); everything else
needs the user role. Writes emit a ``changed`` event (op, path, bytes, user) that reaches
the caller and the edge's owner; the bridge's audit trail has every call with its path and
byte counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from ...plugin import Caller, HTTPError, Plugin, Request, Response, route
from . import listing, ops, transfer
from .paths import Roots, Target
from .settings import FilesSettings
from .uploads import (
    CHUNK_CHECKSUMS,
    TUS_EXTENSIONS,
    TUS_VERSION,
    UploadRecord,
    Uploads,
    parse_metadata,
    parse_repr_digest,
    tus_headers,
)

log = logging.getLogger("edge_agent.plugins.files")

UI_SCHEMA: dict[str, Any] = {
    "title": "Files",
    "icon": "folder",
    "description": "Browse, upload, download, move and remove files in the directories this edge serves.",
    "forms": [
        {"id": "mkdir", "title": "New folder", "layout": "single",
         "fields": [{"name": "path", "type": "text", "label": "Folder", "required": True,
                     "placeholder": "~/data/new", "in_path": True}],
         "submit": {"label": "Create", "endpoint": "mkdir/{path}?parents=true", "method": "POST"}},
        {"id": "move", "title": "Move or rename", "layout": "grid2",
         "fields": [{"name": "path", "type": "text", "label": "From", "required": True, "in_path": True},
                    {"name": "to", "type": "text", "label": "To", "required": True}],
         "submit": {"label": "Move", "endpoint": "move/{path}", "method": "POST"}},
        {"id": "remove", "title": "Remove", "layout": "single",
         "fields": [{"name": "path", "type": "text", "label": "Path", "required": True, "in_path": True}],
         "submit": {"label": "Remove", "endpoint": "remove/{path}", "method": "DELETE"}},
    ],
    "monitors": [
        {"id": "roots", "title": "Directories served", "type": "table", "endpoint": "roots",
         "items_field": "roots", "columns": ["path", "real_path", "exists"]},
    ],
    "notifications": [{"topic": "changed", "id_field": "path", "state_field": "op"}],
}


def _umask() -> int:
    # os.umask can only be read by setting it; done once, at start-up, before any thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class FilesPlugin(Plugin):
    name = "files"
    version = "1.0.0"
    description = "Browse, upload (resumable, tus), download (Range, archives) and manage files on the edge."
    ui_schema = UI_SCHEMA

    def __init__(self, host, config: dict[str, Any] | None = None) -> None:
        super().__init__(host, config)
        self.settings = FilesSettings.from_config(self.config)
        self.roots = Roots(self.settings.roots)
        self.lister = listing.Lister(self.roots)
        self.umask = _umask()
        self.uploads: Uploads | None = None
        self.heavy = ThreadPoolExecutor(self.settings.heavy_workers, thread_name_prefix="files-heavy")
        self.io = ThreadPoolExecutor(4, thread_name_prefix="files-io")
        self._inflight_bytes = 0
        self._downloads = 0
        self._sweeper: asyncio.Task | None = None

    @property
    def started_uploads(self) -> Uploads:
        """The upload store, which exists once the plugin has started."""
        if self.uploads is None:
            raise HTTPError(503, "not_started", "the files plugin has not started")
        return self.uploads

    async def start(self) -> None:
        state = self.host.state_dir / "files" / "uploads"
        self.uploads = Uploads(self.roots, state, max_upload=self.settings.max_upload,
                               max_pending_per_user=self.settings.max_pending_uploads,
                               expiry=self.settings.upload_expiry, umask=self.umask)
        missing = [r for r in self.roots.describe() if not r["exists"]]
        for r in missing:
            log.warning("files root %s does not exist", r["path"])
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.heavy.shutdown(wait=False, cancel_futures=True)
        self.io.shutdown(wait=False, cancel_futures=True)
        if self.uploads is not None:
            self.uploads.close()
        await super().stop()

    async def _sweep_loop(self) -> None:
        while True:
            try:
                n = await asyncio.to_thread(self.started_uploads.sweep)
                if n:
                    log.info("removed %d expired unfinished upload(s)", n)
            except Exception:
                log.exception("sweeping expired uploads failed")
            await asyncio.sleep(3600)

    # -- helpers -------------------------------------------------------------------------

    def _target(self, raw: str | None) -> Target:
        if raw is not None and raw and not raw.startswith(("~", "/")):
            raw = "/" + raw
        return self.roots.target(raw)

    async def _run(self, fn, *args, heavy: bool = False, **kwargs) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.heavy if heavy else self.io, lambda: fn(*args, **kwargs))

    def _changed(self, caller: Caller, op: str, path: str, **extra: Any) -> None:
        self.emit("changed", {"op": op, "path": path, "user": caller.user, "ts": time.time(), **extra}, owner=caller)

    def _reserve_bytes(self, n: int) -> None:
        limit = self.settings.max_inflight_bytes
        if self._inflight_bytes and self._inflight_bytes + n > limit:
            raise HTTPError(429, "edge_transfers_busy", f"this edge is writing {self._inflight_bytes} bytes of uploads "
                            f"already (limit {limit}, agent option files.max_inflight_bytes); retry shortly",
                            headers={"retry-after": "1"})
        self._inflight_bytes += n

    @staticmethod
    def _int_arg(request: Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HTTPError(400, "bad_request", f"{name} must be a whole number") from None
        if not lo <= value <= hi:
            raise HTTPError(400, "bad_request", f"{name} must be between {lo} and {hi}")
        return value

    # -- reading -------------------------------------------------------------------------

    @route("GET", "roots")
    async def roots_(self, request: Request) -> dict[str, Any]:
        return {"roots": self.roots.describe(), "home": self.roots.home,
                "limits": {"max_upload": self.settings.max_upload or None,
                           "max_inflight_bytes": self.settings.max_inflight_bytes,
                           "max_downloads": self.settings.max_downloads}}

    @route("GET", "list/{path:path}")
    async def list_(self, request: Request, path: str) -> dict[str, Any]:
        target = self._target(path)
        return await self._run(
            self.lister.list, target,
            offset=self._int_arg(request, "offset", 0, 0, 10**9),
            limit=self._int_arg(request, "limit", listing.DEFAULT_PAGE, 1, listing.MAX_PAGE),
            sort=request.arg("sort", "name"), order=request.arg("order", "asc"),
            hidden=request.arg("hidden", "true").lower() not in ("0", "false", "no"),
            dirs_first=request.arg("dirs_first", "true").lower() not in ("0", "false", "no"),
        )

    @route("GET", "stat/{path:path}")
    async def stat_(self, request: Request, path: str) -> dict[str, Any]:
        return await self._run(listing.stat_target, self.roots, self._target(path))

    @route("GET", "checksum/{path:path}")
    async def checksum(self, request: Request, path: str) -> dict[str, Any]:
        return await self._run(listing.checksum, self.roots, self._target(path),
                               request.arg("algorithm", "sha256").lower(), heavy=True)

    @route("GET", "head/{path:path}")
    async def head(self, request: Request, path: str) -> dict[str, Any]:
        return await self._preview(request, path, tail=False)

    @route("GET", "tail/{path:path}")
    async def tail(self, request: Request, path: str) -> dict[str, Any]:
        return await self._preview(request, path, tail=True)

    async def _preview(self, request: Request, path: str, *, tail: bool) -> dict[str, Any]:
        lines = self._int_arg(request, "lines", 100, 1, 100_000)
        return await self._run(listing.head_tail, self.roots, self._target(path), lines=lines, tail=tail,
                               max_bytes=self.settings.preview_max_bytes)

    @route("GET", "find/{path:path}")
    async def find(self, request: Request, path: str) -> dict[str, Any]:
        pattern = request.arg("pattern") or request.arg("name")
        if not pattern:
            raise HTTPError(400, "bad_request", "pattern is required (a shell glob such as *.out)")
        kind = request.arg("type")
        if kind not in (None, "", "file", "directory", "symlink"):
            raise HTTPError(400, "bad_request", "type must be file, directory or symlink")
        s = self.settings
        return await self._run(
            listing.find, self.roots, self._target(path), pattern,
            max_results=self._int_arg(request, "max", min(1000, s.find_max_results), 1, s.find_max_results),
            timeout=float(self._int_arg(request, "timeout", min(10, int(s.find_max_seconds)), 1,
                                        int(s.find_max_seconds))),
            kind=kind or None, hidden=request.arg("hidden", "true").lower() not in ("0", "false", "no"),
            heavy=True)

    @route("GET", "download/{path:path}")
    async def download(self, request: Request, path: str) -> Response:
        target = self._target(path)
        if self._downloads >= self.settings.max_downloads:
            raise HTTPError(429, "edge_transfers_busy", f"{self._downloads} downloads are streaming from this edge "
                            f"(limit {self.settings.max_downloads}, agent option files.max_downloads); retry shortly",
                            headers={"retry-after": "2"})
        archive = request.arg("archive")
        _, st = await self._run(self.roots.stat_real, target)
        if archive or stat.S_ISDIR(st.st_mode):
            response = await self._run(transfer.archive_response, self.roots, target, archive or "tar",
                                       pool=self.heavy)
        else:
            response = await self._run(transfer.file_response, self.roots, target, request, pool=self.io)
        if response.stream is not None:
            response.stream = self._counted(response.stream)
        return response

    async def _counted(self, source):
        self._downloads += 1
        try:
            async for piece in source:
                yield piece
        finally:
            self._downloads -= 1
            await source.aclose()

    # -- changing ------------------------------------------------------------------------

    @route("POST", "mkdir/{path:path}")
    async def mkdir(self, request: Request, path: str) -> dict[str, Any]:
        target = self._target(path)
        body = request.json_object()
        mode = ops.parse_mode(body["mode"]) if "mode" in body else 0o777
        parents = request.flag("parents") or bool(body.get("parents"))
        result = await self._run(ops.mkdir, self.roots, target, parents=parents, mode=mode)
        self._changed(request.caller, "mkdir", target.path)
        return result

    @route("POST", "move/{path:path}")
    async def move(self, request: Request, path: str) -> dict[str, Any]:
        src, dest, overwrite = self._src_dest(request, path)
        result = await self._run(ops.move, self.roots, src, dest, overwrite=overwrite, heavy=True)
        self._changed(request.caller, "move", dest.path, source=src.path)
        return result

    @route("POST", "copy/{path:path}")
    async def copy(self, request: Request, path: str) -> dict[str, Any]:
        src, dest, overwrite = self._src_dest(request, path)
        result = await self._run(ops.copy, self.roots, src, dest, overwrite=overwrite, heavy=True)
        self._changed(request.caller, "copy", dest.path, source=src.path, bytes=result.get("bytes"))
        return result

    def _src_dest(self, request: Request, path: str) -> tuple[Target, Target, bool]:
        src = self._target(path)
        body = request.json_object()
        to = body.get("to") or request.arg("to")
        if not isinstance(to, str) or not to:
            raise HTTPError(400, "bad_request", "'to' (the destination path) is required")
        dest = self._target(to)
        if dest.path.endswith("/") or (body.get("into") is True):
            dest = self._target(f"{dest.path.rstrip('/')}/{src.name}")
        overwrite = bool(body.get("overwrite")) or request.flag("overwrite")
        return src, dest, overwrite

    @route("DELETE", "remove/{path:path}")
    async def remove(self, request: Request, path: str) -> dict[str, Any]:
        target = self._target(path)
        result = await self._run(ops.remove, self.roots, target, recursive=request.flag("recursive"), heavy=True)
        self._changed(request.caller, "remove", target.path)
        return result

    @route("POST", "chmod/{path:path}")
    async def chmod(self, request: Request, path: str) -> dict[str, Any]:
        target = self._target(path)
        body = request.json_object()
        mode = ops.parse_mode(body.get("mode", request.arg("mode")))
        result = await self._run(ops.chmod, self.roots, target, mode)
        self._changed(request.caller, "chmod", target.path, mode=result["mode"])
        return result

    @route("PUT", "put/{path:path}")
    async def put(self, request: Request, path: str) -> dict[str, Any]:
        target = self._target(path)
        size = len(request.body)
        self._check_upload_size(size)
        self._reserve_bytes(size)
        try:
            result = await self._run(ops.put, self.roots, target, request.body, overwrite=request.flag("overwrite"),
                                     sha256=request.arg("sha256"), umask=self.umask)
        finally:
            self._inflight_bytes -= size
        self._changed(request.caller, "upload", target.path, bytes=size)
        return result

    def _check_upload_size(self, size: int) -> None:
        if self.settings.max_upload and size > self.settings.max_upload:
            raise HTTPError(413, "upload_too_large", f"{size} bytes is more than this edge accepts in one file "
                            f"({self.settings.max_upload} bytes, agent option files.max_upload)")

    # -- tus -----------------------------------------------------------------------------

    @route("OPTIONS", "upload/{path:path}")
    async def tus_options(self, request: Request, path: str) -> Response:
        return Response(204, b"", self._tus_discovery())

    def _tus_discovery(self) -> dict[str, str]:
        extra: dict[str, Any] = {"tus_version": TUS_VERSION, "tus_extension": TUS_EXTENSIONS,
                 "tus_checksum_algorithm": ",".join(CHUNK_CHECKSUMS)}
        if self.settings.max_upload:
            extra["tus_max_size"] = self.settings.max_upload
        return tus_headers(**extra)

    def _check_tus(self, request: Request) -> None:
        version = request.headers.get("tus-resumable")
        if version is not None and version != TUS_VERSION:
            raise HTTPError(412, "tus_version", f"this server speaks tus {TUS_VERSION}", headers=self._tus_discovery())

    @route("POST", "upload/{path:path}")
    async def tus_create(self, request: Request, path: str) -> Response:
        self._check_tus(request)
        if request.headers.get("upload-defer-length"):
            raise HTTPError(400, "bad_request", "Upload-Defer-Length is not supported: say the Upload-Length")
        raw = request.headers.get("upload-length")
        if raw is None or not raw.isdigit():
            raise HTTPError(400, "bad_request", "Upload-Length (the file's size in bytes) is required",
                            headers=tus_headers())
        length = int(raw)
        metadata = parse_metadata(request.headers.get("upload-metadata"))
        if request.flag("overwrite"):
            metadata["overwrite"] = "1"
        target = self._target(path)
        rec = await self._run(self.started_uploads.create, target, request.caller, length=length, metadata=metadata)
        offset, digest = 0, None
        if request.body or length == 0:
            offset, digest = await self._write_chunk(request, rec, 0)
        # Relative to the creation URL (…/files/upload/a/b/NAME): up to …/files/, then
        # uploads/ID/a/b/NAME, so every PATCH names the file in the bridge's audit trail.
        suffix = request.path.strip("/").split("/", 1)[1]
        depth = len(request.path.strip("/").split("/")) - 1
        location = "../" * depth + f"uploads/{rec.id}/{quote(suffix, safe='/~')}"
        headers = tus_headers(location=location, upload_offset=offset)
        if digest:
            headers["x-edge-sha256"] = digest
        body = {"id": rec.id, "location": location, "route": location.replace("../", ""), "offset": offset,
                "length": length, "path": rec.path, "complete": digest is not None}
        return Response.json(body, status=201, headers=headers)

    @route("GET", "uploads")
    async def uploads_list(self, request: Request) -> dict[str, Any]:
        path = request.arg("path")
        shown = self._target(path).path if path else None
        return {"uploads": await self._run(self.started_uploads.mine, request.caller, shown)}

    def _upload(self, request: Request, upload_id: str, path: str | None) -> UploadRecord:
        rec = self.started_uploads.get(upload_id, request.caller)
        if path is not None and self._target(path).path != rec.path:
            raise HTTPError(404, "unknown_upload", f"upload '{upload_id}' is not for '{path}'")
        return rec

    @route("GET", "uploads/{upload_id}")
    @route("GET", "uploads/{upload_id}/{path:path}")
    async def tus_head(self, request: Request, upload_id: str, path: str | None = None) -> Response:
        rec = self._upload(request, upload_id, path)
        prefix = request.arg("prefix")
        if prefix not in (None, "", "sha256"):
            raise HTTPError(400, "bad_request", f"prefix must be sha256, got {prefix!r}")
        if prefix and request.method != "HEAD":
            offset, prefix_sha = await self._run(self.started_uploads.prefix_sha256, rec)
            headers = tus_headers(upload_offset=offset, upload_length=rec.length)
            return Response.json({**rec.describe(offset), "prefix_sha256": prefix_sha}, headers=headers)
        offset = await self._run(self.started_uploads.offset, rec)
        headers = tus_headers(upload_offset=offset, upload_length=rec.length)
        if request.method == "HEAD":
            return Response(200, b"", headers)
        return Response.json(rec.describe(offset), headers=headers)

    @route("PATCH", "uploads/{upload_id}")
    @route("PATCH", "uploads/{upload_id}/{path:path}")
    async def tus_patch(self, request: Request, upload_id: str, path: str | None = None) -> Response:
        self._check_tus(request)
        rec = self._upload(request, upload_id, path)
        raw = request.headers.get("upload-offset")
        if raw is None or not raw.isdigit():
            raise HTTPError(400, "bad_request", "Upload-Offset is required", headers=tus_headers())
        ctype = request.headers.get("content-type", "application/offset+octet-stream")
        if ctype.split(";")[0].strip() not in ("application/offset+octet-stream", "application/octet-stream"):
            raise HTTPError(415, "bad_content_type", "PATCH bodies are application/offset+octet-stream",
                            headers=tus_headers())
        offset, digest = await self._write_chunk(request, rec, int(raw))
        headers = tus_headers(upload_offset=offset)
        if digest:
            headers["x-edge-sha256"] = digest
        return Response(204, b"", headers)

    async def _write_chunk(self, request: Request, rec, offset: int) -> tuple[int, str | None]:
        size = len(request.body)
        self._reserve_bytes(size)
        try:
            new, digest = await self._run(self.started_uploads.write, rec, offset, request.body,
                                          request.headers.get("upload-checksum"),
                                          parse_repr_digest(request.headers.get("repr-digest")))
        finally:
            self._inflight_bytes -= size
        if digest is not None:
            self._changed(request.caller, "upload", rec.path, bytes=rec.length, sha256=digest)
        return new, digest

    @route("DELETE", "uploads/{upload_id}")
    @route("DELETE", "uploads/{upload_id}/{path:path}")
    async def tus_delete(self, request: Request, upload_id: str, path: str | None = None) -> Response:
        self._check_tus(request)
        rec = self._upload(request, upload_id, path)
        await self._run(self.started_uploads.abandon, rec)
        return Response(204, b"", tus_headers())
