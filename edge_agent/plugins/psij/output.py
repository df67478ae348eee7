"""Job output on disk: private per-user directories and reading files by byte offset.

Output is read by byte offset so that a portal can tail a growing file: it asks for the
bytes after the offset it last got and receives the new text plus the next offset.
Chunks never end inside a UTF-8 sequence (the incomplete tail is left for the next read),
so a multi-byte character is never split into two replacement characters.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PRIVATE = 0o700


@dataclass(frozen=True)
class Chunk:
    """Text read from ``offset``; ``next_offset`` is where the next read starts."""

    text: str
    offset: int
    next_offset: int
    size: int

    @property
    def more(self) -> bool:
        """True when the file already holds bytes past this chunk."""
        return self.next_offset < self.size


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700 and make sure it is 0700.

    Refuses a symlink in place of the directory: output dirs must not be redirected.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE)
    if path.is_symlink():
        raise PermissionError(f"{path} is a symlink; refusing to use it for job files")
    if (path.stat().st_mode & 0o777) != PRIVATE:
        path.chmod(PRIVATE)
    return path


def remove_tree(path: Path) -> None:
    """Best-effort removal of a directory this plugin created."""
    shutil.rmtree(path, ignore_errors=True)


def read_chunk(path: str | None, offset: int, max_bytes: int, *, final: bool = False) -> Chunk:
    """Read up to ``max_bytes`` of ``path`` from byte ``offset``.

    A missing file reads as empty. An offset beyond the end (the file was truncated or
    rewritten) is clamped to the end. With ``final`` (the job is over and the file will not
    grow), a trailing incomplete UTF-8 sequence is returned as replacement characters
    instead of being held back.
    """
    if not path:
        return Chunk("", 0, 0, 0)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = min(max(offset, 0), size)
            fh.seek(start)
            data = fh.read(max(max_bytes, 0))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return Chunk("", 0, 0, 0)
    except OSError:
        return Chunk("", offset, offset, 0)
    at_end = start + len(data) >= size
    if not (final and at_end):
        data = data[: _complete_utf8_length(data)]
    return Chunk(data.decode("utf-8", "replace"), start, start + len(data), size)


def read_tail(path: str | None, max_bytes: int) -> tuple[str, bool]:
    """The last ``max_bytes`` of ``path`` as text, and whether earlier bytes were left out."""
    if not path or max_bytes <= 0:
        return "", False
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            start = max(size - max_bytes, 0)
            fh.seek(start)
            data = fh.read(max_bytes)
    except OSError:
        return "", False
    if start:
        # Skip continuation bytes so the text starts on a character boundary.
        skip = 0
        while skip < min(len(data), 3) and (data[skip] & 0xC0) == 0x80:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", "replace"), start > 0


def _complete_utf8_length(data: bytes) -> int:
    """Length of ``data`` without a trailing, not yet complete UTF-8 sequence."""
    n = len(data)
    # Look back at most 3 bytes for the lead byte of the last sequence.
    for back in range(1, min(n, 4) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: keep looking for the lead byte
        if byte & 0x80 == 0:
            return n  # ASCII: complete
        needed = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return n if back >= needed else n - back
    return n
