"""Logging filters of the bridge's LOGGING setting."""

from __future__ import annotations

import logging


class LayerReconnects(logging.Filter):
    """channels-redis logs every failed pub/sub receive while Redis restarts as an ERROR with
    a traceback, once a second per subscription. The bridge handles the outage itself (it
    fails the calls waiting on Redis with 503 and says so once, see bridge_app/core/processes.py):
    these become one-line WARNINGs naming the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("channels_redis") and record.exc_info and record.levelno >= logging.ERROR:
            exc = record.exc_info[1]
            if isinstance(exc, (ConnectionError, OSError, TimeoutError)) or type(exc).__module__.startswith("redis"):
                record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
                record.args = None
                record.exc_info = record.exc_text = None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
