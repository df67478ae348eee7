"""SDK client of the files plugin: ``ec.get_plugin("files")``.

    fs = ec.get_plugin("files")
    fs.list("~/data")                       # one page; fs.iter_list() walks every page
    fs.upload("results.h5", "~/data/results.h5")        # resumable, checksum-verified
    fs.download("~/data/out.nc", "out.nc")               # resumable with Range
    with fs.open("~/data/log.txt") as f: print(f.readline())

Uploads use tus (uploads.py on the agent): the SDK asks the edge for an unfinished upload
of the same file to the same path and continues it (once the edge's digest of what it
holds matches the file's start), or creates one, and sends the rest in chunks, hashing
each while the previous one travels (the digest goes with the last chunk); lost
connections, a restarting bridge or agent and busy edges are retried for ``retry_for``
seconds, each time from the offset the edge reports.
Downloads go to ``LOCAL.part`` and continue with ``Range`` and ``If-Range`` (the ETag).
Progress: a bar on stderr when it is a terminal (``progress=None``), nothing with
``progress=False``, or ``progress=callable(done_bytes, total_bytes)``.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx

from ...backoff import backoff_delay
from ...client.errors import (
    BridgeError,
    BridgeUnavailable,
    ConnectionFailed,
    EdgeDisconnected,
    EdgeOffline,
    EdgeTimeout,
    RateLimited,
)
from ...client.plugin import PluginClient

DEFAULT_CHUNK = 16 * 1024 * 1024
RETRYABLE = (ConnectionFailed, EdgeDisconnected, EdgeOffline, BridgeUnavailable, EdgeTimeout, RateLimited)

Progress = Callable[[int, int], None]


def remote_route(route: str, path: str) -> str:
    """``route/…`` for a remote path: absolute paths lose their leading slash, ``~`` stays."""
    path = str(path)
    if path.startswith("/"):
        path = path[1:]
    return f"{route}/{quote(path, safe='/~')}"


class _Bar:
    """A progress bar: tqdm when installed, else a plain one on stderr."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done, self._last = total, desc, 0, 0.0
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=True)
        except ImportError:
            self._tqdm = None
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if self._tqdm is not None:
            self._tqdm.update(done - self.done)
            self.done = done
            return
        self.done = done
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        frac = done / total if total else 1.0
        rate = done / max(now - self.start, 1e-6) / 2**20
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.desc[:30]:30} [{bar:30}] {frac * 100:5.1f}% {done / 2**20:9.1f} MiB "
                         f"{rate:7.1f} MiB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


def _progress(progress: Any, total: int, desc: str) -> tuple[Progress | None, Callable[[], None]]:
    if progress is False:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    if progress is None and not sys.stderr.isatty():
        return None, lambda: None
    bar = _Bar(total, desc)
    return bar, bar.close


def file_sha256(path: str, block: int = 4 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(block)
            if not data:
                return h.hexdigest()
            h.update(data)


def _hash_prefix(path: str, upto: int, block: int = 4 * 1024 * 1024) -> Any:
    """A sha256 object fed the first ``upto`` bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = upto
        while left > 0:
            data = f.read(min(block, left))
            if not data:
                break
            h.update(data)
            left -= len(data)
    return h


class _ChunkReader:
    """Reads an upload's chunks ahead in one worker thread, feeding each to the running
    hash in file order (hashlib releases the GIL: reading and hashing the next chunk
    overlaps sending this one). ``hasher`` has seen the file up to the first read."""

    def __init__(self, path: str, hasher: Any) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.hasher = hasher
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="files-upload")

    def _read(self, at: int, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = os.pread(self.fd, n - got, at + got)
            if not part:
                raise BridgeError(0, "file_changed", f"{self.path} became shorter while it was uploaded")
            parts.append(part)
            got += len(part)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.hasher.update(data)
        return data

    def read(self, at: int, n: int) -> Future:
        """The ``n`` bytes at ``at`` (hashed: reads must follow each other)."""
        return self.pool.submit(self._read, at, n)

    def restart(self, at: int, n: int, ahead: Future | None) -> Future:
        """Continue at ``at`` instead: the hash is rebuilt from the file's start."""
        if ahead is not None:
            ahead.cancel() or ahead.exception()
        self.hasher = _hash_prefix(self.path, at)
        return self.read(at, n)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        os.close(self.fd)


class FilesClient(PluginClient):
    """Typed methods for the files plugin (routes in edge_agent/plugins/files/plugin.py)."""

    retry_for: float = 300.0

    def _url(self, route: str) -> str:
        return f"/{self.edge.name}/{self.name}/{route}"

    def _retrying(self, fn: Callable[[], Any], *, retry_for: float | None = None) -> Any:
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        failures = 0
        while True:
            try:
                return fn()
            except RETRYABLE as exc:
                delay = backoff_delay(failures, base=0.5, cap=10.0)
                failures += 1
                if time.monotonic() + delay > deadline:
                    raise
                wait = getattr(exc, "retry_after", None) or delay
                time.sleep(wait)

    # -- reading -------------------------------------------------------------------------

    def roots(self) -> dict[str, Any]:
        return self.call("GET", "roots")

    def list(self, path: str = "~", *, offset: int = 0, limit: int = 500, sort: str = "name",
             order: str = "asc", hidden: bool = True) -> dict[str, Any]:
        """One page of a directory listing: ``entries``, ``total``, ``next_offset``."""
        return self.call("GET", remote_route("list", path), params={
            "offset": offset, "limit": limit, "sort": sort, "order": order, "hidden": str(hidden).lower()})

    def iter_list(self, path: str = "~", *, page: int = 5000, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every entry of a directory, page by page."""
        offset: int | None = 0
        while offset is not None:
            answer = self.list(path, offset=offset, limit=page, **kwargs)
            yield from answer["entries"]
            offset = answer["next_offset"]

    def stat(self, path: str) -> dict[str, Any]:
        return self.call("GET", remote_route("stat", path))

    def exists(self, path: str) -> bool:
        from ...client.errors import NotFound

        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def checksum(self, path: str, algorithm: str = "sha256") -> str:
        return self.call("GET", remote_route("checksum", path), params={"algorithm": algorithm},
                         timeout=600)["digest"]

    def head(self, path: str, lines: int = 100) -> builtins.list[str]:
        return self.call("GET", remote_route("head", path), params={"lines": lines})["lines"]

    def tail(self, path: str, lines: int = 100) -> builtins.list[str]:
        return self.call("GET", remote_route("tail", path), params={"lines": lines})["lines"]

    def find(self, path: str, pattern: str, *, max_results: int = 1000, timeout: int = 10,
             type: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"pattern": pattern, "max": max_results, "timeout": timeout}
        if type:
            params["type"] = type
        return self.call("GET", remote_route("find", path), params=params, timeout=timeout + 30)

    # -- changing ------------------------------------------------------------------------

    def mkdir(self, path: str, *, parents: bool = True, mode: str | None = None) -> dict[str, Any]:
        body = {"mode": mode} if mode else {}
        return self.call("POST", remote_route("mkdir", path), params={"parents": str(parents).lower()}, json=body)

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        return self.call("POST", remote_route("move", src), json={"to": dst, "overwrite": overwrite}, timeout=600)

    rename = move

    def copy(self, src: str, dst: str, *, overwrite: bool = False) -> dict[str, Any]:
        return self.call("POST", remote_route("copy", src), json={"to": dst, "overwrite": overwrite}, timeout=600)

    def remove(self, path: str, *, recursive: bool = False) -> dict[str, Any]:
        return self.call("DELETE", remote_route("remove", path), params={"recursive": str(recursive).lower()},
                         timeout=600)

    def chmod(self, path: str, mode: str | int) -> dict[str, Any]:
        return self.call("POST", remote_route("chmod", path), json={"mode": mode if isinstance(mode, str)
                                                                     else f"{mode:o}"})

    def put_bytes(self, remote: str, data: bytes, *, overwrite: bool = False) -> dict[str, Any]:
        """Write a small file (up to the bridge's body limit) in one request."""
        return self.call("PUT", remote_route("put", remote), content=data, params={
            "overwrite": str(overwrite).lower(), "sha256": hashlib.sha256(data).hexdigest()})

    # -- uploads -------------------------------------------------------------------------

    def pending_uploads(self, remote: str | None = None) -> builtins.list[dict[str, Any]]:
        params = {"path": remote} if remote else None
        return self.call("GET", "uploads", params=params)["uploads"]

    def upload(self, local: str | os.PathLike, remote: str, *, overwrite: bool = False,
               chunk_size: int = DEFAULT_CHUNK, progress: Any = None, resume: bool = True,
               retry_for: float | None = None) -> dict[str, Any]:
        """Upload ``local`` to ``remote`` (resumable; the file appears on the edge only
        complete and checksum-verified). Returns ``{path, size, sha256, resumed_from,
        sent}``; ``sent`` counts the bytes this call sent.

        The file is read once: each chunk is read and hashed by a worker thread while the
        previous one travels, and the whole file's SHA-256 goes with the last chunk
        (``Repr-Digest``), which the edge checks before the file takes its name. An
        unfinished upload of the same file (same size and mtime, metadata ``source``) to the
        same path is continued once the edge's digest of what it holds matches the file's
        start. A file that changes while it is sent is refused before its last chunk."""
        local = os.fspath(local)
        st = os.stat(local)
        size, source = st.st_size, f"{st.st_size}:{st.st_mtime_ns}"
        remote_path = self.stat_path(remote)
        upload, hasher = (self._resumable(local, remote_path, size, source, retry_for) if resume else (None, None))
        if upload is None:
            metadata = {"filename": os.path.basename(local), "source": source}
            if overwrite:
                metadata["overwrite"] = "1"
            headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                       "Upload-Metadata": ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                                                   for k, v in metadata.items())}
            upload = self._retrying(lambda: self.call("POST", remote_route("upload", remote), headers=headers),
                                    retry_for=retry_for)
            hasher = hashlib.sha256()
        upload_id = upload["id"]
        # The path again in every chunk's URL: the bridge's audit trail records it.
        upload_route = remote_route(f"uploads/{upload_id}", upload.get("path") or remote_path)
        resumed_from = offset = upload.get("offset", 0)
        sent = 0
        report, close = _progress(progress, size, os.path.basename(local))
        result_sha = None
        digest = hashlib.sha256().hexdigest() if size == 0 else None
        reader = _ChunkReader(local, hasher)
        try:
            if report:
                report(offset, size)
            ahead = reader.read(offset, min(chunk_size, size - offset)) if offset < size else None
            while offset < size:
                assert ahead is not None  # read ahead while offset < size
                data = ahead.result()
                end = offset + len(data)
                ahead = reader.read(end, min(chunk_size, size - end)) if end < size else None
                headers = {"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                           "Content-Type": "application/offset+octet-stream"}
                if end == size:
                    now = os.stat(local)
                    if f"{now.st_size}:{now.st_mtime_ns}" != source:
                        self._retrying(lambda: self.edge.bridge.request(
                            "DELETE", self._url(upload_route), raw=True, headers={"Tus-Resumable": "1.0.0"}),
                            retry_for=retry_for)
                        raise BridgeError(0, "file_changed", f"{local} changed while it was uploaded; the upload "
                                          "was abandoned, upload it again")
                    digest = reader.hasher.hexdigest()
                    headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(reader.hasher.digest()).decode()}:"

                def patch(data=data, headers=headers):
                    return self.edge.bridge.request("PATCH", self._url(upload_route), content=data, raw=True,
                                                    timeout=300, headers=headers)

                try:
                    response = self._retrying(patch, retry_for=retry_for)
                    new = int(response.headers.get("upload-offset", end))
                except BridgeError as exc:
                    if exc.status != 409 or exc.error != "offset_mismatch":
                        raise
                    response, new = None, self._retrying(lambda: self._offset(upload_route), retry_for=retry_for)
                if response is not None:
                    sent += len(data)
                    result_sha = response.headers.get("x-edge-sha256") or result_sha
                if new != end:  # the edge has another offset (an answer lost on the way): go on from there
                    ahead = reader.restart(new, min(chunk_size, size - new), ahead) if new < size else None
                offset = new
                if report:
                    report(offset, size)
        finally:
            reader.close()
            close()
        if result_sha and digest and result_sha != digest:
            raise BridgeError(0, "checksum_mismatch", f"the edge's file has SHA-256 {result_sha}, {local} has "
                              f"{digest}")
        return {"path": upload.get("path", remote_path), "size": size, "sha256": result_sha or digest,
                "resumed_from": resumed_from, "sent": sent}

    def _resumable(self, local: str, remote_path: str, size: int, source: str,
                   retry_for: float | None) -> tuple[dict[str, Any] | None, Any]:
        """An unfinished upload of this file to ``remote_path`` whose bytes so far are the
        file's start, with the file's hash up to there; else (None, None)."""
        for pending in self._retrying(lambda: self.pending_uploads(remote_path), retry_for=retry_for):
            if pending["length"] != size or pending.get("source") != source or pending.get("complete"):
                continue
            route = remote_route(f"uploads/{pending['id']}", pending.get("path") or remote_path)
            state = self._retrying(functools.partial(self.call, "GET", route, params={"prefix": "sha256"}),
                                   retry_for=retry_for)
            if "prefix_sha256" not in state:
                continue  # an edge that cannot say what it holds
            hasher = _hash_prefix(local, state["offset"])
            if hasher.hexdigest() == state["prefix_sha256"]:
                return {**pending, "offset": state["offset"]}, hasher
        return None, None

    def _offset(self, upload_route: str) -> int:
        response = self.edge.bridge.request("HEAD", self._url(upload_route), raw=True,
                                            headers={"Tus-Resumable": "1.0.0"})
        return int(response.headers["upload-offset"])

    def stat_path(self, remote: str) -> str:
        """The absolute path the edge uses for ``remote`` (``~`` expanded there)."""
        if not str(remote).startswith("~"):
            return "/" + str(remote).lstrip("/")
        home = self.roots()["home"]
        return home + str(remote)[1:]

    def upload_dir(self, local_dir: str | os.PathLike, remote_dir: str, *, overwrite: bool = False,
                   progress: Any = None, **kwargs: Any) -> builtins.list[dict[str, Any]]:
        """Upload a directory tree, file by file (each resumable)."""
        local_dir = os.fspath(local_dir)
        results = []
        self.mkdir(remote_dir, parents=True)
        for dirpath, dirnames, filenames in os.walk(local_dir):
            rel = os.path.relpath(dirpath, local_dir)
            base = remote_dir.rstrip("/") + ("" if rel == "." else "/" + rel.replace(os.sep, "/"))
            for d in sorted(dirnames):
                self.mkdir(f"{base}/{d}", parents=True)
            for name in sorted(filenames):
                results.append(self.upload(os.path.join(dirpath, name), f"{base}/{name}", overwrite=overwrite,
                                           progress=progress, **kwargs))
        return results

    # -- downloads -----------------------------------------------------------------------

    def download(self, remote: str, local: str | os.PathLike, *, progress: Any = None, resume: bool = True,
                 verify: bool = False, retry_for: float | None = None) -> dict[str, Any]:
        """Download ``remote`` to ``local`` through ``local + ".part"``, continuing an
        earlier attempt with Range when the file on the edge is unchanged (its ETag).
        Returns ``{path, size, resumed_from, received}``."""
        local = os.fspath(local)
        if os.path.isdir(local):
            local = os.path.join(local, os.path.basename(str(remote).rstrip("/")))
        part, meta_path = local + ".part", local + ".part.json"
        etag = None
        if resume and os.path.exists(part) and os.path.exists(meta_path):
            try:
                with open(meta_path) as f:
                    meta = json.load(f)
                if meta.get("remote") == str(remote):
                    etag = meta.get("etag")
            except (OSError, ValueError):
                etag = None
        if etag is None and os.path.exists(part):
            os.remove(part)
        have = os.path.getsize(part) if os.path.exists(part) else 0
        resumed_from, received, total = have, 0, None
        report: Progress | None = None
        close: Callable[[], None] = lambda: None  # noqa: E731
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        failures = 0
        try:
            while True:
                headers = {}
                if have and etag:
                    headers = {"Range": f"bytes={have}-", "If-Range": etag}
                try:
                    with self.edge.bridge._http.stream("GET", self._url(remote_route("download", remote)),
                                                       headers=headers, timeout=300) as r:
                        if r.status_code >= 400 and r.status_code != 416:
                            r.read()
                            from ...client.bridge import _error_from

                            raise _error_from(r)
                        if r.status_code == 416:  # already complete
                            total = have
                            break
                        if r.status_code == 200:
                            have = 0
                            resumed_from = 0
                        etag = r.headers.get("etag")
                        total = int(r.headers.get("x-edge-size") or r.headers.get("content-length") or 0)
                        with open(meta_path, "w") as f:
                            json.dump({"remote": str(remote), "etag": etag}, f)
                        if report is None:
                            report, close = _progress(progress, total, os.path.basename(local))
                        with open(part, "r+b" if have else "wb") as out:
                            out.seek(have)
                            for piece in r.iter_bytes(1024 * 1024):
                                out.write(piece)
                                have += len(piece)
                                received += len(piece)
                                if report:
                                    report(have, total)
                    if have >= total:
                        break
                    raise ConnectionFailed(0, "truncated", f"the download stopped at {have} of {total} bytes")
                except (httpx.TransportError, *RETRYABLE) as exc:
                    delay = backoff_delay(failures, base=0.5, cap=10.0)
                    failures += 1
                    if time.monotonic() + delay > deadline:
                        if isinstance(exc, BridgeError):
                            raise
                        raise ConnectionFailed(0, "connection_failed", str(exc)) from exc
                    time.sleep(getattr(exc, "retry_after", None) or delay)
        finally:
            close()
        os.replace(part, local)
        try:
            os.remove(meta_path)
        except FileNotFoundError:
            pass
        result = {"path": local, "size": total, "resumed_from": resumed_from, "received": received}
        if verify:
            remote_sum = self.checksum(remote)
            local_sum = file_sha256(local)
            if remote_sum != local_sum:
                raise BridgeError(0, "checksum_mismatch", f"{local} has SHA-256 {local_sum}, the edge's file "
                                  f"{remote_sum}")
            result["sha256"] = local_sum
        return result

    def download_dir(self, remote_dir: str, local_dir: str | os.PathLike, *, archive: str = "tar",
                     progress: Any = None) -> dict[str, Any]:
        """Download a directory as a streamed tar and unpack it under ``local_dir`` (with
        tarfile's ``data`` filter: no absolute paths, no links out, no devices)."""
        local_dir = os.fspath(local_dir)
        os.makedirs(local_dir, exist_ok=True)
        received = 0
        report, close = _progress(progress, 0, os.path.basename(str(remote_dir).rstrip("/")))
        url = self._url(remote_route("download", remote_dir))
        try:
            with self.edge.bridge._http.stream("GET", url, params={"archive": archive}, timeout=600) as r:
                if r.status_code >= 400:
                    r.read()
                    from ...client.bridge import _error_from

                    raise _error_from(r)

                class _Reader(io.RawIOBase):
                    def __init__(self, it):
                        self.it, self.buf = it, b""

                    def readable(self):
                        return True

                    def readinto(self, b):
                        nonlocal received
                        while not self.buf:
                            try:
                                self.buf = next(self.it)
                            except StopIteration:
                                return 0
                            received += len(self.buf)
                            if report:
                                report(received, received)
                        n = min(len(b), len(self.buf))
                        b[:n] = self.buf[:n]
                        self.buf = self.buf[n:]
                        return n

                reader = io.BufferedReader(_Reader(r.iter_bytes(1024 * 1024)), 1024 * 1024)
                with tarfile.open(fileobj=reader, mode="r|*") as tar:
                    if not hasattr(tarfile, "data_filter"):
                        raise RuntimeError("download_dir needs tarfile's extraction filters (Python 3.9.17, "
                                           "3.10.12, 3.11.4 or later)")
                    # The "data" filter refuses absolute names, "..", links out and devices.
                    tar.extractall(local_dir, filter="data")
        finally:
            close()
        return {"path": local_dir, "received": received}

    # -- staging between edges -------------------------------------------------------------

    def copy_to(self, remote: str, dest: FilesClient, dest_path: str, *, overwrite: bool = False,
                chunk_size: int = DEFAULT_CHUNK, progress: Any = None,
                retry_for: float | None = None) -> dict[str, Any]:
        """Stage a file from this edge to another (``dest``, a files client of any edge
        this bridge serves, the same one too): ranged reads here, a tus upload there, no
        local copy. Resumable like :meth:`upload`: run it again and only what is missing
        moves. The source's SHA-256 (computed on its edge) is the upload's checksum."""
        info = self.stat(remote)
        if info["type"] not in ("file", "symlink"):
            raise ValueError(f"{remote} is not a file; stage directories file by file")
        size, etag = int(info["size"]), info.get("etag")
        digest = self.checksum(remote)
        dest_full = dest.stat_path(dest_path)
        upload = None
        for pending in dest._retrying(lambda: dest.pending_uploads(dest_full), retry_for=retry_for):
            if pending["length"] == size and pending.get("sha256") == digest:
                upload = pending
                break
        if upload is None:
            metadata = {"filename": os.path.basename(str(remote)), "sha256": digest}
            if overwrite:
                metadata["overwrite"] = "1"
            headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(size),
                       "Upload-Metadata": ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                                                   for k, v in metadata.items())}
            upload = dest._retrying(lambda: dest.call("POST", remote_route("upload", dest_path), headers=headers),
                                    retry_for=retry_for)
        upload_route = remote_route(f"uploads/{upload['id']}", upload.get("path") or dest_full)
        offset = resumed_from = upload.get("offset", 0)
        sent = 0
        report, close = _progress(progress, size, os.path.basename(str(remote)))
        source_url = self._url(remote_route("download", remote))
        try:
            while offset < size or (size == 0 and not upload.get("complete")):
                end = min(offset + chunk_size, size) - 1
                headers = {"Range": f"bytes={offset}-{end}"} if size else {}
                if etag:
                    headers["If-Range"] = etag

                def read(headers=headers):
                    return self.edge.bridge.request("GET", source_url, headers=headers, raw=True, timeout=300)

                piece = self._retrying(read, retry_for=retry_for)
                if size and piece.status_code != 206:
                    raise BridgeError(409, "source_changed", f"{remote} changed on its edge during the copy")
                data = piece.content

                def patch(data=data, at=offset):
                    return dest.edge.bridge.request(
                        "PATCH", dest._url(upload_route), content=data, raw=True, timeout=300,
                        headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(at),
                                 "Content-Type": "application/offset+octet-stream"})

                response = dest._retrying(patch, retry_for=retry_for)
                sent += len(data)
                offset = int(response.headers.get("upload-offset", offset + len(data)))
                if report:
                    report(offset, size)
                if size == 0:
                    break
        finally:
            close()
        return {"from": str(remote), "path": upload.get("path", dest_full), "size": size, "sha256": digest,
                "resumed_from": resumed_from, "sent": sent}

    def open(self, remote: str, mode: str = "rb", *, buffer_size: int = 4 * 1024 * 1024) -> io.BufferedReader[Any]:
        """A read-only, seekable file object over ``remote`` (ranged requests)."""
        if mode not in ("rb", "r"):
            raise ValueError("files.open supports reading only ('rb' or 'r')")
        raw = RemoteFile(self, remote)
        buffered = io.BufferedReader(raw, buffer_size)
        if mode == "r":
            return io.TextIOWrapper(buffered, encoding="utf-8")  # type: ignore[return-value]
        return buffered


class RemoteFile(io.RawIOBase):
    """A file on the edge read with Range requests; the ETag pins the version read."""

    def __init__(self, client: FilesClient, remote: str) -> None:
        self.client = client
        self.remote = remote
        info = client.stat(remote)
        if info["type"] not in ("file", "symlink"):
            raise IsADirectoryError(remote)
        self.size = int(info["size"])
        self.etag = info.get("etag")
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b: Any) -> int:
        if self.pos >= self.size:
            return 0
        end = min(self.pos + len(b), self.size) - 1
        headers = {"Range": f"bytes={self.pos}-{end}"}
        if self.etag:
            headers["If-Range"] = self.etag
        url = self.client._url(remote_route("download", self.remote))
        r = self.client._retrying(lambda: self.client.edge.bridge.request("GET", url, headers=headers, raw=True))
        if r.status_code != 206:
            raise OSError(f"{self.remote} changed on the edge while it was being read")
        data = r.content
        n = len(data)
        b[:n] = data
        self.pos += n
        return n
