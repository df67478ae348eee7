"""The rhapsody plugin's options, as an admin sets them: ``--option rhapsody.KEY=VALUE``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

CPUS = os.cpu_count() or 1


def _default_dask() -> dict[str, Any]:
    return {"n_workers": min(4, CPUS), "threads_per_worker": 1, "processes": True, "dashboard_address": None}


@dataclass
class Settings:
    """Every option with its default. Unknown options and bad values are errors, so a
    typo in the agent's command line is noticed at start, not ignored."""

    #: Functions callable by name: ["module:function", ...] or {"name": "module:function"}.
    functions: Any = None
    #: Offer the harmless built-in functions (noop, echo, add, sleep, fail, hostname).
    builtin_functions: bool = True
    #: Accept cloudpickled functions (function_pickle). Runs caller-supplied code in the agent.
    allow_pickled: bool = False
    #: Accept shell tasks (shell: true). They run as the agent's user, like any executable.
    allow_shell: bool = True
    #: Backends a session may ask for.
    backends: list = field(default_factory=lambda: ["concurrent", "dask"])
    #: Task processes running at once on this agent, over all sessions.
    max_processes: int = max(8, 2 * CPUS)
    #: Task processes running at once in one session (default: max_processes).
    max_processes_per_session: int = 0
    #: Threads that start task processes (fork/exec blocks its thread, so not the event
    #: loop's; several overlap the exec latency); 0 starts them on the event loop.
    spawn_threads: int = min(4, CPUS + 1)
    #: Threads running function tasks, per session.
    max_workers: int = min(32, CPUS + 4)
    #: stdout and stderr kept per task and stream (head and tail; the middle is cut).
    max_output_bytes: int = 64 * 1024
    #: stdout and stderr carried per task in a task_status event.
    event_output_bytes: int = 2048
    #: Largest JSON-encoded return value kept per function task.
    max_return_bytes: int = 256 * 1024
    #: Tasks in one submit call.
    max_tasks_per_request: int = 20_000
    #: Tasks a session keeps: beyond this the oldest finished ones are forgotten, and a
    #: submit that would take the unfinished ones past it is refused (429).
    max_tasks_per_session: int = 100_000
    #: Seconds between SIGTERM and SIGKILL when a task is canceled, timed out or its session closes.
    kill_grace: float = 3.0
    #: Seconds a wait call waits when it names no timeout (under the bridge's default of 60).
    wait_timeout: float = 50.0
    #: Longest timeout a wait call may ask for.
    max_wait_timeout: float = 3600.0
    #: task_status batching: seconds to collect, and tasks per event at most.
    event_interval: float = 0.1
    event_max_tasks: int = 500
    #: Idle seconds after which a session expires (its tasks are killed).
    session_ttl: float = 3600.0
    #: Keyword arguments of dask.distributed.Client for the dask backend (a LocalCluster by
    #: default; {"address": "tcp://scheduler:8786"} to use an existing cluster).
    dask: dict = field(default_factory=_default_dask)
    #: Where rhapsody's session directories go (default: STATE_DIR/rhapsody).
    work_dir: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Settings:
        """Settings from the plugin's config dict; raises ValueError naming the bad option."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(f"unknown rhapsody option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        settings = cls()
        for name, value in config.items():
            default = getattr(settings, name)
            setattr(settings, name, _coerce(name, value, default))
        if settings.max_processes_per_session <= 0:
            settings.max_processes_per_session = settings.max_processes
        settings.max_processes_per_session = min(settings.max_processes_per_session, settings.max_processes)
        return settings


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name == "functions":
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        word = str(value).lower() if isinstance(value, (str, int)) else ""
        if word in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return word in ("1", "true", "yes", "on")
        raise ValueError(f"rhapsody.{name} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
            raise ValueError(f"rhapsody.{name} must be a whole number, got {value!r}")
        if name not in ("max_processes_per_session", "spawn_threads") and int(value) < 1:
            raise ValueError(f"rhapsody.{name} must be at least 1")
        return int(value)
    if isinstance(default, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"rhapsody.{name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not number > 0:
            raise ValueError(f"rhapsody.{name} must be a positive number")
        return number
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"rhapsody.{name} must be a list of names")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ValueError(f"rhapsody.{name} must be a JSON object")
        return value
    if not isinstance(value, str):
        raise ValueError(f"rhapsody.{name} must be a string")
    return value
