"""The psij plugin's settings, read once from the agent's plugin config.

Set on the agent's command line, e.g.::

    radical-edge-service … --option psij.poll_interval=1 --option psij.executors=slurm
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEFAULTS: dict[str, Any] = {
    # Seconds between two scheduler queue polls (one squeue per executor, for all jobs).
    # psij's own default is 30 s, far too slow for someone watching a portal.
    "poll_interval": 5.0,
    # Seconds before the first poll after a submit; None: min(poll_interval, 2).
    "initial_poll_delay": None,
    # Seconds of failing scheduler polls (slurmctld restarting, a network blip) tolerated
    # before psij gives up and marks every job it follows FAILED. psij's own default is
    # three polls, a few seconds at a short poll interval.
    "poll_error_tolerance": 600.0,
    # Executors this edge offers; None: every executor psij can load here.
    "executors": None,
    "default_executor": "local",
    # Keep psij's submit scripts and auxiliary files after jobs end (debugging).
    "keep_files": False,
    # Largest stdout/stderr chunk one status answer carries (per stream).
    "max_output_bytes": 1024 * 1024,
    # Tail of stdout/stderr carried by a final job_status event (per stream).
    "event_output_bytes": 16 * 1024,
    # How long a retried submit waits for the first one with the same key to finish.
    "idempotency_wait": 120.0,
}


@dataclass(frozen=True)
class PsijSettings:
    poll_interval: float
    initial_poll_delay: float
    poll_error_tolerance: float
    executors: tuple[str, ...] | None
    default_executor: str
    keep_files: bool
    max_output_bytes: int
    event_output_bytes: int
    idempotency_wait: float

    @property
    def poll_error_threshold(self) -> int:
        """psij's ``queue_polling_error_threshold``: failed polls in a row it tolerates."""
        return max(2, math.ceil(self.poll_error_tolerance / self.poll_interval))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PsijSettings:
        """Settings from the plugin config; a wrong key or value is a ValueError that names it."""
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown psij option(s): {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        merged = {**DEFAULTS, **config}
        poll = _positive(merged, "poll_interval")
        delay = merged["initial_poll_delay"]
        delay = min(poll, 2.0) if delay is None else _positive(merged, "initial_poll_delay", allow_zero=True)
        executors = merged["executors"]
        if isinstance(executors, str):
            executors = [e.strip().lower() for e in executors.split(",") if e.strip()]
        if executors is not None:
            if not isinstance(executors, list) or not all(isinstance(e, str) for e in executors):
                raise ValueError("psij.executors must be a comma-separated list of executor names")
            executors = tuple(e.lower() for e in executors)
        default = merged["default_executor"]
        if not isinstance(default, str) or not default:
            raise ValueError("psij.default_executor must be an executor name")
        return cls(
            poll_interval=poll,
            initial_poll_delay=delay,
            poll_error_tolerance=_positive(merged, "poll_error_tolerance", allow_zero=True),
            executors=executors,
            default_executor=default.lower(),
            keep_files=_bool(merged, "keep_files"),
            max_output_bytes=int(_positive(merged, "max_output_bytes")),
            event_output_bytes=int(_positive(merged, "event_output_bytes", allow_zero=True)),
            idempotency_wait=_positive(merged, "idempotency_wait"),
        )


def _positive(config: dict[str, Any], key: str, *, allow_zero: bool = False) -> float:
    value = config[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"psij.{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or number < 0 or (number == 0 and not allow_zero) or number != number:
        raise ValueError(f"psij.{key} must be {'≥' if allow_zero else '>'} 0, got {value!r}")
    return number


def _bool(config: dict[str, Any], key: str) -> bool:
    value = config[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"psij.{key} must be true or false, got {value!r}")
