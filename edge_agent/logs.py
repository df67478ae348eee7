"""Structured logging shared by the agent and the bridge: one JSON object per line.

Quiet by default (INFO shows only lifecycle lines such as connects and refusals).
``RADICAL_LOG_FORMAT=text`` switches to a human-readable format for local debugging.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON with ``ts``, ``level``, ``logger``, ``msg``
    and any ``extra=`` fields (such as ``request_id``, ``edge``)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(level: str | int = "INFO", fmt: str | None = None) -> None:
    """Configure the root logger once for a command-line program."""
    fmt = (fmt or os.environ.get("RADICAL_LOG_FORMAT", "json")).lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries stay at WARNING unless we are debugging.
    if logging.getLevelName(level) != "DEBUG" and level != logging.DEBUG:
        for noisy in ("websockets", "asyncio", "httpx", "httpcore", "psij"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
