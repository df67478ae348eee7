"""The files plugin's settings (``--option files.KEY=VALUE`` on the agent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .paths import default_roots

DEFAULTS: dict[str, Any] = {
    # Directories served (comma-separated); default $HOME and, where set, $SCRATCH.
    "roots": None,
    # Largest file one upload may create, in bytes (0: no limit but the disk's).
    "max_upload": 0,
    # Upload bytes being written at once on this edge (the chunks in flight); beyond: 429.
    "max_inflight_bytes": 512 * 1024 * 1024,
    # Downloads (files and archives) streaming at once on this edge; beyond: 429.
    "max_downloads": 16,
    # Unfinished uploads one user may keep on this edge.
    "max_pending_uploads": 100,
    # Seconds an unfinished upload is kept after its last chunk (then removed).
    "upload_expiry": 7 * 24 * 3600,
    # Largest text head/tail answers.
    "preview_max_bytes": 1024 * 1024,
    # Bounds of name searches.
    "find_max_results": 10000,
    "find_max_seconds": 60,
    # Worker threads for long operations (checksums, copies, archives, searches), apart from
    # the ones that serve quick calls, so a big transfer never starves a listing.
    "heavy_workers": 2,
}


@dataclass(frozen=True)
class FilesSettings:
    roots: tuple[str, ...]
    max_upload: int
    max_inflight_bytes: int
    max_downloads: int
    max_pending_uploads: int
    upload_expiry: float
    preview_max_bytes: int
    find_max_results: int
    find_max_seconds: float
    heavy_workers: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FilesSettings:
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown files option(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        merged = {**DEFAULTS, **config}
        roots = merged["roots"]
        if roots is None or roots == "":
            roots = default_roots()
        elif isinstance(roots, str):
            roots = [r.strip() for r in roots.replace(":", ",").split(",") if r.strip()]
        if not isinstance(roots, (list, tuple)) or not all(isinstance(r, str) for r in roots):
            raise ValueError("files.roots must be a comma-separated list of directories")
        return cls(
            roots=tuple(roots),
            max_upload=_int(merged, "max_upload", minimum=0),
            max_inflight_bytes=_int(merged, "max_inflight_bytes", minimum=1),
            max_downloads=_int(merged, "max_downloads", minimum=1),
            max_pending_uploads=_int(merged, "max_pending_uploads", minimum=1),
            upload_expiry=float(_int(merged, "upload_expiry", minimum=1)),
            preview_max_bytes=_int(merged, "preview_max_bytes", minimum=1024),
            find_max_results=_int(merged, "find_max_results", minimum=1),
            find_max_seconds=float(_int(merged, "find_max_seconds", minimum=1)),
            heavy_workers=_int(merged, "heavy_workers", minimum=1),
        )


def _int(config: dict[str, Any], key: str, *, minimum: int) -> int:
    value = config[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"files.{key} must be a whole number ≥ {minimum}, got {value!r}")
    return value
