"""Confinement: which paths the files plugin serves, and opening them without escaping.

Every path a caller names goes through :class:`Roots`:

1. **Lexically** (no file system access): a string without NUL, at most 4096 bytes,
   absolute or starting with ``~`` (the agent user's home); ``..`` anywhere is a 400
   ``bad_path`` (refused, not normalised: a caller who writes it means to climb); ``.`` and
   empty segments are dropped. The result must lie under a configured root (403
   ``outside_roots``).
2. **Really**: reads resolve symlinks (``realpath``) and the target must still lie under a
   root (403 ``symlink_escape``); the file is checked to be a regular file or directory
   *before* it is opened (device files, FIFOs and sockets are a 400 ``special_file``: opening
   a tape or a FIFO has effects of its own), opened, checked again on the descriptor, and
   the descriptor's real path is compared with the roots once more (``/proc/self/fd``), so a
   symlink swapped in between the check and the open cannot lead out.
3. **Writes** never follow a symlink in the last component: the parent directory is opened
   (and verified like a read), and the entry is created, renamed, removed or changed
   relative to that descriptor with ``O_NOFOLLOW`` / ``follow_symlinks=False``. A symlink
   where a file is to be written is a 403 ``symlink_refused``.

The agent runs as its user, so permissions are the file system's: an ``EACCES`` is a 403
``permission_denied`` with the OS's message.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from ...plugin import HTTPError

MAX_PATH = 4096
_PROC_FD = "/proc/self/fd"


def default_roots() -> list[str]:
    """``$HOME`` and, where set, the site's scratch directory (``$SCRATCH``, or the names
    some centres use instead)."""
    roots = [os.path.expanduser("~")]
    for var in ("SCRATCH", "PSCRATCH", "SCRATCHDIR", "WORK"):
        value = os.environ.get(var)
        if value and os.path.isabs(value) and os.path.isdir(value):
            roots.append(value)
    return roots


def os_error(exc: OSError, shown: str) -> HTTPError:
    """The HTTP answer for an OS error on ``shown`` (the caller's spelling of the path)."""
    text = f"{exc.strerror or exc}: {shown}"
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return HTTPError(403, "permission_denied", text)
    if code == errno.ENOENT:
        return HTTPError(404, "not_found", text)
    if code == errno.EEXIST:
        return HTTPError(409, "exists", text)
    if code in (errno.ENOTEMPTY, errno.EBUSY):
        return HTTPError(409, "not_empty" if code == errno.ENOTEMPTY else "busy", text)
    if code == errno.ENOTDIR:
        return HTTPError(400, "not_a_directory", text)
    if code == errno.EISDIR:
        return HTTPError(400, "is_a_directory", text)
    if code == errno.ELOOP:
        return HTTPError(403, "symlink_refused", f"{shown} is a symbolic link; the files plugin never writes "
                         "through one")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return HTTPError(507, "no_space", text)
    if code == errno.ENAMETOOLONG:
        return HTTPError(400, "bad_path", text)
    if code == errno.EXDEV:
        return HTTPError(409, "cross_device", text)
    return HTTPError(500, "os_error", text)


@dataclass(frozen=True)
class Target:
    """A path that passed the lexical checks: ``path`` absolute and normalised, ``shown``
    as the caller may see it (the same, today), ``root`` the root it lies under."""

    path: str
    root: str

    @property
    def parent(self) -> str:
        return os.path.dirname(self.path)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def is_root(self) -> bool:
        return self.path == self.root


class Roots:
    """The directories the plugin serves. Each is kept as configured and as its real path."""

    def __init__(self, roots: Iterable[str]) -> None:
        lexical: list[str] = []
        for root in roots:
            root = os.path.normpath(os.path.expanduser(str(root)))
            if not os.path.isabs(root):
                raise ValueError(f"files root {root!r} is not an absolute path")
            if root not in lexical:
                lexical.append(root)
        if not lexical:
            raise ValueError("the files plugin needs at least one root directory")
        self.lexical = lexical
        self.real = [os.path.realpath(r) for r in lexical]
        self.home = os.path.normpath(os.path.expanduser("~"))

    def describe(self) -> list[dict[str, object]]:
        out = []
        for lex, real in zip(self.lexical, self.real):
            out.append({"path": lex, "real_path": real, "exists": os.path.isdir(real)})
        return out

    # -- lexical -------------------------------------------------------------------------

    def target(self, raw: str | None) -> Target:
        """Check ``raw`` lexically (see the module docstring) and find its root."""
        if raw is None or raw == "":
            raise HTTPError(400, "bad_path", "a path is required")
        if not isinstance(raw, str):
            raise HTTPError(400, "bad_path", "a path must be a string")
        if "\x00" in raw:
            raise HTTPError(400, "bad_path", "a path may not contain NUL bytes")
        if len(raw.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise HTTPError(400, "bad_path", f"a path may not be longer than {MAX_PATH} bytes")
        if raw == "~" or raw.startswith("~/"):
            raw = self.home + raw[1:]
        if not raw.startswith("/"):
            raise HTTPError(400, "bad_path", f"'{raw}' is not absolute: paths start with / or ~/")
        parts = [p for p in raw.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise HTTPError(400, "bad_path", f"'..' is not allowed in paths ('{raw}')")
        path = "/" + "/".join(parts)
        for root in self.lexical:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return Target(path, root)
        for real in self.real:
            if path == real or path.startswith(real.rstrip("/") + "/"):
                return Target(path, real)
        raise HTTPError(403, "outside_roots", f"'{path}' is outside the directories this edge serves "
                        f"({', '.join(self.lexical)})")

    def contains_real(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.real)

    # -- resolving -----------------------------------------------------------------------

    def resolve(self, target: Target) -> str:
        """The real path of an existing ``target``, which must stay within the roots."""
        real = os.path.realpath(target.path)
        if not self.contains_real(real):
            raise HTTPError(403, "symlink_escape", f"'{target.path}' leads outside the directories this edge "
                            "serves (through a symbolic link)")
        return real

    def check_fd(self, fd: int, shown: str) -> None:
        """Refuse a descriptor whose real location is outside the roots (a symlink swapped
        in after the check)."""
        try:
            real = os.readlink(f"{_PROC_FD}/{fd}")
        except OSError:
            return  # no /proc: the realpath check before the open stands alone
        if not self.contains_real(real):
            os.close(fd)
            raise HTTPError(403, "symlink_escape", f"'{shown}' leads outside the directories this edge serves")

    def lstat(self, target: Target) -> os.stat_result:
        try:
            return os.lstat(target.path)
        except OSError as exc:
            raise os_error(exc, target.path) from None

    def stat_real(self, target: Target) -> tuple[str, os.stat_result]:
        """(real path, stat) of an existing target within the roots."""
        real = self.resolve(target)
        try:
            return real, os.stat(real)
        except OSError as exc:
            raise os_error(exc, target.path) from None

    def open_file(self, target: Target) -> tuple[int, os.stat_result]:
        """Open a regular file for reading: (descriptor, fstat). Special files are refused
        before they are opened."""
        real, st = self.stat_real(target)
        refuse_special(st, target.path, want="file")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, target.path) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            refuse_special(st, target.path, want="file")
        self.check_fd(fd, target.path)
        os.set_blocking(fd, True)
        return fd, st

    def open_dir(self, path: str, shown: str | None = None) -> int:
        """Open an existing directory (symlinks followed, the result checked to be within
        the roots); the descriptor anchors ``*at`` calls for writes."""
        shown = shown or path
        real = os.path.realpath(path)
        if not self.contains_real(real):
            raise HTTPError(403, "symlink_escape", f"'{shown}' leads outside the directories this edge serves")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, shown) from None
        self.check_fd(fd, shown)
        return fd

    def open_parent(self, target: Target) -> int:
        """The verified parent directory of ``target`` (which must not be a root itself)."""
        if target.is_root:
            raise HTTPError(403, "root_protected", f"'{target.path}' is one of the roots this edge serves; it "
                            "cannot be written, moved or removed through the files plugin")
        return self.open_dir(target.parent)


def refuse_special(st: os.stat_result, shown: str, *, want: str = "any") -> None:
    """400 for device files, FIFOs and sockets (and for a directory where a file is wanted)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        if want == "file":
            raise HTTPError(400, "is_a_directory", f"'{shown}' is a directory")
        return
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise HTTPError(400, "special_file", f"'{shown}' is {kind}; the files plugin serves regular files and "
                    "directories only")


def check_name(name: str, shown: str) -> None:
    """A single path component that may be created."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise HTTPError(400, "bad_path", f"'{shown}' does not name an entry")


def file_type(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"
