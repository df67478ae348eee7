"""Downloads: single files with Range, ETag and Last-Modified; directories as streamed tar
or zip archives. Bodies are produced piece by piece (``Response.streamed``), so neither
the agent nor the bridge ever holds a whole file."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import mimetypes
import os
import re
import stat
import tarfile
import threading
import time
import zipfile
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from ...plugin import HTTPError, Request, Response
from .listing import etag
from .paths import Roots, Target

READ_BLOCK = 1024 * 1024
PIPE_BLOCK = 1024 * 1024
PIPE_DEPTH = 4
ARCHIVES = {"tar": ("application/x-tar", ".tar"), "tgz": ("application/gzip", ".tar.gz"),
            "zip": ("application/zip", ".zip")}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def disposition(name: str, *, inline: bool = False) -> str:
    """``Content-Disposition`` with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name) or "download"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def content_type(name: str) -> str:
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding or not guessed:
        return "application/octet-stream"
    if guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``bytes=`` range, None for the whole file.
    Several ranges are answered with the whole file (allowed by RFC 9110); an unsatisfiable
    range is a 416."""
    if not header:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None  # multiple or unknown units: ignore the header
    first, last = m.groups()
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or start > end:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> HTTPError:
    return HTTPError(416, "range_not_satisfiable", f"the file has {size} bytes",
                     headers={"content-range": f"bytes */{size}"})


def _not_modified(request: Request, tag: str, mtime: float) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        return any(t.strip() in (tag, "*", f"W/{tag}") for t in inm.split(","))
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            return int(mtime) <= parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def _range_applies(request: Request, tag: str, last_modified: str) -> bool:
    cond = request.headers.get("if-range")
    return cond is None or cond.strip() in (tag, last_modified)


async def _read_file(fd: int, start: int, length: int, pool: Executor | None) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    pos, end = start, start + length
    try:
        while pos < end:
            n = min(READ_BLOCK, end - pos)
            block = await loop.run_in_executor(pool, os.pread, fd, n, pos)
            if not block:
                return  # the file shrank: the body ends short and the client sees it
            pos += len(block)
            yield block
    finally:
        os.close(fd)


def file_response(roots: Roots, target: Target, request: Request, *, pool: Executor | None,
                  on_close=None) -> Response:
    """The download of one regular file (blocking: run it in a thread)."""
    fd, st = roots.open_file(target)
    tag = etag(st)
    last_modified = formatdate(st.st_mtime, usegmt=True)
    headers = {
        "etag": tag,
        "last-modified": last_modified,
        "accept-ranges": "bytes",
        "content-type": content_type(target.name),
        "content-disposition": disposition(target.name, inline=request.flag("inline")),
        "x-edge-size": str(st.st_size),
    }
    if _not_modified(request, tag, st.st_mtime):
        os.close(fd)
        return Response(304, b"", headers)
    size = st.st_size
    status, start, length = 200, 0, size
    try:
        rng = parse_range(request.headers.get("range"), size) if _range_applies(request, tag, last_modified) else None
    except HTTPError:
        os.close(fd)
        raise
    if rng is not None:
        start, end = rng
        status, length = 206, end - start + 1
        headers["content-range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD" or length == 0:
        os.close(fd)
        return Response(status, b"", headers)
    return Response.streamed(_closing(_read_file(fd, start, length, pool), on_close), length=length,
                             status=status, headers=headers)


async def _closing(source: AsyncGenerator[bytes, None], on_close) -> AsyncIterator[bytes]:
    try:
        async for piece in source:
            yield piece
    finally:
        await source.aclose()
        if on_close is not None:
            on_close()


# -- archives ----------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    """A write-only file that hands what is written to an asyncio queue, blocking the
    writer (a worker thread) while the queue is full: the archive is produced no faster
    than the client reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, stop: threading.Event) -> None:
        self.loop, self.queue, self.stop = loop, queue, stop
        self.buf = bytearray()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.stop.is_set():
            raise BrokenPipeError("the download was abandoned")
        self.buf += data
        if len(self.buf) >= PIPE_BLOCK:
            self.push()
        return len(data)

    def tell(self) -> int:  # zipfile asks where it is; a stream is where it has written to
        return self.written + len(self.buf)

    def push(self) -> None:
        if not self.buf:
            return
        block = bytes(self.buf)
        self.buf.clear()
        self.written += len(block)
        self.put(block)

    def put(self, item: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                fut.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:  # not the builtin TimeoutError before 3.11
                if self.stop.is_set():
                    fut.cancel()
                    raise BrokenPipeError("the download was abandoned") from None


def _walk(real: str, arc: str, skipped: list[str]):
    """(real path, archive name, lstat) of a tree, parents before children, no symlink
    followed."""
    stack = [(real, arc)]
    while stack:
        d_real, d_arc = stack.pop()
        try:
            with os.scandir(d_real) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(f"{d_arc}/: {exc.strerror}")
            continue
        for de in entries:
            try:
                st = de.stat(follow_symlinks=False)
            except OSError:
                continue
            name = f"{d_arc}/{de.name}"
            yield de.path, name, st
            if stat.S_ISDIR(st.st_mode):
                stack.append((de.path, name))


def _open_nofollow(path: str) -> tuple[int, os.stat_result] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd, st


def _write_tar(pipe: _Pipe, real: str, arc: str, compress: bool, skipped: list[str]) -> None:
    with tarfile.open(fileobj=pipe, mode="w|gz" if compress else "w|", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo(arc)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(top)
        for path, name, st in _walk(real, arc, skipped):
            mode = st.st_mode
            if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                info = tar.gettarinfo(path, arcname=name)
                tar.addfile(info)
            elif stat.S_ISREG(mode):
                opened = _open_nofollow(path)
                if opened is None:
                    skipped.append(f"{name}: cannot be read")
                    continue
                fd, _ = opened
                with os.fdopen(fd, "rb") as f:
                    info = tar.gettarinfo(arcname=name, fileobj=f)
                    tar.addfile(info, f)
            else:
                skipped.append(f"{name}: special file")
        if skipped:
            _add_note_tar(tar, arc, skipped)


def _add_note_tar(tar: tarfile.TarFile, arc: str, skipped: list[str]) -> None:
    note = ("These entries could not be put into the archive:\n" + "\n".join(skipped) + "\n").encode()
    info = tarfile.TarInfo(f"{arc}/.radical-edge-skipped.txt")
    info.size, info.mtime, info.mode = len(note), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(note))


def _write_zip(pipe: _Pipe, real: str, arc: str, skipped: list[str]) -> None:
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for path, name, st in _walk(real, arc, skipped):
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                info = zipfile.ZipInfo(name + "/", time.localtime(st.st_mtime)[:6])
                info.external_attr = (0o40000 | stat.S_IMODE(mode)) << 16 | 0x10
                zf.writestr(info, b"")
            elif stat.S_ISREG(mode):
                opened = _open_nofollow(path)
                if opened is None:
                    skipped.append(f"{name}: cannot be read")
                    continue
                fd, fst = opened
                info = zipfile.ZipInfo(name, time.localtime(max(fst.st_mtime, 315532800))[:6])
                info.external_attr = (0o100000 | stat.S_IMODE(fst.st_mode)) << 16
                info.file_size = fst.st_size
                with os.fdopen(fd, "rb") as f, zf.open(info, "w", force_zip64=True) as out:
                    while True:
                        block = f.read(READ_BLOCK)
                        if not block:
                            break
                        out.write(block)
            else:
                skipped.append(f"{name}: {'symbolic link' if stat.S_ISLNK(mode) else 'special file'}")
        if skipped:
            zf.writestr(f"{arc}/.radical-edge-skipped.txt",
                        "These entries could not be put into the archive:\n" + "\n".join(skipped) + "\n")


def archive_response(roots: Roots, target: Target, fmt: str, *, pool: Executor, on_close=None) -> Response:
    """A directory as a tar, tar.gz or zip stream, produced by a worker of ``pool`` (its
    length is not known in advance)."""
    if fmt not in ARCHIVES:
        raise HTTPError(400, "bad_request", f"archive must be one of {', '.join(ARCHIVES)}")
    real, st = roots.stat_real(target)
    if not stat.S_ISDIR(st.st_mode):
        raise HTTPError(400, "not_a_directory", f"'{target.path}' is not a directory")
    if not os.access(real, os.R_OK | os.X_OK):
        raise HTTPError(403, "permission_denied", f"Permission denied: {target.path}")
    ctype, ext = ARCHIVES[fmt]
    arc = target.name or "root"
    headers = {"content-type": ctype, "content-disposition": disposition(arc + ext),
               "x-edge-archive": fmt}
    return Response.streamed(_archive_stream(real, arc, fmt, pool, on_close), headers=headers)


async def _archive_stream(real: str, arc: str, fmt: str, pool: Executor, on_close) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=PIPE_DEPTH)
    stop = threading.Event()
    pipe = _Pipe(loop, queue, stop)
    done = object()
    skipped: list[str] = []

    def produce() -> None:
        try:
            if fmt == "zip":
                _write_zip(pipe, real, arc, skipped)
            else:
                _write_tar(pipe, real, arc, fmt == "tgz", skipped)
            pipe.push()
        except BrokenPipeError:
            return
        finally:
            if not stop.is_set():
                try:
                    pipe.put(done)
                except BrokenPipeError:
                    pass

    producer = loop.run_in_executor(pool, produce)
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            yield item
        await producer
    finally:
        stop.set()
        while not queue.empty():
            queue.get_nowait()
        if on_close is not None:
            on_close()
