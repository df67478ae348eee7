"""Reading without changing: directory listings (sorted, paged, cached for huge
directories), stat, name search bounded in time and count, head/tail and checksums."""

from __future__ import annotations

import builtins
import fnmatch
import functools
import grp
import hashlib
import os
import pwd
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ...plugin import HTTPError
from .paths import Roots, Target, file_type, os_error, refuse_special

MAX_PAGE = 5000
DEFAULT_PAGE = 500
SORT_KEYS = ("name", "size", "mtime", "type")
CHECKSUMS = ("sha256", "sha1", "md5", "sha512")
BLOCK = 4 * 1024 * 1024


# Owner and group names, looked up once per id (lru_cache is safe across the listing threads).
@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@functools.lru_cache(maxsize=4096)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def entry(name: str, path: str, st: os.stat_result, roots: Roots | None = None) -> dict[str, Any]:
    """One directory entry as the API shows it (``st`` from lstat)."""
    kind = file_type(st.st_mode)
    out: dict[str, Any] = {
        "name": name,
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mtime": st.st_mtime,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "permissions": stat.filemode(st.st_mode),
        "owner": user_name(st.st_uid),
        "group": group_name(st.st_gid),
    }
    if kind == "symlink":
        try:
            out["target"] = os.readlink(path)
        except OSError:
            out["target"] = None
        try:
            real = os.path.realpath(path)
            out["target_type"] = file_type(os.stat(real).st_mode)
            if roots is not None and not roots.contains_real(real):
                out["target_type"] = "outside"
        except OSError:
            out["target_type"] = "missing"
    return out


# -- listings ----------------------------------------------------------------------------


@dataclass
class _Snapshot:
    """A directory's entries with their lstat, kept while the directory is unchanged."""

    key: tuple[int, int, int]  # (dev, ino, mtime_ns) of the directory
    taken: float
    rows: list[tuple[str, os.stat_result | None]]
    # Orders already computed, by (sort, order, hidden, dirs_first): pages after the
    # first cost a slice, not a sort of the whole directory.
    orders: dict[tuple[str, str, bool, bool], list[tuple[str, os.stat_result | None]]] = field(default_factory=dict)


class Lister:
    """Listings of directories of any size. The full entry list (with lstat) of large
    directories is kept for ``ttl`` seconds, keyed by the directory's mtime, so paging
    through 100,000 entries costs one scan, not one per page."""

    def __init__(self, roots: Roots, *, ttl: float = 30.0, cache_min: int = 2000, cache_dirs: int = 4) -> None:
        self.roots = roots
        self.ttl = ttl
        self.cache_min = cache_min
        self.cache_dirs = cache_dirs
        self._cache: OrderedDict[str, _Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def _scan(self, real: str, shown: str) -> list[tuple[str, os.stat_result | None]]:
        rows: list[tuple[str, os.stat_result | None]] = []
        try:
            with os.scandir(real) as it:
                for de in it:
                    try:
                        rows.append((de.name, de.stat(follow_symlinks=False)))
                    except OSError:
                        rows.append((de.name, None))  # vanished meanwhile
        except OSError as exc:
            raise os_error(exc, shown) from None
        return rows

    def rows(self, real: str, shown: str) -> list[tuple[str, os.stat_result | None]]:
        return self.snapshot(real, shown).rows

    def snapshot(self, real: str, shown: str) -> _Snapshot:
        try:
            dst = os.stat(real)
        except OSError as exc:
            raise os_error(exc, shown) from None
        key = (dst.st_dev, dst.st_ino, dst.st_mtime_ns)
        now = time.monotonic()
        with self._lock:
            snap = self._cache.get(real)
            if snap is not None and snap.key == key and now - snap.taken < self.ttl:
                self._cache.move_to_end(real)
                return snap
        snap = _Snapshot(key, now, self._scan(real, shown))
        if len(snap.rows) >= self.cache_min:
            with self._lock:
                self._cache[real] = snap
                self._cache.move_to_end(real)
                while len(self._cache) > self.cache_dirs:
                    self._cache.popitem(last=False)
        return snap

    def list(self, target: Target, *, offset: int = 0, limit: int = DEFAULT_PAGE, sort: str = "name",
             order: str = "asc", hidden: bool = True, dirs_first: bool = True) -> dict[str, Any]:
        real, st = self.roots.stat_real(target)
        if not stat.S_ISDIR(st.st_mode):
            refuse_special(st, target.path)
            raise HTTPError(400, "not_a_directory", f"'{target.path}' is not a directory")
        if sort not in SORT_KEYS:
            raise HTTPError(400, "bad_request", f"sort must be one of {', '.join(SORT_KEYS)}")
        if order not in ("asc", "desc"):
            raise HTTPError(400, "bad_request", "order must be asc or desc")
        if not offset >= 0:
            raise HTTPError(400, "bad_request", "offset must be ≥ 0")
        if not 1 <= limit <= MAX_PAGE:
            raise HTTPError(400, "bad_request", f"limit must be between 1 and {MAX_PAGE}")
        snap = self.snapshot(real, target.path)
        ordered = snap.orders.get((sort, order, hidden, dirs_first))
        if ordered is None:
            ordered = self._order(snap.rows, sort, order, hidden, dirs_first)
            snap.orders[(sort, order, hidden, dirs_first)] = ordered
        page = ordered[offset:offset + limit]
        base = target.path.rstrip("/")
        entries = []
        for name, est in page:
            path = f"{base}/{name}"
            if est is None:
                entries.append({"name": name, "path": path, "type": "missing"})
            else:
                entries.append(entry(name, path, est, self.roots))
        total = len(ordered)
        nxt = offset + len(page)
        return {
            "path": target.path,
            "real_path": real,
            "parent": None if target.is_root else target.parent,
            "entries": entries,
            "total": total,
            "offset": offset,
            "limit": limit,
            "next_offset": nxt if nxt < total else None,
            "sort": sort,
            "order": order,
        }

    @staticmethod
    def _order(rows: builtins.list[tuple[str, os.stat_result | None]], sort: str, order: str, hidden: bool,
               dirs_first: bool) -> builtins.list[tuple[str, os.stat_result | None]]:
        if not hidden:
            rows = [r for r in rows if not r[0].startswith(".")]
        rev = order == "desc"

        def is_dir(r: tuple[str, os.stat_result | None]) -> bool:
            return r[1] is not None and stat.S_ISDIR(r[1].st_mode)

        keys = {
            "name": lambda r: r[0],
            "size": lambda r: (r[1].st_size if r[1] else -1, r[0]),
            "mtime": lambda r: (r[1].st_mtime if r[1] else 0.0, r[0]),
            "type": lambda r: (file_type(r[1].st_mode) if r[1] else "", r[0]),
        }
        ordered = sorted(rows, key=keys[sort], reverse=rev)
        if dirs_first:
            ordered = [r for r in ordered if is_dir(r)] + [r for r in ordered if not is_dir(r)]
        return ordered


def stat_target(roots: Roots, target: Target) -> dict[str, Any]:
    st = roots.lstat(target)
    out = entry(target.name or "/", target.path, st, roots)
    out["root"] = target.root
    out["is_root"] = target.is_root
    if stat.S_ISREG(st.st_mode):
        out["etag"] = etag(st)
    if stat.S_ISLNK(st.st_mode) and out.get("target_type") not in ("outside", "missing"):
        real, rst = roots.stat_real(target)
        out["real_path"] = real
        out["size"] = rst.st_size if stat.S_ISREG(rst.st_mode) else out["size"]
    return out


# -- search ------------------------------------------------------------------------------


def find(roots: Roots, target: Target, pattern: str, *, max_results: int, timeout: float,
         kind: str | None = None, hidden: bool = True) -> dict[str, Any]:
    """Entries under ``target`` whose name matches the glob ``pattern``. Walks without
    following symlinks; stops at ``max_results`` matches or after ``timeout`` seconds and
    says which."""
    real, st = roots.stat_real(target)
    if not stat.S_ISDIR(st.st_mode):
        raise HTTPError(400, "not_a_directory", f"'{target.path}' is not a directory")
    deadline = time.monotonic() + timeout
    matches: list[dict[str, Any]] = []
    stack = [(real, target.path.rstrip("/") or "/")]
    scanned = skipped = 0
    reason = None
    casefold = pattern == pattern.lower()
    while stack and reason is None:
        dir_real, dir_shown = stack.pop()
        try:
            it = os.scandir(dir_real)
        except OSError:
            skipped += 1
            continue
        with it:
            for de in it:
                scanned += 1
                if scanned % 512 == 0 and time.monotonic() > deadline:
                    reason = "timeout"
                    break
                if not hidden and de.name.startswith("."):
                    continue
                try:
                    est = de.stat(follow_symlinks=False)
                except OSError:
                    continue
                shown = f"{dir_shown.rstrip('/')}/{de.name}"
                if stat.S_ISDIR(est.st_mode):
                    stack.append((de.path, shown))
                name = de.name.lower() if casefold else de.name
                if fnmatch.fnmatchcase(name, pattern) and (kind is None or file_type(est.st_mode) == kind):
                    matches.append({"path": shown, "name": de.name, "type": file_type(est.st_mode),
                                    "size": est.st_size, "mtime": est.st_mtime})
                    if len(matches) >= max_results:
                        reason = "max_results"
                        break
    return {"path": target.path, "pattern": pattern, "matches": matches, "truncated": reason is not None,
            "reason": reason, "scanned": scanned, "unreadable_directories": skipped}


# -- content -----------------------------------------------------------------------------


def checksum(roots: Roots, target: Target, algorithm: str) -> dict[str, Any]:
    if algorithm not in CHECKSUMS:
        raise HTTPError(400, "bad_request", f"algorithm must be one of {', '.join(CHECKSUMS)}")
    fd, st = roots.open_file(target)
    h = hashlib.new(algorithm)
    size = 0
    try:
        while True:
            block = os.read(fd, BLOCK)
            if not block:
                break
            h.update(block)
            size += len(block)
    except OSError as exc:
        raise os_error(exc, target.path) from None
    finally:
        os.close(fd)
    return {"path": target.path, "algorithm": algorithm, "digest": h.hexdigest(), "size": size, "etag": etag(st)}


def head_tail(roots: Roots, target: Target, *, lines: int, tail: bool, max_bytes: int) -> dict[str, Any]:
    """The first or last ``lines`` lines of a text file, at most ``max_bytes`` bytes."""
    fd, st = roots.open_file(target)
    try:
        size = st.st_size
        if not tail:
            data = os.pread(fd, max_bytes, 0)
            chunks = data.split(b"\n")
            truncated = len(chunks) > lines + 1 or (len(data) >= max_bytes and len(chunks) <= lines)
            text_lines = chunks[:lines]
            if len(chunks) == lines + 1 and chunks[-1] == b"":
                truncated = False
        else:
            start = max(0, size - max_bytes)
            data = os.pread(fd, size - start, start)
            if data.endswith(b"\n"):
                data = data[:-1]
            chunks = data.split(b"\n")
            text_lines = chunks[-lines:]
            truncated = (start > 0 and len(chunks) <= lines) or len(chunks) > lines
    except OSError as exc:
        raise os_error(exc, target.path) from None
    finally:
        os.close(fd)
    if b"\x00" in data[:8192]:
        raise HTTPError(415, "binary_file", f"'{target.path}' looks like a binary file (it contains NUL bytes)")
    return {"path": target.path, "size": size, "lines": [c.decode("utf-8", "replace") for c in text_lines],
            "truncated": bool(truncated), "from_end": tail}
