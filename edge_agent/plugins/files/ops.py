"""Changes: mkdir, move, copy, remove, chmod and one-shot writes. Each works relative to a
verified directory descriptor and never follows a symlink in the entry it changes (see
paths.py). All of them block: the plugin runs them in worker threads."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import sys
from typing import Any

from ...plugin import HTTPError
from .paths import Roots, Target, check_name, os_error, refuse_special


def parse_mode(value: Any) -> int:
    """``"755"``, ``"0o755"``, ``"0755"`` or 493 → 0o755; at most 0o7777."""
    if isinstance(value, bool):
        raise HTTPError(400, "bad_mode", "mode must be an octal string such as \"755\" or a number")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise HTTPError(400, "bad_mode", f"mode {value!r} is not an octal number such as \"755\"") from None
    else:
        raise HTTPError(400, "bad_mode", "mode is required, as an octal string such as \"755\"")
    if not 0 <= mode <= 0o7777:
        raise HTTPError(400, "bad_mode", f"mode {value!r} is out of range (0 to 7777 octal)")
    return mode


def _exists(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def mkdir(roots: Roots, target: Target, *, parents: bool, mode: int = 0o777) -> dict[str, Any]:
    """Create a directory (and its missing parents, with ``parents``). An existing directory
    is fine with ``parents`` (like ``mkdir -p``), a 409 without."""
    if target.is_root:
        return {"path": target.path, "created": False}
    # Walk from the root down, each level opened and verified before the next is made.
    rel = target.path[len(target.root):].strip("/").split("/")
    fd = roots.open_dir(target.root)
    created = False
    shown = target.root.rstrip("/")
    try:
        for i, name in enumerate(rel):
            shown = f"{shown}/{name}"
            last = i == len(rel) - 1
            if not last and not parents:
                nfd = _open_sub(roots, fd, name, shown)
                os.close(fd)
                fd = nfd
                continue
            try:
                os.mkdir(name, mode if last else 0o777, dir_fd=fd)
                created = created or last
            except FileExistsError:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if last and not parents:
                    raise HTTPError(409, "exists", f"'{shown}' exists") from None
                if not stat.S_ISDIR(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                    raise HTTPError(409, "exists", f"'{shown}' exists and is not a directory") from None
            except OSError as exc:
                raise os_error(exc, shown) from None
            if not last:
                nfd = _open_sub(roots, fd, name, shown)
                os.close(fd)
                fd = nfd
    finally:
        os.close(fd)
    return {"path": target.path, "created": created}


def _open_sub(roots: Roots, dir_fd: int, name: str, shown: str) -> int:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        raise os_error(exc, shown) from None
    roots.check_fd(fd, shown)
    return fd


def remove(roots: Roots, target: Target, *, recursive: bool) -> dict[str, Any]:
    """Remove a file or symlink (the link itself), an empty directory, or with
    ``recursive`` a whole tree (``shutil.rmtree`` relative to the parent descriptor, which
    does not follow symlinks even if they are swapped in meanwhile)."""
    fd = roots.open_parent(target)
    try:
        st = _exists(fd, target.name)
        if st is None:
            raise HTTPError(404, "not_found", f"No such file or directory: {target.path}")
        try:
            if stat.S_ISDIR(st.st_mode):
                if recursive and sys.version_info >= (3, 11):
                    shutil.rmtree(target.name, dir_fd=fd)
                elif recursive:  # no dir_fd before 3.11: the verified parent's real path
                    shutil.rmtree(os.path.join(os.readlink(f"/proc/self/fd/{fd}"), target.name))
                else:
                    try:
                        os.rmdir(target.name, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno in (39, 66):  # ENOTEMPTY
                            raise HTTPError(409, "not_empty", f"'{target.path}' is a directory that is not empty; "
                                            "remove it with recursive=true") from None
                        raise
            else:
                os.unlink(target.name, dir_fd=fd)
        except OSError as exc:
            raise os_error(exc, target.path) from None
    finally:
        os.close(fd)
    return {"path": target.path, "removed": True, "type": "directory" if stat.S_ISDIR(st.st_mode) else "file"}


def chmod(roots: Roots, target: Target, mode: int) -> dict[str, Any]:
    """Change the mode of the entry itself; a symlink is refused (chmod would change what
    it points to)."""
    fd = roots.open_parent(target) if not target.is_root else None
    try:
        if fd is None:
            raise HTTPError(403, "root_protected", f"'{target.path}' is a root of this edge")
        try:
            pfd = os.open(target.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except OSError as exc:
            raise os_error(exc, target.path) from None
        try:
            st = os.fstat(pfd)
            if stat.S_ISLNK(st.st_mode):
                raise HTTPError(400, "symlink_refused", f"'{target.path}' is a symbolic link; change the mode of "
                                "what it points to instead")
            refuse_special(st, target.path)
            try:
                os.chmod(f"/proc/self/fd/{pfd}", mode)
            except OSError as exc:
                raise os_error(exc, target.path) from None
        finally:
            os.close(pfd)
    finally:
        if fd is not None:
            os.close(fd)
    return {"path": target.path, "mode": f"{mode:04o}", "permissions": stat.filemode((st.st_mode & ~0o7777) | mode)}


def _destination(roots: Roots, dest: Target, overwrite: bool) -> tuple[int, os.stat_result | None]:
    check_name(dest.name, dest.path)
    dfd = roots.open_parent(dest)
    existing = _exists(dfd, dest.name)
    if existing is not None and not overwrite:
        os.close(dfd)
        raise HTTPError(409, "exists", f"'{dest.path}' exists; pass overwrite=true to replace it")
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        os.close(dfd)
        raise HTTPError(409, "is_a_directory", f"'{dest.path}' is a directory; it is never replaced")
    return dfd, existing


def move(roots: Roots, src: Target, dest: Target, *, overwrite: bool, heavy_copy=None) -> dict[str, Any]:
    """Rename ``src`` to ``dest`` (the entry itself: a symlink moves as a symlink). Across
    file systems it is a copy, then a removal."""
    if dest.path == src.path or dest.path.startswith(src.path.rstrip("/") + "/"):
        raise HTTPError(400, "bad_request", f"cannot move '{src.path}' into itself")
    sfd = roots.open_parent(src)
    try:
        if _exists(sfd, src.name) is None:
            raise HTTPError(404, "not_found", f"No such file or directory: {src.path}")
        dfd, _ = _destination(roots, dest, overwrite)
        try:
            os.rename(src.name, dest.name, src_dir_fd=sfd, dst_dir_fd=dfd)
        except OSError as exc:
            if exc.errno != 18:  # EXDEV
                raise os_error(exc, src.path) from None
            os.close(dfd)
            dfd = -1
            result = copy(roots, src, dest, overwrite=overwrite)
            remove(roots, src, recursive=True)
            return {**result, "from": src.path, "moved": True, "copied_across_file_systems": True}
        finally:
            if dfd >= 0:
                os.close(dfd)
    finally:
        os.close(sfd)
    return {"from": src.path, "path": dest.path, "moved": True}


def _copy_fd(src_fd: int, dst_fd: int) -> int:
    total = 0
    try:
        while True:
            n = os.copy_file_range(src_fd, dst_fd, 64 * 1024 * 1024)
            if n == 0:
                return total
            total += n
    except (OSError, AttributeError):
        pass
    while True:
        block = os.read(src_fd, 4 * 1024 * 1024)
        if not block:
            return total
        os.write(dst_fd, block)
        total += len(block)


def copy(roots: Roots, src: Target, dest: Target, *, overwrite: bool) -> dict[str, Any]:
    """Copy a file or a directory tree (symlinks in a tree are copied as symlinks, special
    files skipped). The copy is made under a temporary name beside ``dest`` and renamed."""
    if dest.path == src.path or dest.path.startswith(src.path.rstrip("/") + "/"):
        raise HTTPError(400, "bad_request", f"cannot copy '{src.path}' into itself")
    real, st = roots.stat_real(src)
    refuse_special(st, src.path)
    dfd, _ = _destination(roots, dest, overwrite)
    temp = f".{dest.name[:100]}.{secrets.token_hex(6)}.copy"
    try:
        if stat.S_ISREG(st.st_mode):
            sfd, sst = roots.open_file(src)
            try:
                try:
                    out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  stat.S_IMODE(sst.st_mode) | 0o600, dir_fd=dfd)
                except OSError as exc:
                    raise os_error(exc, dest.path) from None
                try:
                    size = _copy_fd(sfd, out)
                except OSError as exc:
                    os.close(out)
                    os.unlink(temp, dir_fd=dfd)
                    raise os_error(exc, dest.path) from None
                os.fchmod(out, stat.S_IMODE(sst.st_mode))
                os.close(out)
            finally:
                os.close(sfd)
            entries = 1
        else:
            dir_real = os.readlink(f"/proc/self/fd/{dfd}")
            count = [0, 0]

            def ignore(d: str, names: list[str]) -> list[str]:
                skip = []
                for n in names:
                    try:
                        m = os.lstat(os.path.join(d, n)).st_mode
                    except OSError:
                        skip.append(n)
                        continue
                    if not (stat.S_ISREG(m) or stat.S_ISDIR(m) or stat.S_ISLNK(m)):
                        skip.append(n)
                        count[1] += 1
                    else:
                        count[0] += 1
                return skip

            try:
                shutil.copytree(real, os.path.join(dir_real, temp), symlinks=True, ignore=ignore)
            except (OSError, shutil.Error) as exc:
                shutil.rmtree(os.path.join(dir_real, temp), ignore_errors=True)
                detail = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else str(exc)
                raise HTTPError(403 if "ermission" in str(detail) else 500, "copy_failed",
                                f"copying '{src.path}' failed: {detail}") from None
            entries, size = count[0], None
        try:
            os.rename(temp, dest.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            raise os_error(exc, dest.path) from None
    finally:
        os.close(dfd)
    return {"from": src.path, "path": dest.path, "copied": True, "entries": entries, "bytes": size}


def put(roots: Roots, target: Target, data: bytes, *, overwrite: bool, sha256: str | None,
        umask: int) -> dict[str, Any]:
    """Write a whole file in one request: a temporary name beside it, then a rename."""
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and sha256.lower() != digest:
        raise HTTPError(422, "checksum_mismatch", f"the body's SHA-256 is {digest}, not {sha256}; nothing written")
    dfd, _ = _destination(roots, target, overwrite)
    temp = f".{target.name[:100]}.{secrets.token_hex(6)}.put"
    try:
        try:
            out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        except OSError as exc:
            raise os_error(exc, target.path) from None
        try:
            view, n = memoryview(data), 0
            while n < len(data):
                n += os.write(out, view[n:])
            os.fsync(out)
            os.fchmod(out, 0o666 & ~umask)
        except OSError as exc:
            os.close(out)
            os.unlink(temp, dir_fd=dfd)
            raise os_error(exc, target.path) from None
        os.close(out)
        try:
            os.rename(temp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            os.unlink(temp, dir_fd=dfd)
            raise os_error(exc, target.path) from None
    finally:
        os.close(dfd)
    return {"path": target.path, "size": len(data), "sha256": digest}
