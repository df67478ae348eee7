"""The bridge's log stays readable while Redis restarts: channels-redis's per-second
tracebacks become one-line warnings; every other record passes untouched."""

from __future__ import annotations

import logging
import sys

import redis.exceptions

from radical_edge_site.logfilters import LayerReconnects


def record(name: str, exc: BaseException | None, level: int = logging.ERROR) -> logging.LogRecord:
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, "Unexpected exception in receive task", None, exc_info)


def test_a_redis_connection_error_in_channels_redis_becomes_a_one_line_warning():
    rec = record("channels_redis.pubsub", redis.exceptions.ConnectionError("Connection closed by server."))
    assert LayerReconnects().filter(rec)
    assert (rec.levelno, rec.levelname, rec.exc_info) == (logging.WARNING, "WARNING", None)
    assert rec.getMessage() == "Unexpected exception in receive task: ConnectionError: Connection closed by server."
    assert "Traceback" not in logging.Formatter().format(rec)


def test_other_errors_and_other_loggers_keep_their_level_and_traceback():
    bug = record("channels_redis.pubsub", KeyError("x"))
    ours = record("bridge_app.core.rpc", ConnectionError("refused"))
    for rec in (bug, ours):
        assert LayerReconnects().filter(rec)
        assert rec.levelno == logging.ERROR and rec.exc_info is not None


def test_the_filter_is_on_the_bridges_console_handler():
    from django.conf import settings

    handler = settings.LOGGING["handlers"]["console"]
    assert "layer_reconnects" in handler["filters"]
    assert settings.LOGGING["filters"]["layer_reconnects"]["()"] == "radical_edge_site.logfilters.LayerReconnects"
