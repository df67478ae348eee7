"""Task descriptions in, task records and their JSON views out.

A task description is a JSON object, one of three kinds:

* executable: ``{"executable": "/bin/echo", "arguments": ["hi"], "cwd"?, "env"?, "inherit_env"?, "timeout"?}``
* shell (if the admin has not disabled it): ``{"executable": "echo $HOME | wc -c", "shell": true, ...}``
* function: ``{"function": "noop", "args": [...], "kwargs": {...}}`` naming a registered
  function, or ``{"function_pickle": "<base64 cloudpickle>", ...}`` where the admin allows it.

Any kind may carry ``name`` (a label) and ``backend`` (one of the session's backends).
``env`` is merged over the agent's environment unless ``inherit_env`` is false, in which
case the task gets exactly ``env`` plus the agent's ``PATH`` (when ``env`` has none).
``cwd`` defaults to the agent user's home directory.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import shlex
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from ...plugin import HTTPError
from .output import clip_text
from .runner import ProcessRun, signal_name

QUEUED = "QUEUED"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
CANCELED = "CANCELED"
FINAL_STATES = frozenset({DONE, FAILED, CANCELED})
ALL_STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELED)

EXECUTABLE = "executable"
SHELL = "shell"
FUNCTION = "function"

_KEYS = frozenset({
    "executable", "arguments", "shell", "cwd", "env", "inherit_env", "timeout",
    "function", "function_pickle", "args", "kwargs", "name", "backend", "task_backend_specific_kwargs",
})
MAX_NAME = 200


@dataclass
class Limits:
    """The admin's limits and switches that shape tasks (plugin options)."""

    max_output_bytes: int = 64 * 1024
    event_output_bytes: int = 2048
    max_return_bytes: int = 256 * 1024
    allow_shell: bool = True
    allow_pickled: bool = False


@dataclass
class TaskPlan:
    """A validated task description: what to build the rhapsody ComputeTask from."""

    kind: str
    compute: dict[str, Any]
    name: str | None = None
    backend: str | None = None
    timeout: float | None = None
    label: str = ""

    def argv(self) -> list[str]:
        """The command line of an executable or shell task."""
        opts = self.compute["task_backend_specific_kwargs"]
        if opts.get("shell"):
            return ["/bin/sh", "-c", self.compute["executable"]]
        return [self.compute["executable"], *self.compute["arguments"]]


def parse_task(spec: Any, index: int, *, limits: Limits, functions: Callable[[str], Any],
               backends: list[str]) -> TaskPlan:
    """Validate one task description; a bad one is a 400 naming its index and the problem."""

    def bad(detail: str) -> HTTPError:
        return HTTPError(400, "bad_task", f"task {index}: {detail}")

    if not isinstance(spec, dict):
        raise bad("must be a JSON object")
    unknown = set(spec) - _KEYS
    if unknown:
        raise bad(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    # rhapsody's own spelling of cwd/env/shell is accepted too.
    backend_kwargs = spec.get("task_backend_specific_kwargs") or {}
    if not isinstance(backend_kwargs, dict):
        raise bad("task_backend_specific_kwargs must be an object")
    merged = {**{k: v for k, v in backend_kwargs.items() if k in ("cwd", "env", "shell")}, **spec}

    name = merged.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise bad(f"name must be a string of at most {MAX_NAME} characters")
    backend = merged.get("backend")
    if backend is not None and backend not in backends:
        raise bad(f"backend {backend!r} is not one of this session's backends ({', '.join(backends)})")

    has_exe = merged.get("executable") is not None
    has_fn = merged.get("function") is not None or merged.get("function_pickle") is not None
    if has_exe == has_fn:
        raise bad("give exactly one of 'executable' or 'function' (or 'function_pickle')")
    plan = (_parse_executable(merged, bad, limits) if has_exe
            else _parse_function(merged, index, bad, limits, functions))
    plan.name = name
    plan.backend = backend
    if backend:
        plan.compute["backend"] = backend
    return plan


def _parse_executable(spec: dict[str, Any], bad: Callable[[str], HTTPError], limits: Limits) -> TaskPlan:
    for key in ("function", "function_pickle", "args", "kwargs"):
        if key in spec:
            raise bad(f"'{key}' belongs to function tasks, not executable ones")
    executable = spec["executable"]
    if not isinstance(executable, str) or not executable.strip():
        raise bad("executable must be a non-empty string")
    arguments = spec.get("arguments") or []
    if isinstance(arguments, str):
        arguments = shlex.split(arguments)
    if not isinstance(arguments, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool)
                                                  for a in arguments):
        raise bad("arguments must be a list of strings (or numbers)")
    arguments = [str(a) for a in arguments]
    shell = spec.get("shell", False)
    if not isinstance(shell, bool):
        raise bad("shell must be true or false")
    if shell and not limits.allow_shell:
        raise HTTPError(403, "shell_disabled", "this edge's administrator has disabled shell tasks "
                        "(run the executable directly, without shell: true)")
    cwd = spec.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise bad("cwd must be a non-empty string")
    cwd = os.path.expanduser(cwd) if cwd else os.path.expanduser("~")
    env = _parse_env(spec, bad)
    timeout = spec.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 7 * 86400:
            raise bad("timeout must be a number of seconds between 0 and 604800")
        timeout = float(timeout)
    if shell:
        command = " ".join([executable, *(shlex.quote(a) for a in arguments)])
        compute = {"executable": command, "arguments": [],
                   "task_backend_specific_kwargs": {"shell": True, "cwd": cwd, "env": env}}
        return TaskPlan(SHELL, compute, timeout=timeout, label=command)
    compute = {"executable": executable, "arguments": arguments,
               "task_backend_specific_kwargs": {"shell": False, "cwd": cwd, "env": env}}
    return TaskPlan(EXECUTABLE, compute, timeout=timeout, label=executable)


def _parse_env(spec: dict[str, Any], bad: Callable[[str], HTTPError]) -> dict[str, str] | None:
    env = spec.get("env")
    inherit = spec.get("inherit_env", True)
    if not isinstance(inherit, bool):
        raise bad("inherit_env must be true or false")
    if env is None:
        return None if inherit else {"PATH": os.environ.get("PATH", os.defpath)}
    if not isinstance(env, dict) or not all(isinstance(k, str) and k and "=" not in k for k in env):
        raise bad("env must be an object of variable names to values")
    values: dict[str, str] = {}
    for key, value in env.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad(f"env value of {key} must be a string")
        values[key] = str(value)
    # rhapsody (like subprocess) REPLACES the environment with env: merge it here, so a
    # task that sets one variable still finds its executables on PATH.
    if inherit:
        return {**os.environ, **values}
    return {"PATH": os.environ.get("PATH", os.defpath), **values}


def _parse_function(spec: dict[str, Any], index: int, bad: Callable[[str], HTTPError], limits: Limits,
                    functions: Callable[[str], Any]) -> TaskPlan:
    for key in ("arguments", "shell", "cwd", "env", "inherit_env", "timeout"):
        if key in spec:
            raise bad(f"'{key}' belongs to executable tasks, not function ones")
    if spec.get("function") is not None and spec.get("function_pickle") is not None:
        raise bad("give either 'function' or 'function_pickle', not both")
    args = spec.get("args") or []
    if isinstance(args, str):  # from a UI form: a JSON list in a text field
        try:
            args = json.loads(args)
        except ValueError:
            raise bad("args must be a JSON list") from None
    if not isinstance(args, list):
        raise bad("args must be a list")
    kwargs = spec.get("kwargs") or {}
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except ValueError:
            raise bad("kwargs must be a JSON object") from None
    if not isinstance(kwargs, dict):
        raise bad("kwargs must be an object")
    if spec.get("function_pickle") is not None:
        fn = _unpickle(spec["function_pickle"], bad, limits)
        label = f"<pickled {getattr(fn, '__qualname__', type(fn).__name__)}>"
    else:
        name = spec["function"]
        if not isinstance(name, str):
            raise bad("function must be the name of a registered function")
        fn = functions(name)
        if fn is None:
            raise HTTPError(400, "unknown_function", f"task {index}: no function {name!r} is registered on this "
                            "edge (GET functions lists them; admins add more with the 'functions' option)")
        label = name
    compute = {"function": fn, "args": tuple(args), "kwargs": kwargs}
    return TaskPlan(FUNCTION, compute, label=label)


def _unpickle(payload: Any, bad: Callable[[str], HTTPError], limits: Limits) -> Callable[..., Any]:
    if not limits.allow_pickled:
        raise HTTPError(403, "pickled_code_refused",
                        "this edge does not run pickled code; use a registered function (GET functions), or ask "
                        "the edge's administrator to start the agent with --option rhapsody.allow_pickled=true")
    if not isinstance(payload, str):
        raise bad("function_pickle must be a base64 string")
    try:
        import cloudpickle  # noqa: F401 - its pickles name its helpers; fail clearly if missing
    except ImportError:
        raise HTTPError(501, "cloudpickle_missing", "pickled functions need cloudpickle on the edge "
                        "(pip install cloudpickle)") from None
    try:
        fn = pickle.loads(base64.b64decode(payload, validate=True))  # noqa: S301 - allowed by the admin
    except Exception as exc:
        raise bad(f"function_pickle cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise bad("function_pickle does not hold a callable")
    return fn


class TaskRecord:
    """What the plugin knows about one task, beside rhapsody's task dict.

    ``state`` is the plugin's view: QUEUED (accepted, waiting for a process or worker
    slot), RUNNING, then one of DONE, FAILED, CANCELED. Once final, ``view`` holds the
    bounded JSON answer and the rhapsody task is released.
    """

    __slots__ = (
        "backend", "cancel_requested", "finished", "kind", "label", "name", "pid", "run", "started",
        "state", "submitted", "task", "thread_started", "timed_out", "timeout", "uid", "view", "waiter",
    )

    def __init__(self, task: Any, plan: TaskPlan, backend: str) -> None:
        self.task = task
        self.uid: str = task["uid"]
        self.kind = plan.kind
        self.name = plan.name
        self.label = plan.label
        self.backend = backend
        self.timeout = plan.timeout
        self.state = QUEUED
        self.submitted = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.pid: int | None = None
        self.run: ProcessRun | None = None
        self.cancel_requested = False
        self.thread_started = False
        self.timed_out = False
        self.view: dict[str, Any] | None = None
        self.waiter: asyncio.Future | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def wait_future(self) -> asyncio.Future:
        """A future resolved when the task reaches a final state (shared by all waiters)."""
        if self.waiter is None:
            self.waiter = asyncio.get_running_loop().create_future()
            if self.final:
                self.waiter.set_result(None)
        return self.waiter

    def resolve_waiter(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        # Those waiting hold it; the record need not. A session keeps up to 100,000 finished
        # records, and each object they keep alive makes every full GC pass longer.
        self.waiter = None

    def to_dict(self) -> dict[str, Any]:
        """The task's JSON view: the cached final one, or the live state."""
        if self.view is not None:
            return self.view
        return {
            "uid": self.uid, "name": self.name, "kind": self.kind, "label": self.label, "backend": self.backend,
            "state": self.state, "exit_code": None, "stdout": None, "stderr": None, "return_value": None,
            "error": None, "exception": None, "traceback": None, "truncated": [], "pid": self.pid,
            "submitted": self.submitted, "started": self.started, "finished": None,
        }

    def brief(self) -> dict[str, Any]:
        view = self.to_dict()
        return {k: view[k] for k in ("uid", "name", "kind", "label", "state", "exit_code", "error", "submitted",
                                     "started", "finished")}

    def event_entry(self, limit: int) -> tuple[dict[str, Any], int]:
        """The task's part of a ``task_status`` event (outputs cut to ``limit``) and its
        approximate size in bytes."""
        view = self.to_dict()
        entry = {"uid": self.uid, "name": self.name, "state": self.state, "exit_code": view["exit_code"],
                 "stdout": None, "stderr": None, "return_value": None, "error": view["error"],
                 "exception": view["error"], "truncated": list(view["truncated"])}
        size = 160 + len(self.uid) + len(self.name or "") + len(view["error"] or "")
        for key in ("stdout", "stderr"):
            text, cut = clip_text(view[key], limit)
            entry[key] = text
            size += len(text or "")
            if cut and key not in entry["truncated"]:
                entry["truncated"].append(key)
        value = view["return_value"]
        if value is not None:
            encoded = _encode(value)
            if len(encoded) <= limit:
                entry["return_value"] = value
                size += len(encoded)
            elif "return_value" not in entry["truncated"]:
                entry["truncated"].append("return_value")
        return entry, size

    def finalize(self, state: str, limits: Limits) -> str:
        """Build the bounded view from rhapsody's task dict and record the final state:
        ``state``, or FAILED for an executable run by :func:`~.runner.run_blocking` (dask)
        that exited non-zero. Returns the state recorded."""
        task = self.task
        cancel_signal = self.run.signals[-1] if state == CANCELED and self.run and self.run.signals else None
        truncated: list[str] = []
        exit_code = task.get("exit_code") if task is not None else None
        exc = task.get("exception") if task is not None else None
        remote = task.get("return_value") if task is not None and self.kind != FUNCTION and self.run is None else None
        if isinstance(remote, dict) and "returncode" in remote:  # run_blocking's answer
            exit_code = remote["returncode"]
            self.timed_out = bool(remote.get("timed_out"))
            truncated += remote.get("truncated") or []
            if state == DONE and (exit_code != 0 or self.timed_out):
                state = FAILED
        elif self.kind != FUNCTION and isinstance(exc, OSError) and exit_code in (None, 1):
            exit_code = 127 if isinstance(exc, FileNotFoundError) else 126 if isinstance(exc, PermissionError) else 1
        self.state = state
        self.finished = time.time()
        stdout = stderr = None
        return_value = None
        error: str | None = None
        if self.kind == FUNCTION:
            if isinstance(exc, BaseException):
                stderr = task.get("stderr") or "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                error = f"{type(exc).__name__}: {exc}"
            elif state == DONE and task is not None:
                return_value = task.get("return_value")
                encoded = _encode(return_value)
                if len(encoded) > limits.max_return_bytes:
                    return_value = None
                    truncated.append("return_value")
        else:
            if self.run is not None:
                stdout, stderr = self.run.stdout.text(), self.run.stderr.text()
                truncated += [k for k, buf in (("stdout", self.run.stdout), ("stderr", self.run.stderr))
                              if buf.truncated]
            elif isinstance(remote, dict) and "returncode" in remote:
                stdout, stderr = remote.get("stdout"), remote.get("stderr")
            elif task is not None:  # a backend that ran the process its own way
                stdout, stderr = task.get("stdout"), task.get("stderr")
            if isinstance(exc, BaseException):
                error = f"{type(exc).__name__}: {exc}"
            elif self.timed_out:
                error = f"timed out after {self.timeout:g}s"
            elif cancel_signal is not None:
                error = f"canceled: killed with {signal_name(cancel_signal)}"
            elif isinstance(exit_code, int) and exit_code < 0:
                error = f"killed by {signal_name(-exit_code)}"
            elif isinstance(exit_code, int) and exit_code != 0:
                error = f"exit code {exit_code}"
        if state == CANCELED and error is None:
            error = "canceled before it started" if self.started is None else "canceled"
        if self.run is None and not isinstance(remote, dict):  # output nobody bounded yet
            stdout, stderr = (self._bounded(key, value, limits.max_output_bytes, truncated)
                              for key, value in (("stdout", stdout), ("stderr", stderr)))
        self.view = {
            "uid": self.uid, "name": self.name, "kind": self.kind, "label": self.label, "backend": self.backend,
            "state": state, "exit_code": exit_code, "stdout": stdout, "stderr": stderr,
            "return_value": return_value, "error": error, "truncated": tuple(truncated), "pid": self.pid,
            "submitted": self.submitted, "started": self.started, "finished": self.finished,
            # The original's names: ``exception`` (what failed, in words) and ``traceback``
            # (a function's, which ``stderr`` holds here).
            "exception": error,
            "traceback": stderr if self.kind == FUNCTION and state == FAILED else None,
        }
        # The view is all that is kept: drop rhapsody's task (and any traceback it holds).
        # (``truncated`` is a tuple so that the view, holding only atoms, is not GC-tracked.)
        self.task = None
        if self.run is not None:
            self.run.close()
            self.run = None
        return state


    @staticmethod
    def _bounded(key: str, value: Any, limit: int, truncated: list[str]) -> str | None:
        if value is not None and not isinstance(value, str):
            value = str(value)
        value, cut = clip_text(value, limit)
        if cut:
            truncated.append(key)
        return value


def _encode(value: Any) -> str:
    """``value`` as the JSON the answer will carry (str() for what JSON cannot hold)."""
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return str(value)
