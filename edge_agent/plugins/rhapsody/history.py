"""Finished tasks kept across agent restarts.

Sessions and their tasks live in the agent's memory and end with it; the record of what a
task did should not (psij keeps its jobs the same way). When a task ends, a summary of it
(state, exit code, times, the tails of its output, a small return value) is appended to one
JSON-lines file per owner in the agent's state directory; ``history`` routes read them back.

Appending a line is a buffered write, cheap enough for the event loop; files are rotated at
``MAX_FILE_BYTES`` (one older file kept), so the history of a busy owner is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("edge_agent.plugins.rhapsody")

MAX_FILE_BYTES = 4 * 1024 * 1024
OUTPUT_TAIL = 4096  # characters of stdout/stderr kept per task
RETURN_MAX = 4096  # a return value kept only if its JSON is at most this long
FLUSH_SECONDS = 1.0


def owner_key(uid: int | None) -> str:
    return f"u{uid}" if uid is not None else "-"


def _tail(text: Any) -> Any:
    if not isinstance(text, str) or len(text) <= OUTPUT_TAIL:
        return text
    return "[…]\n" + text[-OUTPUT_TAIL:]


def summary(view: dict[str, Any], *, sid: str, owner: str | None) -> dict[str, Any]:
    """What the history keeps of a finished task's view."""
    kept = {k: view.get(k) for k in ("uid", "name", "kind", "label", "backend", "state", "exit_code", "error",
                                     "exception", "pid", "submitted", "started", "finished")}
    kept.update(sid=sid, owner=owner, stdout=_tail(view.get("stdout")), stderr=_tail(view.get("stderr")))
    value = view.get("return_value")
    try:
        kept["return_value"] = value if len(json.dumps(value, default=str)) <= RETURN_MAX else "[too large to keep]"
    except (TypeError, ValueError):
        kept["return_value"] = None
    return kept


class TaskHistory:
    """One owner's finished tasks per file, newest last."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._files: dict[str, Any] = {}
        self._last_flush = 0.0
        self.broken = False

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            self.broken = True
            log.warning("rhapsody: no task history (cannot create %s: %s)", self.root, exc)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                try:
                    handle.close()
                except OSError:
                    pass
            self._files.clear()

    def add(self, key: str, record: dict[str, Any]) -> None:
        """Append one finished task (never raises: a full disk costs the history, not the task)."""
        if self.broken:
            return
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                handle = self._handle(key)
                handle.write(line)
                if handle.tell() > MAX_FILE_BYTES:
                    handle.close()
                    del self._files[key]
                    os.replace(self._path(key), self._path(key, older=True))
                now = time.monotonic()
                if now - self._last_flush >= FLUSH_SECONDS:
                    self._last_flush = now
                    for h in self._files.values():
                        h.flush()
            except OSError as exc:
                log.warning("rhapsody: could not keep task %s in the history: %s", record.get("uid"), exc)

    def flush(self) -> None:
        with self._lock:
            for handle in self._files.values():
                try:
                    handle.flush()
                except OSError:
                    pass

    def records(self, key: str | None, *, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records of owner ``key`` (every owner's for None), oldest first."""
        self.flush()
        keys = [key] if key is not None else sorted({p.name.split(".")[0] for p in self.root.glob("*.jsonl*")})
        found: list[dict[str, Any]] = []
        for k in keys:
            for path in (self._path(k, older=True), self._path(k)):
                found.extend(_read_lines(path))
        found.sort(key=lambda r: (r.get("finished") or 0, r.get("submitted") or 0))
        return found[-limit:]

    def find(self, key: str | None, sid: str, uid: str) -> dict[str, Any] | None:
        for record in reversed(self.records(key, limit=10**9)):
            if record.get("sid") == sid and record.get("uid") == uid:
                return record
        return None

    def _path(self, key: str, *, older: bool = False) -> Path:
        return self.root / (f"{key}.jsonl.1" if older else f"{key}.jsonl")

    def _handle(self, key: str) -> Any:
        handle = self._files.get(key)
        if handle is None:
            fd = os.open(self._path(key), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            handle = self._files[key] = os.fdopen(fd, "a", encoding="utf-8")
        return handle


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(record, dict):
            records.append(record)
    return records
