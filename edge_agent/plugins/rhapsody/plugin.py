"""rhapsody: many small tasks (executables, shell commands, registered Python functions)
through rhapsody-py, for the caller who opened the session.

* ``POST register_session`` ``{"backends": ["concurrent"], "max_processes"?}`` creates a
  rhapsody Session and its backends on the agent's event loop (rhapsody binds to it).
* ``POST submit/{sid}`` ``{"tasks": [...]}`` -> ``[{uid, state}]`` (see :mod:`.tasks` for
  the task description); ``POST wait/{sid}`` ``{uids?, timeout?}`` -> task dicts;
  ``GET task/{sid}/{uid}``; ``POST cancel/{sid}/{uid}`` (really stops it, and says what
  happened); ``GET statistics/{sid}``; ``GET list_tasks/{sid}``; ``GET functions``;
  ``GET backends``.
* ``task_status`` events, batched (:mod:`.events`), go to the session's owner only.

A session and its tasks belong to the caller who opened it; closing or expiry kills its
running processes and shuts its backends down. rhapsody (and dask, if installed) are
imported in a thread when the plugin starts, so neither the agent's start nor its event
loop waits for them, and an agent without rhapsody still serves everything else.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from ...plugin import HTTPError, Plugin, Request, Response, Session, route
from .events import StatusBatcher
from .functions import FunctionRegistry
from .history import TaskHistory, owner_key, summary
from .runner import signal_name
from .settings import Settings
from .tasks import (
    ALL_STATES,
    CANCELED,
    FAILED,
    FINAL_STATES,
    FUNCTION,
    QUEUED,
    RUNNING,
    Limits,
    TaskRecord,
    parse_task,
)

log = logging.getLogger("edge_agent.plugins.rhapsody")

# Idempotency keys a session remembers (the oldest are forgotten first).
IDEMPOTENCY_KEYS = 1000
IDEMPOTENCY_UIDS = 100_000
# A submit of thousands of tasks yields to the event loop this often.
YIELD_EVERY = 500

DESCRIPTION = "Many small tasks (executables, shell commands, registered Python functions) through rhapsody."

UI_SCHEMA: dict[str, Any] = {
    "title": "Rhapsody tasks",
    "icon": "layers",
    "description": DESCRIPTION,
    "forms": [{
        "id": "submit",
        "title": "Run tasks",
        "layout": "grid2",
        "fields": [
            {"name": "kind", "type": "select", "label": "Kind", "required": True, "default": "executable",
             "options": ["executable", "shell", "function"]},
            {"name": "executable", "type": "text", "label": "Executable (or shell command)",
             "placeholder": "/bin/hostname"},
            {"name": "arguments", "type": "text", "label": "Arguments", "placeholder": "-f  (quotes allowed)"},
            {"name": "function", "type": "select", "label": "Registered function", "options": []},
            {"name": "args", "type": "text", "label": "Function arguments (JSON list)", "placeholder": "[1, 2]"},
            {"name": "cwd", "type": "text", "label": "Working directory", "placeholder": "~"},
            {"name": "name", "type": "text", "label": "Label", "placeholder": "optional"},
            {"name": "count", "type": "number", "label": "Copies", "default": 1},
        ],
        "submit": {"label": "Submit", "endpoint": "submit/{sid}", "method": "POST"},
    }],
    "monitors": [
        {"id": "tasks", "title": "Tasks", "type": "task_list", "endpoint": "list_tasks/{sid}", "auto_load": True,
         "items_field": "tasks", "id_field": "uid", "state_field": "state"},
        {"id": "statistics", "title": "Statistics", "type": "metrics", "endpoint": "statistics/{sid}",
         "auto_load": True},
    ],
    "notifications": [
        {"topic": "task_status", "items_field": "tasks", "id_field": "uid", "state_field": "state",
         "message_field": "error"},
    ],
}


def _import_rhapsody() -> tuple[Any, Any]:
    """Runs in a thread: rhapsody imports dask.distributed when it is installed (~0.5 s)."""
    import rhapsody

    from . import backend

    return rhapsody, backend


class RhapsodySession(Session):
    """One caller's rhapsody Session: its backends, task records and event batcher."""

    plugin: RhapsodyPlugin

    async def start(self) -> None:
        plugin = self.plugin
        settings = plugin.settings
        rhapsody, backend_mod = await plugin.rhapsody_modules()
        names = self._backend_names(settings)
        self.max_processes = self._max_processes(settings)
        self.records: dict[str, TaskRecord] = {}
        self.finished_order: collections.deque[str] = collections.deque()
        self.counts = dict.fromkeys(ALL_STATES, 0)
        self.submitted_total = 0
        self.evicted = 0
        self.idempotent: collections.OrderedDict[str, tuple[str, asyncio.Future]] = collections.OrderedDict()
        self.closing = False
        self.batcher = StatusBatcher(self._emit_batch, interval=settings.event_interval,
                                     max_tasks=settings.event_max_tasks)
        self.process_slots = asyncio.Semaphore(self.max_processes)
        self.work_dir = Path(tempfile.mkdtemp(prefix="session-", dir=plugin.work_dir))
        # Executables on dask write their pid here while they run, so the agent can kill them.
        self.pid_dir = self.work_dir / "pids"
        self.pid_dir.mkdir()
        self.run_blocking = backend_mod.run_blocking
        backends: list[Any] = []
        try:
            for name in names:
                backends.append(await self._make_backend(name, backend_mod))
            self.rh = rhapsody.Session(backends=backends, work_dir=str(self.work_dir),
                                       uid=f"rhapsody.session.{self.sid[:12]}")
        except BaseException:
            for backend in backends:
                await _shutdown_quietly(backend)
            shutil.rmtree(self.work_dir, ignore_errors=True)
            raise
        for backend in backends:
            self._chain_callback(backend)
        self.backends = {b.name: b for b in backends}
        self.default_backend = names[0]
        self.compute_task = rhapsody.ComputeTask
        log.info("rhapsody: session %s… opened by %s (backends %s, up to %d processes)",
                 self.sid[:8], self.owner.user or "?", ", ".join(names), self.max_processes)

    def _backend_names(self, settings: Settings) -> list[str]:
        names = self.params.get("backends", ["concurrent"])
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise HTTPError(400, "bad_request", "backends must be a non-empty list of backend names")
        names = list(dict.fromkeys(names))
        for name in names:
            if name not in ("concurrent", "dask"):
                raise HTTPError(400, "unknown_backend", f"unknown backend {name!r}; this plugin offers "
                                f"{', '.join(settings.backends)} (GET backends tells which are installed)")
            if name not in settings.backends:
                raise HTTPError(403, "backend_disabled", f"backend {name!r} is disabled on this edge; "
                                f"allowed: {', '.join(settings.backends) or 'none'}")
        return names

    def _max_processes(self, settings: Settings) -> int:
        value = self.params.get("max_processes")
        if value is None:
            return settings.max_processes_per_session
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HTTPError(400, "bad_request", "max_processes must be a positive whole number")
        return min(value, settings.max_processes_per_session)

    async def _make_backend(self, name: str, backend_mod: Any) -> Any:
        settings = self.plugin.settings
        if name == "concurrent":
            return await backend_mod.EdgeConcurrentBackend(
                records=self.records, max_workers=settings.max_workers, process_slots=self.process_slots,
                agent_slots=self.plugin.agent_slots, output_limit=settings.max_output_bytes,
                kill_grace=settings.kill_grace, spawner=self.plugin.spawner)
        try:
            return await backend_mod.make_dask_backend(settings.dask)
        except backend_mod.BackendMissing as exc:
            raise HTTPError(501, "backend_unavailable", str(exc)) from None
        except backend_mod.BackendUnavailable as exc:
            raise HTTPError(500, "backend_unavailable", str(exc)) from None

    def _chain_callback(self, backend: Any) -> None:
        # rhapsody gotcha: register_callback REPLACES the session's own callback (and
        # wait_tasks then never returns). Wrap it instead: rhapsody first, then ours.
        rhapsody_callback = backend._callback_func

        def on_state(task: Any, state: str) -> None:
            rhapsody_callback(task, state)
            try:
                self.on_state(task, state)
            except Exception:
                log.exception("rhapsody: handling state %s of task %s failed", state, task.get("uid"))

        backend.register_callback(on_state)

    # -- task bookkeeping ------------------------------------------------------------------

    def on_state(self, task: Any, state: str) -> None:
        """A backend reported ``state`` for ``task`` (on the event loop)."""
        rec = self.records.get(task["uid"])
        if rec is None or rec.final:
            return
        if state == RUNNING:
            if rec.state == RUNNING:
                return
            self._move(rec, RUNNING)
            if rec.started is None:
                rec.started = time.time()
        elif state in FINAL_STATES:
            self._finish(rec, task, state)
        else:
            return
        entry, size = rec.event_entry(self.plugin.settings.event_output_bytes)
        self.batcher.add(rec.uid, entry, size)

    def _move(self, rec: TaskRecord, state: str) -> None:
        self.counts[rec.state] -= 1
        self.counts[state] += 1
        rec.state = state

    def _finish(self, rec: TaskRecord, task: Any, state: str) -> None:
        future = getattr(task, "_future", None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # rhapsody fails the future of a failed task; nobody awaits it
        self.counts[rec.state] -= 1
        state = rec.finalize(state, self.plugin.limits)
        self.counts[state] += 1
        # Kept across agent restarts (the session and its records are not).
        self.plugin.history.add(owner_key(self.owner.uid), summary(rec.to_dict(), sid=self.sid, owner=self.owner.user))
        # rhapsody keeps every task it ever saw (Session._tasks, the backend's tasks): with
        # the view built, let them go, so long sessions stay within max_tasks_per_session.
        uid = rec.uid
        self.rh._tasks.pop(uid, None)
        for backend in self.backends.values():
            tasks = getattr(backend, "tasks", None)
            if isinstance(tasks, dict):
                tasks.pop(uid, None)
        rec.resolve_waiter()
        self.finished_order.append(uid)
        limit = self.plugin.settings.max_tasks_per_session
        while len(self.records) > limit and self.finished_order:
            if self.records.pop(self.finished_order.popleft(), None) is not None:
                self.evicted += 1

    def forget_idempotency_keys(self) -> None:
        """Keep at most IDEMPOTENCY_KEYS keys and IDEMPOTENCY_UIDS task uids behind them."""
        def size(entry: tuple[str, asyncio.Future]) -> int:
            done = entry[1]
            return len(done.result()) if done.done() and not done.exception() else 0

        total = sum(size(e) for e in self.idempotent.values())
        while self.idempotent and (len(self.idempotent) > IDEMPOTENCY_KEYS or total > IDEMPOTENCY_UIDS):
            _, entry = self.idempotent.popitem(last=False)
            total -= size(entry)

    def _emit_batch(self, batch: list[dict[str, Any]]) -> None:
        self.plugin.emit("task_status", {"sid": self.sid, "tasks": batch}, owner=self.owner)

    @property
    def active(self) -> int:
        return self.counts[QUEUED] + self.counts[RUNNING]

    def running_processes(self) -> int:
        return sum(getattr(b, "running_processes", 0) for b in self.backends.values())

    async def close(self) -> None:
        """Kill the session's processes, shut its backends down, and report every task
        that had not finished as CANCELED."""
        self.closing = True
        active = self.active
        await self.kill_remote_processes()
        for backend in self.backends.values():
            await _shutdown_quietly(backend)
        for rec in list(self.records.values()):
            if not rec.final:  # a backend that dropped tasks silently on shutdown (dask)
                self._finish(rec, rec.task or {"uid": rec.uid}, CANCELED)
                entry, size = rec.event_entry(self.plugin.settings.event_output_bytes)
                self.batcher.add(rec.uid, entry, size)
        self.batcher.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)
        log.info("rhapsody: session %s… closed after %d task(s); %d unfinished were stopped",
                 self.sid[:8], self.submitted_total, active)

    def remote_pid(self, uid: str) -> int | None:
        """The pid of dask-run executable ``uid`` while it runs (from its pid file)."""
        try:
            return int((self.pid_dir / uid).read_text())
        except (OSError, ValueError):
            return None

    async def kill_remote_processes(self) -> None:
        """Kill the process groups of executables running on dask workers of this host."""
        pids = [pid for pid in (self.remote_pid(p.name) for p in self.pid_dir.glob("task.*")
                                if not p.name.endswith(".tmp")) if pid]
        grace = self.plugin.settings.kill_grace
        await asyncio.gather(*[self.plugin.kill_group(pid, grace) for pid in pids])

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"backends": list(self.backends), "tasks": self.submitted_total, "active": self.active})
        return info


async def _shutdown_quietly(backend: Any) -> None:
    try:
        await backend.shutdown()
    except Exception:
        log.exception("rhapsody: shutting down backend %s failed", getattr(backend, "name", backend))


class RhapsodyPlugin(Plugin):
    name = "rhapsody"
    version = "1.0.0"
    description = DESCRIPTION
    session_class = RhapsodySession
    ui_schema = UI_SCHEMA
    # A session starts a thread pool and, with dask, a cluster of worker processes
    # (issue 20: three calls by a viewer started 7 processes): only users may open one,
    # and fewer of them than of the sessions that hold nothing.
    viewers_may_open_sessions = False
    max_sessions_per_user = 8
    max_sessions = 32

    def __init__(self, host: Any, config: dict[str, Any] | None = None) -> None:
        super().__init__(host, config)
        self.settings = Settings()
        self.limits = Limits()
        self.registry = FunctionRegistry()
        self.agent_slots: asyncio.Semaphore | None = None
        self.spawner: ThreadPoolExecutor | None = None
        self.work_dir = self.host.state_dir / "rhapsody"
        self.history = TaskHistory(self.host.state_dir / "rhapsody-history")
        self._modules: asyncio.Future | None = None

    async def start(self) -> None:
        # Bad options stop the plugin here (the agent logs why and serves the others).
        self.settings = settings = Settings.from_config(self.config)
        self.session_ttl = settings.session_ttl
        self.limits = Limits(max_output_bytes=settings.max_output_bytes,
                             event_output_bytes=settings.event_output_bytes,
                             max_return_bytes=settings.max_return_bytes,
                             allow_shell=settings.allow_shell, allow_pickled=settings.allow_pickled)
        # Importing the admin's function modules may be slow: not on the event loop.
        self.registry = await asyncio.to_thread(FunctionRegistry, settings.functions,
                                                builtins=settings.builtin_functions)
        self.agent_slots = asyncio.Semaphore(settings.max_processes)
        if settings.spawn_threads:
            self.spawner = ThreadPoolExecutor(max_workers=settings.spawn_threads, thread_name_prefix="rhapsody-spawn")
        self.work_dir = await asyncio.to_thread(_make_work_dir, settings.work_dir, self.host.state_dir)
        await asyncio.to_thread(self.history.open)
        self._modules = asyncio.ensure_future(asyncio.to_thread(_import_rhapsody))
        self._modules.add_done_callback(_log_import_failure)
        self.ui_schema = self._ui_schema()
        if settings.allow_pickled:
            log.warning("rhapsody: allow_pickled is on: callers can run arbitrary Python code in this agent")

    async def stop(self) -> None:
        await super().stop()
        self.history.close()
        if self.spawner is not None:
            self.spawner.shutdown(wait=False)
        if self._modules is not None and not self._modules.done():
            self._modules.cancel()

    def _ui_schema(self) -> dict[str, Any]:
        schema = copy.deepcopy(UI_SCHEMA)
        for form_field in schema["forms"][0]["fields"]:
            if form_field["name"] == "function":
                form_field["options"] = self.registry.names()
            elif form_field["name"] == "kind" and not self.settings.allow_shell:
                form_field["options"] = ["executable", "function"]
        return schema

    async def rhapsody_modules(self) -> tuple[Any, Any]:
        """``(rhapsody, backend module)``, once imported; 501 if rhapsody is not installed."""
        if self._modules is None:
            raise HTTPError(503, "not_started", "the rhapsody plugin has not started")
        try:
            return await asyncio.shield(self._modules)
        except ImportError as exc:
            raise HTTPError(501, "rhapsody_missing", f"rhapsody-py is not installed on this edge ({exc}); "
                            "install it with: pip install 'rhapsody-py>=0.6,<0.7'") from None

    def running_processes(self) -> int:
        return sum(s.running_processes() for s in self.sessions.values()
                   if isinstance(s, RhapsodySession) and hasattr(s, "backends"))

    # -- routes without a session ----------------------------------------------------------

    @route("GET", "health")
    async def _health(self, request: Request) -> dict[str, Any]:
        """The built-in health answer, plus whether rhapsody is usable and the process load."""
        info = await super()._health(request)
        modules = self._modules
        if modules is None or not modules.done():
            rhapsody: dict[str, Any] = {"available": None, "detail": "still importing"}
        elif modules.cancelled() or modules.exception() is not None:
            info["status"] = "degraded"
            reason = "import canceled" if modules.cancelled() else modules.exception()
            rhapsody = {"available": False, "detail": f"cannot import rhapsody-py: {reason}"}
        else:
            rhapsody = {"available": True, "version": getattr(modules.result()[0], "__version__", "?")}
        info["rhapsody"] = rhapsody
        info["processes"] = {"running": self.running_processes(), "limit": self.settings.max_processes}
        return info

    @route("GET", "backends")
    async def backends(self, request: Request) -> dict[str, Any]:
        """The backends this plugin offers, and whether each really works here."""
        _, backend_mod = await self.rhapsody_modules()
        status = await asyncio.to_thread(backend_mod.backend_status)
        for name, info in status.items():
            info["allowed"] = name in self.settings.backends
        return {"backends": status, "default": "concurrent"}

    @route("GET", "functions")
    async def functions(self, request: Request) -> dict[str, Any]:
        """The functions function tasks may name."""
        return {"functions": self.registry.describe(), "errors": self.registry.errors,
                "allow_pickled": self.settings.allow_pickled, "allow_shell": self.settings.allow_shell}

    # -- session routes ----------------------------------------------------------------

    @route("POST", "submit/{sid}")
    async def submit(self, request: Request, session: RhapsodySession) -> list[dict[str, Any]]:
        """Submit tasks; answers ``[{uid, state}]`` in the order given. All or nothing: one
        bad description refuses the whole call (400 naming its index).

        With an ``Idempotency-Key`` header, a retry of the same call (same key, same body)
        answers the tasks of the first one instead of submitting them again; the same key
        with another body is a 409. The session remembers its last 1,000 keys (fewer when
        they stand for more than 100,000 tasks)."""
        if session.closing:
            raise HTTPError(410, "session_expired", f"session '{session.sid}' is closing")
        key = request.headers.get("idempotency-key")
        if not key:
            return await self._submit(request, session)
        if len(key) > 255:
            raise HTTPError(400, "bad_request", "Idempotency-Key must be at most 255 characters")
        fingerprint = hashlib.sha256(request.body).hexdigest()
        known = session.idempotent.get(key)
        if known is not None:
            if known[0] != fingerprint:
                raise HTTPError(409, "idempotency_conflict", "this Idempotency-Key was used for another submit "
                                "in this session")
            uids = await asyncio.shield(known[1])
            return [{"uid": uid, "state": rec.state if rec else "UNKNOWN"}
                    for uid, rec in ((u, session.records.get(u)) for u in uids)]
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        session.idempotent[key] = (fingerprint, done)
        session.forget_idempotency_keys()
        try:
            return await self._submit(request, session, accepted=done.set_result)
        except BaseException as exc:
            if not done.done():
                # Refused before any task existed: a retry with this key must try again.
                session.idempotent.pop(key, None)
                done.set_exception(exc if isinstance(exc, Exception) else HTTPError(503, "canceled", "canceled"))
                done.exception()  # retrieved here; retries waiting on it re-raise it
            raise

    async def _submit(self, request: Request, session: RhapsodySession,
                      accepted: Callable[[list[str]], None] | None = None) -> list[dict[str, Any]]:
        specs = self._task_specs(request.json(default=None))
        if not specs:
            if accepted is not None:
                accepted([])
            return []
        settings = self.settings
        if session.active + len(specs) > settings.max_tasks_per_session:
            raise HTTPError(429, "too_many_tasks", f"the session has {session.active} unfinished task(s); "
                            f"{len(specs)} more would exceed this edge's limit of {settings.max_tasks_per_session}")
        backends = list(session.backends)
        lookup = self.registry.get
        plans = []
        for i, spec in enumerate(specs):
            plans.append(parse_task(spec, i, limits=self.limits, functions=lookup, backends=backends))
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)  # thousands of tasks: let other requests through meanwhile
        make = session.compute_task
        records = []
        tasks = []
        for i, plan in enumerate(plans):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            backend = plan.backend or session.default_backend
            remote = backend != "concurrent" and plan.kind != FUNCTION
            compute = self._remote_compute(plan, session) if remote else plan.compute
            try:
                task = make(**compute)
            except Exception as exc:  # rhapsody's own validation
                raise HTTPError(400, "bad_task", f"task {i}: {exc}") from None
            if remote:
                task["kwargs"]["pid_file"] = str(session.pid_dir / task["uid"])
            records.append(TaskRecord(task, plan, backend))
            tasks.append(task)
        for rec in records:
            session.records[rec.uid] = rec
        session.counts[QUEUED] += len(records)
        session.submitted_total += len(records)
        if accepted is not None:
            accepted([rec.uid for rec in records])
        try:
            # Shielded: once the records exist the tasks must reach the backend, even if
            # the caller gives up on this request (they would sit QUEUED forever).
            await asyncio.shield(session.rh.submit_tasks(tasks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("rhapsody: submitting %d task(s) failed", len(tasks))
            for rec in records:
                if not rec.final:
                    rec.task["exception"] = exc
                    session.on_state(rec.task, FAILED)
            raise HTTPError(502, "submit_failed", f"the backend refused the tasks: {type(exc).__name__}: {exc}")
        return [{"uid": rec.uid, "state": rec.state} for rec in records]

    def _remote_compute(self, plan: Any, session: RhapsodySession) -> dict[str, Any]:
        """An executable for dask, as a function task running :func:`~.runner.run_blocking`
        on the worker: rhapsody's own dask runner keeps all output in memory and leaves
        no way to kill the process."""
        opts = plan.compute["task_backend_specific_kwargs"]
        kwargs = {"cwd": opts.get("cwd"), "env": opts.get("env"), "output_limit": self.settings.max_output_bytes,
                  "timeout": plan.timeout, "kill_grace": self.settings.kill_grace}
        compute = {"function": session.run_blocking, "args": (plan.argv(),), "kwargs": kwargs}
        if "backend" in plan.compute:
            compute["backend"] = plan.compute["backend"]
        return compute

    def _task_specs(self, body: Any) -> list[Any]:
        if isinstance(body, dict) and "tasks" in body:
            specs = body["tasks"]
        elif isinstance(body, list):
            specs = body
        elif isinstance(body, dict) and body:
            specs = self._form_tasks(body)
        else:
            raise HTTPError(400, "bad_request", 'body must be {"tasks": [task, ...]}')
        if not isinstance(specs, list):
            raise HTTPError(400, "bad_request", "tasks must be a list of task descriptions")
        if len(specs) > self.settings.max_tasks_per_request:
            raise HTTPError(413, "too_many_tasks", f"{len(specs)} tasks in one call; this edge accepts at most "
                            f"{self.settings.max_tasks_per_request} (split them over several calls)")
        return specs

    def _form_tasks(self, form: dict[str, Any]) -> list[dict[str, Any]]:
        """One task (times ``count``) from the portal's generic form or a bare task object."""
        task = {k: v for k, v in form.items() if v not in ("", None)}
        kind = task.pop("kind", None)
        count = task.pop("count", 1)
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise HTTPError(400, "bad_request", "count must be a whole number") from None
        if not 1 <= count <= self.settings.max_tasks_per_request:
            raise HTTPError(400, "bad_request", f"count must be between 1 and {self.settings.max_tasks_per_request}")
        if kind == "function":
            for key in ("executable", "arguments", "cwd", "shell"):
                task.pop(key, None)
        elif kind in ("executable", "shell"):
            for key in ("function", "args", "kwargs"):
                task.pop(key, None)
            if kind == "shell":
                task["shell"] = True
        elif kind is not None:
            raise HTTPError(400, "bad_request", "kind must be executable, shell or function")
        return [task] * count

    @route("POST", "wait/{sid}", readonly=True)
    async def wait(self, request: Request, session: RhapsodySession) -> Response:
        """Wait until the tasks ``uids`` (default: all of the session's) are final or
        ``timeout`` seconds passed; answer their task dicts either way, in the order
        asked. Header ``x-edge-tasks-pending`` counts those not final (non-zero: timed out)."""
        body = request.json_object()
        records = self._records(session, body.get("uids"))
        timeout = body.get("timeout")
        if timeout is None:
            timeout = self.settings.wait_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
                0 <= timeout <= self.settings.max_wait_timeout):
            raise HTTPError(400, "bad_request", f"timeout must be between 0 and {self.settings.max_wait_timeout:g} "
                                                "seconds")
        pending = [rec.wait_future() for rec in records if not rec.final]
        if pending and timeout > 0:
            await asyncio.wait(pending, timeout=timeout)
        still = sum(1 for rec in records if not rec.final)
        return Response.json([rec.to_dict() for rec in records], headers={"x-edge-tasks-pending": str(still)})

    def _records(self, session: RhapsodySession, uids: Any) -> list[TaskRecord]:
        if uids is None:
            return list(session.records.values())
        if not isinstance(uids, list):
            raise HTTPError(400, "bad_request", "uids must be a list of task uids")
        records = []
        missing = []
        for item in uids:
            uid = item.get("uid") if isinstance(item, dict) else item
            rec = session.records.get(uid) if isinstance(uid, str) else None
            if rec is None:
                missing.append(str(uid))
            else:
                records.append(rec)
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise HTTPError(404, "unknown_task", f"no task(s) {shown} in this session")
        return records

    def _record(self, session: RhapsodySession, uid: str) -> TaskRecord:
        rec = session.records.get(uid)
        if rec is None:
            raise HTTPError(404, "unknown_task", f"no task '{uid}' in this session"
                            + (" (finished tasks beyond max_tasks_per_session are forgotten)" if session.evicted
                               else ""))
        return rec

    @route("GET", "task/{sid}/{uid}")
    async def task(self, request: Request, session: RhapsodySession, uid: str) -> dict[str, Any]:
        """One task's dict."""
        rec = self._record(session, uid)
        if rec.pid is None and not rec.final and rec.kind != FUNCTION and rec.backend != "concurrent":
            rec.pid = session.remote_pid(uid)  # started on a dask worker yet?
        return rec.to_dict()

    @route("POST", "cancel/{sid}/{uid}")
    async def cancel(self, request: Request, session: RhapsodySession, uid: str) -> dict[str, Any]:
        """Stop a task for real and say what happened: ``canceled`` (it will not run or was
        killed), ``was_running``, ``killed`` and ``signal`` (its process group was signalled),
        ``state`` afterwards and a ``detail`` in words."""
        rec = self._record(session, uid)
        backend = session.backends.get(rec.backend)
        if rec.final:
            outcome = {"canceled": False, "was_running": False, "killed": False, "signal": None,
                       "detail": f"the task had already finished ({rec.state}) before the cancel"}
        elif backend is not None and hasattr(backend, "kill_task"):
            outcome = await backend.kill_task(uid)
        else:
            outcome = await self._cancel_remote(session, backend, rec)
        return {"uid": uid, "state": rec.state, "pid": rec.pid, **outcome}

    async def _cancel_remote(self, session: RhapsodySession, backend: Any, rec: TaskRecord) -> dict[str, Any]:
        """Cancel a task of a backend that runs it elsewhere (dask): cancel its future, and
        kill the process group of an executable that already runs on a worker of this host."""
        pid = session.remote_pid(rec.uid) if rec.kind != FUNCTION else None
        if pid:
            rec.pid = pid
        canceled = await backend.cancel_task(rec.uid)
        sent = await self.kill_group(pid, self.settings.kill_grace) if pid else None
        await asyncio.wait({rec.wait_future()}, timeout=self.settings.kill_grace + 5)
        if sent is not None:
            return {"canceled": rec.state == CANCELED, "was_running": True, "killed": True,
                    "signal": signal_name(sent), "detail": f"process {pid} on the {rec.backend} worker and its "
                                                           f"process group were killed with {signal_name(sent)}"}
        if rec.kind == FUNCTION:
            detail = (f"{rec.backend} cannot interrupt a function that already started on a worker: if it had "
                      "started, it runs to completion and its result is discarded")
        else:
            detail = "canceled before its process started" if canceled else "the task could not be canceled"
        return {"canceled": bool(canceled) and rec.state == CANCELED, "was_running": None if rec.kind == FUNCTION
                else False, "killed": False, "signal": None, "detail": detail}

    async def kill_group(self, pgid: int, grace: float) -> int | None:
        _, backend_mod = await self.rhapsody_modules()
        return await backend_mod.kill_group(pgid, grace)

    @route("GET", "statistics/{sid}")
    async def statistics(self, request: Request, session: RhapsodySession) -> dict[str, Any]:
        """Counts by state, process and thread use against their limits, and events sent."""
        settings = self.settings
        return {
            "sid": session.sid,
            "backends": list(session.backends),
            "default_backend": session.default_backend,
            "tasks": {"submitted": session.submitted_total, "active": session.active,
                      "retained": len(session.records), "forgotten": session.evicted, "by_state": dict(session.counts)},
            "processes": {"running": session.running_processes(), "limit": session.max_processes,
                          "running_on_agent": self.running_processes(), "limit_on_agent": settings.max_processes},
            "functions": {"running": sum(getattr(b, "running_functions", 0) for b in session.backends.values()),
                          "threads": settings.max_workers},
            "events": {"emitted": session.batcher.events_emitted, "task_updates": session.batcher.updates},
            "created": session.created,
        }

    @route("GET", "history", readonly=True)
    async def task_history(self, request: Request) -> dict[str, Any]:
        """The caller's finished tasks, also of sessions that ended (agent restarts
        included), newest last: brief dicts with ``sid``. ``?limit=`` (default 200, at most
        1000). The edge's owner and admins get everyone's."""
        try:
            limit = int(request.arg("limit") or 200)
        except ValueError:
            raise HTTPError(400, "bad_request", "limit must be a whole number") from None
        if not 1 <= limit <= 1000:
            raise HTTPError(400, "bad_request", "limit must be between 1 and 1000")
        caller = request.caller
        if not caller.sees_everything and caller.uid is None:
            return {"tasks": []}
        key = None if caller.sees_everything else owner_key(caller.uid)
        records = await asyncio.to_thread(self.history.records, key, limit=limit)
        brief = ("uid", "sid", "owner", "name", "kind", "label", "state", "exit_code", "error", "submitted",
                 "started", "finished")
        return {"tasks": [{k: r.get(k) for k in brief} for r in records]}

    @route("GET", "history/{session_id}/{uid}", readonly=True)
    async def task_from_history(self, request: Request, session_id: str, uid: str) -> dict[str, Any]:
        """One finished task as the history keeps it (output tails, small return values)."""
        caller = request.caller
        if not caller.sees_everything and caller.uid is None:
            raise HTTPError(404, "unknown_task", f"no task '{uid}' in the history")
        key = None if caller.sees_everything else owner_key(caller.uid)
        record = await asyncio.to_thread(self.history.find, key, session_id, uid)
        if record is None:
            raise HTTPError(404, "unknown_task", f"no task '{uid}' of session '{session_id}' in the history")
        return record

    @route("GET", "list_tasks/{sid}")
    async def list_tasks(self, request: Request, session: RhapsodySession) -> dict[str, Any]:
        """Brief task dicts in submission order: ``?state=RUNNING`` filters, ``offset`` and
        ``limit`` (default 1000, at most 10000) page."""
        state = request.arg("state")
        if state is not None and state.upper() not in ALL_STATES:
            raise HTTPError(400, "bad_request", f"state must be one of {', '.join(ALL_STATES)}")
        try:
            offset = int(request.arg("offset") or 0)
            limit = int(request.arg("limit") or 1000)
        except ValueError:
            raise HTTPError(400, "bad_request", "offset and limit must be whole numbers") from None
        if offset < 0 or not 1 <= limit <= 10_000:
            raise HTTPError(400, "bad_request", "offset must be >= 0 and limit between 1 and 10000")
        records: Any = session.records.values()
        if state is not None:
            wanted = state.upper()
            records = [r for r in records if r.state == wanted]
        else:
            records = list(records)
        return {"tasks": [r.brief() for r in records[offset:offset + limit]], "total": len(records),
                "offset": offset, "limit": limit}


def _make_work_dir(configured: str, state_dir: Path) -> Path:
    path = Path(configured).expanduser() if configured else state_dir / "rhapsody"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _log_import_failure(future: asyncio.Future) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("rhapsody: rhapsody-py cannot be imported (%s); sessions will be refused", exc)
