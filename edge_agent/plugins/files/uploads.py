"""Resumable uploads, speaking tus 1.0.0 (https://tus.io/protocols/resumable-upload).

Why tus: it is what upload tools already speak (tus-js-client and Uppy in browsers,
tuspy, tusd-compatible CLIs), it needs nothing but HTTP requests small enough for the
bridge's body limit, and its one rule, "ask the server how much arrived (HEAD), then send
the rest from there (PATCH with Upload-Offset)", is exactly what survives a dropped
connection, a restarted agent or a restarted bridge.

* ``POST upload/{path}`` (creation, and creation-with-upload): ``Upload-Length`` and
  ``Upload-Metadata`` (``sha256`` hex digest of the whole file, optional; ``overwrite``;
  ``filename`` ignored: the path is in the URL). Answers 201 with a ``Location`` relative
  to the creation URL and the ``Upload-Offset``.
* ``HEAD uploads/{id}``: ``Upload-Offset`` and ``Upload-Length``. ``GET`` answers JSON.
* ``PATCH uploads/{id}`` with ``Upload-Offset`` (must equal the server's: else 409 with the
  right one) and optionally ``Upload-Checksum`` (sha1/sha256/md5 of this chunk; 460 if it
  does not match). 204 with the new offset. The PATCH that completes the upload may carry
  the whole file's digest as ``Repr-Digest: sha-256=:BASE64:`` (RFC 9530, as the IETF's
  resumable uploads draft does): a client that hashes while it sends need not know the
  digest when it creates the upload. When both are given they must agree.
* ``GET uploads/{id}?prefix=sha256`` adds ``prefix_sha256``, the digest of the bytes received
  so far, so that a client resuming an upload whose digest it did not announce can check
  that they are the start of its file before it sends the rest.
* ``DELETE uploads/{id}``: abandon (tus termination).

The bytes go to a hidden temporary file in the target's directory
(``.NAME.ID.upload``, mode 0600, created with ``O_EXCL|O_NOFOLLOW`` relative to the
verified directory), and the upload's record to the agent's state directory, so both
survive an agent restart; the offset is the temporary file's size. When the last byte is
in, the file is flushed to disk, its SHA-256 compared with the one announced (422
``checksum_mismatch`` and the upload is discarded if it differs), and it is renamed to its
final name in the same directory: the file appears complete or not at all.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...plugin import Caller, HTTPError
from .paths import Roots, Target, check_name, os_error

log = logging.getLogger("edge_agent.plugins.files")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHUNK_CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
HASH_BLOCK = 4 * 1024 * 1024


def parse_repr_digest(header: str | None) -> str | None:
    """The sha-256 of ``Repr-Digest`` (RFC 9530: ``sha-256=:BASE64:``, other algorithms
    ignored) as hex; None without one; 400 when it is malformed."""
    if not header:
        return None
    for member in header.split(","):
        key, _, value = member.strip().partition("=")
        if key.strip().lower() != "sha-256":
            continue
        value = value.strip()
        try:
            raw = base64.b64decode(value[1:-1], validate=True) if value[:1] == value[-1:] == ":" else b""
        except binascii.Error:
            raw = b""
        if len(raw) != 32:
            raise HTTPError(400, "bad_digest", "Repr-Digest sha-256 must be :BASE64: of 32 bytes",
                            headers=tus_headers())
        return raw.hex()
    return None


def parse_metadata(header: str | None) -> dict[str, str]:
    """tus ``Upload-Metadata``: comma-separated ``key base64value`` pairs."""
    out: dict[str, str] = {}
    if not header:
        return out
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value.strip() else ""
        except (binascii.Error, UnicodeDecodeError):
            raise HTTPError(400, "bad_metadata", f"Upload-Metadata value of '{key}' is not base64 UTF-8") from None
    return out


def tus_headers(**extra: Any) -> dict[str, str]:
    headers = {"tus-resumable": TUS_VERSION, "cache-control": "no-store"}
    headers.update({k.replace("_", "-"): str(v) for k, v in extra.items()})
    return headers


@dataclass
class UploadRecord:
    id: str
    uid: int | None
    user: str
    path: str  # the final path, as the caller named it (lexically checked)
    directory: str  # its directory, real path at creation
    temp: str  # the temporary file's name in that directory
    length: int
    sha256: str | None
    overwrite: bool
    created: float
    touched: float = field(default_factory=time.time)
    # What the client says identifies its local file (metadata ``source``, e.g. size and
    # mtime), so that it finds the upload to resume without hashing its file first.
    source: str | None = None

    def describe(self, offset: int) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "length": self.length, "offset": offset,
                "sha256": self.sha256, "source": self.source, "created": self.created, "touched": self.touched,
                "complete": offset >= self.length}


class _Hasher:
    """An upload's writes and running SHA-256, behind its PATCH answers (kept in memory;
    rebuilt from the temporary file after an agent restart).

    A PATCH is answered once its chunk is queued: a worker writes it (to a duplicate of the
    temporary file's descriptor) and hashes it while the next chunk travels, each job after
    the previous one (FIFO pool: that one runs or has run), at most one chunk waiting per
    upload. Whatever reads the upload first waits for them (:meth:`drain`: the offset, the
    prefix digest, the last chunk). A write that fails truncates the file to what was
    written and fails the upload's next request; the client then asks the offset and sends
    from there, as it does when an agent killed before its queued writes ran left the file
    shorter than it was told."""

    WAITING = 1  # chunks queued per upload: one is written while the next arrives

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.h = hashlib.sha256()
        self.upto = 0  # bytes accepted (written and hashed, or queued to be)
        self.pool = pool
        self.last: Future | None = None
        self.queued: deque[Future] = deque()
        self.error: HTTPError | None = None

    def feed(self, data: bytes, *, fd: int = -1, at: int = 0, path: str = "") -> None:
        """Queue ``data``: written at ``at`` through a duplicate of ``fd`` (none: hashed
        only), then hashed."""
        while len(self.queued) >= self.WAITING:
            self.queued.popleft().result()
        job = self.pool.submit(self._update, self.last, os.dup(fd) if fd >= 0 else -1, at, data, path)
        self.last = job
        self.queued.append(job)
        self.upto += len(data)

    def _update(self, previous: Future | None, fd: int, at: int, data: bytes, path: str) -> None:
        try:
            if previous is not None:
                previous.result()
            if self.error is not None:
                return
            if fd >= 0:
                view, written = memoryview(data), 0
                try:
                    while written < len(data):
                        written += os.pwrite(fd, view[written:], at + written)
                except OSError as exc:
                    try:
                        os.ftruncate(fd, at + written)
                    except OSError:
                        pass
                    self.error = os_error(exc, path)
                    return
            self.h.update(data)
        finally:
            if fd >= 0:
                os.close(fd)

    def idle(self) -> bool:
        return self.last is None or self.last.done()

    def drain(self) -> None:
        """Wait until everything queued is written and hashed."""
        if self.last is not None:
            self.last.result()
        self.queued.clear()

    def hexdigest(self) -> str:
        self.drain()
        return self.h.hexdigest()


class Uploads:
    """The uploads in progress on this agent."""

    def __init__(self, roots: Roots, state_dir: Path, *, max_upload: int, max_pending_per_user: int,
                 expiry: float, umask: int) -> None:
        self.roots = roots
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_upload = max_upload
        self.max_pending_per_user = max_pending_per_user
        self.expiry = expiry
        self.umask = umask
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._hashers: dict[str, _Hasher] = {}
        self._hash_pool = ThreadPoolExecutor(2, thread_name_prefix="files-hash")

    # -- records -------------------------------------------------------------------------

    def _record_path(self, upload_id: str) -> Path:
        return self.dir / f"{upload_id}.json"

    def _save(self, rec: UploadRecord) -> None:
        tmp = self.dir / f".{rec.id}.json.tmp"
        tmp.write_text(json.dumps(asdict(rec)))
        os.replace(tmp, self._record_path(rec.id))

    def _load(self, upload_id: str) -> UploadRecord | None:
        if not _ID.match(upload_id):
            return None
        try:
            data = json.loads(self._record_path(upload_id).read_text())
            return UploadRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def records(self) -> list[UploadRecord]:
        out = []
        for p in self.dir.glob("*.json"):
            rec = self._load(p.stem)
            if rec is not None:
                out.append(rec)
        return out

    def get(self, upload_id: str, caller: Caller) -> UploadRecord:
        """The caller's upload (another user's is a 404, as if it did not exist)."""
        rec = self._load(upload_id)
        if rec is None or not (caller.sees_everything or (caller.uid is not None and caller.uid == rec.uid)):
            raise HTTPError(404, "unknown_upload", f"no upload '{upload_id}' (finished, abandoned, expired or "
                            "never created)")
        return rec

    def _dir_fd(self, rec: UploadRecord) -> int:
        return self.roots.open_dir(rec.directory, os.path.dirname(rec.path))

    def offset(self, rec: UploadRecord) -> int:
        hasher = self._hashers.get(rec.id)
        if hasher is not None:
            hasher.drain()  # what was accepted is written
        fd = self._dir_fd(rec)
        try:
            return os.stat(rec.temp, dir_fd=fd, follow_symlinks=False).st_size
        except FileNotFoundError:
            raise HTTPError(410, "upload_lost", f"the partial file of upload '{rec.id}' is gone; start again") from None
        finally:
            os.close(fd)

    def mine(self, caller: Caller, path: str | None = None) -> list[dict[str, Any]]:
        out = []
        for rec in self.records():
            if caller.uid is None or rec.uid != caller.uid:
                continue
            if path is not None and rec.path != path:
                continue
            try:
                out.append(rec.describe(self.offset(rec)))
            except HTTPError:
                continue
        return sorted(out, key=lambda r: r["created"])

    # -- creation ------------------------------------------------------------------------

    def create(self, target: Target, caller: Caller, *, length: int, metadata: dict[str, str]) -> UploadRecord:
        if length < 0:
            raise HTTPError(400, "bad_request", "Upload-Length must be ≥ 0")
        if self.max_upload and length > self.max_upload:
            raise HTTPError(413, "upload_too_large", f"{length} bytes is more than this edge accepts in one file "
                            f"({self.max_upload} bytes, agent option files.max_upload)",
                            headers=tus_headers(tus_max_size=self.max_upload))
        sha = metadata.get("sha256")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
            raise HTTPError(400, "bad_metadata", "metadata sha256 must be 64 hex digits")
        overwrite = metadata.get("overwrite", "").lower() in ("1", "true", "yes")
        source = metadata.get("source")
        if source is not None and len(source) > 200:
            raise HTTPError(400, "bad_metadata", "metadata source is at most 200 characters")
        check_name(target.name, target.path)
        pending = sum(1 for r in self.records() if r.uid == caller.uid)
        if pending >= self.max_pending_per_user:
            raise HTTPError(429, "too_many_uploads", f"you have {pending} unfinished uploads on this edge (limit "
                            f"{self.max_pending_per_user}); finish or abandon some (GET uploads lists them)")
        fd = self.roots.open_parent(target)
        try:
            self._refuse_existing(fd, target, overwrite)
            vfs = os.fstatvfs(fd)
            if vfs.f_bavail * vfs.f_frsize < length:
                raise HTTPError(507, "no_space", f"{target.parent} has {vfs.f_bavail * vfs.f_frsize} bytes free, "
                                f"the upload needs {length}")
            upload_id = secrets.token_urlsafe(18)
            temp = f".{target.name[:100]}.{upload_id[:12]}.upload"
            try:
                tfd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=fd)
            except OSError as exc:
                raise os_error(exc, target.path) from None
            os.close(tfd)
            real_dir = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else \
                os.path.realpath(target.parent)
        finally:
            os.close(fd)
        now = time.time()
        rec = UploadRecord(id=upload_id, uid=caller.uid, user=caller.user, path=target.path, directory=real_dir,
                           temp=temp, length=length, sha256=sha.lower() if sha else None, overwrite=overwrite,
                           created=now, touched=now, source=source)
        self._save(rec)
        return rec

    def _refuse_existing(self, dir_fd: int, target: Target, overwrite: bool) -> None:
        try:
            st = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc, target.path) from None
        if stat.S_ISDIR(st.st_mode):
            raise HTTPError(409, "is_a_directory", f"'{target.path}' is a directory")
        if not overwrite:
            raise HTTPError(409, "exists", f"'{target.path}' exists; upload with overwrite to replace it")

    # -- data ----------------------------------------------------------------------------

    def write(self, rec: UploadRecord, offset: int, data: bytes, checksum: str | None,
              digest: str | None = None) -> tuple[int, str | None]:
        """Append ``data`` at ``offset``; returns (new offset, sha256 hex if the upload
        completed). ``digest``: the whole file's sha256 hex (``Repr-Digest``), checked if
        this completes it. Blocking: run it in a worker thread."""
        if checksum:
            algo, _, value = checksum.strip().partition(" ")
            fn = CHUNK_CHECKSUMS.get(algo.lower())
            if fn is None:
                raise HTTPError(400, "bad_checksum_algorithm", f"Upload-Checksum algorithm '{algo}' is not one of "
                                f"{', '.join(CHUNK_CHECKSUMS)}", headers=tus_headers())
            try:
                expected = base64.b64decode(value.strip(), validate=True)
            except binascii.Error:
                raise HTTPError(400, "bad_checksum", "Upload-Checksum value is not base64") from None
            if fn(data).digest() != expected:
                raise HTTPError(460, "checksum_mismatch", "this chunk does not match its Upload-Checksum; send it "
                                "again", headers=tus_headers())
        with self._claimed(rec):
            return self._write(rec, offset, data, digest)

    @contextlib.contextmanager
    def _claimed(self, rec: UploadRecord) -> Iterator[None]:
        """One request at a time per upload (another at once: 409 ``upload_busy``)."""
        with self._lock:
            if rec.id in self._busy:
                raise HTTPError(409, "upload_busy", f"another request is writing upload '{rec.id}'",
                                headers=tus_headers())
            self._busy.add(rec.id)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(rec.id)

    def prefix_sha256(self, rec: UploadRecord) -> tuple[int, str]:
        """(offset, sha256 hex of the bytes received so far)."""
        with self._claimed(rec):
            fd = self._dir_fd(rec)
            try:
                tfd = os.open(rec.temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise HTTPError(410, "upload_lost", f"the partial file of upload '{rec.id}' is gone; start "
                                "again") from None
            finally:
                os.close(fd)
            try:
                hasher = self._hasher(rec, tfd)
                hasher.drain()
                if hasher.error is not None:
                    self._hashers.pop(rec.id, None)
                    raise hasher.error
                return hasher.upto, hasher.h.copy().hexdigest()
            finally:
                os.close(tfd)

    def _write(self, rec: UploadRecord, offset: int, data: bytes, digest: str | None) -> tuple[int, str | None]:
        fd = self._dir_fd(rec)
        try:
            try:
                tfd = os.open(rec.temp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise HTTPError(410, "upload_lost", f"the partial file of upload '{rec.id}' is gone; start "
                                "again") from None
            except OSError as exc:
                raise os_error(exc, rec.path) from None
            try:
                hasher = self._hasher(rec, tfd)
                current = hasher.upto
                if offset != current:
                    raise HTTPError(409, "offset_mismatch", f"Upload-Offset is {offset}, the upload has {current} "
                                    "bytes: continue from there", headers=tus_headers(upload_offset=current))
                if current + len(data) > rec.length:
                    raise HTTPError(400, "upload_too_long", f"{current + len(data)} bytes is more than the "
                                    f"{rec.length} announced", headers=tus_headers(upload_offset=current))
                hasher.feed(data, fd=tfd, at=current, path=rec.path)
                new = current + len(data)
                rec.touched = time.time()
                if new < rec.length:
                    self._save(rec)
                    return new, None
                hasher.drain()
                if hasher.error is not None:
                    self._hashers.pop(rec.id, None)
                    raise hasher.error
                return new, self._finish(rec, fd, tfd, hasher, digest)
            finally:
                os.close(tfd)
        finally:
            os.close(fd)

    def _hasher(self, rec: UploadRecord, tfd: int) -> _Hasher:
        """The upload's hasher; raises the error of a write that failed after its answer
        (once: the next request goes on from what the file holds)."""
        hasher = self._hashers.get(rec.id)
        if hasher is not None and hasher.error is None and not hasher.idle():
            return hasher  # writes queued: the file is shorter than what was accepted
        current = os.fstat(tfd).st_size
        if hasher is None or hasher.error is not None or hasher.upto != current:
            # After an agent restart, a failed write, or a change behind our back: hash what is there.
            if hasher is not None:
                self._hashers.pop(rec.id, None)
                hasher.drain()
                if hasher.error is not None:
                    raise hasher.error
            hasher = _Hasher(self._hash_pool)
            pos = 0
            while pos < current:
                block = os.pread(tfd, min(HASH_BLOCK, current - pos), pos)
                if not block:
                    break
                hasher.h.update(block)
                pos += len(block)
            hasher.upto = pos
            self._hashers[rec.id] = hasher
        return hasher

    def _finish(self, rec: UploadRecord, dir_fd: int, tfd: int, hasher: _Hasher, announced: str | None) -> str:
        digest = hasher.hexdigest()
        for expected in (rec.sha256, announced):
            if expected and digest != expected:
                self._discard(rec, dir_fd)
                raise HTTPError(422, "checksum_mismatch", f"the uploaded file's SHA-256 is {digest}, not the "
                                f"{expected} announced; the upload was discarded, start again")
        os.fsync(tfd)
        os.fchmod(tfd, 0o666 & ~self.umask)
        target = self.roots.target(rec.path)
        try:
            st = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise HTTPError(409, "is_a_directory", f"'{rec.path}' became a directory meanwhile; upload kept "
                                f"as {rec.temp}")
            if not rec.overwrite:
                raise HTTPError(409, "exists", f"'{rec.path}' was created meanwhile; the upload is kept (DELETE it, "
                                "or upload again with overwrite)")
        except FileNotFoundError:
            pass
        try:
            # rename() replaces a symlink at the final name itself; it never writes through it.
            os.rename(rec.temp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            raise os_error(exc, rec.path) from None
        self._forget(rec.id)
        return digest

    def _discard(self, rec: UploadRecord, dir_fd: int) -> None:
        try:
            os.unlink(rec.temp, dir_fd=dir_fd)
        except OSError:
            pass
        self._forget(rec.id)

    def _forget(self, upload_id: str) -> None:
        hasher = self._hashers.pop(upload_id, None)
        if hasher is not None:
            hasher.drain()
        try:
            self._record_path(upload_id).unlink()
        except FileNotFoundError:
            pass

    def abandon(self, rec: UploadRecord) -> None:
        try:
            fd = self._dir_fd(rec)
        except HTTPError:
            self._forget(rec.id)
            return
        try:
            self._discard(rec, fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._hash_pool.shutdown(wait=True)  # what the answers promised is written

    def sweep(self, now: float | None = None) -> int:
        """Abandon uploads untouched for longer than the expiry; returns how many."""
        now = time.time() if now is None else now
        n = 0
        for rec in self.records():
            if now - rec.touched > self.expiry:
                self.abandon(rec)
                n += 1
        for stale in self.dir.glob(".*.json.tmp"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        return n
