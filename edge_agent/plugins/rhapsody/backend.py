"""The rhapsody backends a session runs its tasks on. Imports rhapsody: load it lazily.

``concurrent`` is rhapsody's ConcurrentExecutionBackend with the task execution replaced
(rhapsody 0.6 gotchas 1 and 2: its ``cancel_task`` leaves the process running, and
executables are not throttled): executables run as :class:`~.runner.ProcessRun` children
under a per-session and an agent-wide process limit, with bounded output and a real kill;
functions run in the backend's thread pool, one slot per thread, so that QUEUED and
RUNNING mean what they say. Everything else (the Session, its state manager and wait
futures, task routing, backend lifecycle) is rhapsody's. This relies on the backend's
internal ``_handle_task``/``_callback_func``/``tasks`` of rhapsody-py 0.6 (pinned <0.7).

``dask`` is rhapsody's DaskExecutionBackend unchanged (a LocalCluster by default, or the
scheduler given in the plugin option ``dask``): cancelling a task that already started on
a worker does not stop it, and the plugin says so.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import traceback
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable

from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody.backends.constants import BackendMainStates

from .runner import PIPE_GRACE, ProcessRun, kill_group, run_blocking, signal_name
from .tasks import CANCELED, DONE, FAILED, FUNCTION, RUNNING, TaskRecord

KNOWN_BACKENDS = ("concurrent", "dask")
__all__ = ["KNOWN_BACKENDS", "BackendMissing", "BackendUnavailable", "EdgeConcurrentBackend", "backend_status",
           "kill_group", "make_dask_backend", "run_blocking"]


class BackendUnavailable(Exception):
    """The backend cannot run on this edge: it failed to start."""


class BackendMissing(BackendUnavailable):
    """The backend's packages are not installed on this edge."""


class _Skipped(Exception):
    """A function task was canceled after it was handed to the pool, before it started."""


class _FunctionFailed(Exception):
    """A function task raised ``error``; ``traceback`` is formatted in its thread."""

    def __init__(self, error: Exception, traceback: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.traceback = traceback


def _uncancel() -> None:
    # The cancellation was ours and has been handled: let the task go on (Python 3.11+
    # counts cancellations; asyncio.timeout/wait_for inside would misread a stale count).
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


class EdgeConcurrentBackend(ConcurrentExecutionBackend):
    """rhapsody's concurrent backend with killable, throttled, bounded executables."""

    def __init__(self, *, records: dict[str, TaskRecord], max_workers: int, process_slots: asyncio.Semaphore,
                 agent_slots: asyncio.Semaphore, output_limit: int, kill_grace: float,
                 spawner: Executor | None = None, name: str = "concurrent") -> None:
        super().__init__(ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rhapsody-fn"), name=name)
        self.records = records
        self.function_slots = asyncio.Semaphore(max_workers)
        self.process_slots = process_slots
        self.agent_slots = agent_slots
        self.output_limit = output_limit
        self.kill_grace = kill_grace
        self.spawner = spawner
        self.running_processes = 0
        self.running_functions = 0
        # Makes "has the thread started the function?" and "cancel it" one atomic step.
        self._cancel_lock = threading.Lock()

    # -- execution (replaces rhapsody's) --------------------------------------------------

    async def _handle_task(self, task: dict[str, Any]) -> None:
        rec = self.records[task["uid"]]
        try:
            if task.get("function") is not None:
                state = await self._run_function(task, rec)
            else:
                state = await self._run_process(task, rec)
        except asyncio.CancelledError:
            _uncancel()
            state = CANCELED
        except Exception as exc:  # a bug here must not leave the task hanging forever
            self.logger.exception("rhapsody task %s failed in the backend", task.get("uid"))
            task.update({"exception": exc, "exit_code": 1, "stderr": str(exc)})
            state = FAILED
        self._callback_func(task, state)

    def _started(self, task: dict[str, Any], rec: TaskRecord) -> None:
        rec.started = time.time()
        self._callback_func(task, RUNNING)

    async def _run_function(self, task: dict[str, Any], rec: TaskRecord) -> str:
        async with self.function_slots:
            if rec.cancel_requested:
                return CANCELED
            self._started(task, rec)
            self.running_functions += 1
            try:
                cfut = self.executor.submit(self._call, rec, task["function"], task.get("args") or (),
                                            task.get("kwargs") or {})
                result = await asyncio.wrap_future(cfut)
            except _Skipped:
                return CANCELED
            except _FunctionFailed as failed:
                task.update({"exception": failed.error, "exit_code": 1, "stdout": "", "stderr": failed.traceback})
                return FAILED
            except Exception as exc:  # the pool refused it (shut down)
                task.update({"exception": exc, "exit_code": 1, "stdout": "", "stderr": str(exc)})
                return FAILED
            finally:
                self.running_functions -= 1
        task.update({"return_value": result, "exit_code": 0, "stdout": "", "stderr": ""})
        return DONE

    def _call(self, rec: TaskRecord, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
        """Runs in a pool thread."""
        with self._cancel_lock:
            if rec.cancel_requested:
                raise _Skipped()
            rec.thread_started = True
        try:
            if inspect.iscoroutinefunction(fn):
                return asyncio.run(fn(*args, **kwargs))
            return fn(*args, **kwargs)
        except Exception as exc:
            # The traceback from the function's own frame down (not the pool's frames).
            tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            raise _FunctionFailed(exc, "".join(traceback.format_exception(type(exc), exc, tb))) from None

    async def _run_process(self, task: dict[str, Any], rec: TaskRecord) -> str:
        async with self.process_slots, self.agent_slots:
            if rec.cancel_requested:
                return CANCELED
            opts = task.get("task_backend_specific_kwargs") or {}
            if opts.get("shell"):
                argv = ["/bin/sh", "-c", task["executable"]]
            else:
                argv = [task["executable"], *task.get("arguments", [])]
            try:
                run = await ProcessRun.start(argv, cwd=opts.get("cwd"), env=opts.get("env"),
                                             output_limit=self.output_limit, spawner=self.spawner)
            except OSError as exc:
                # The shell's conventions: 127 not found, 126 not executable.
                code = 127 if isinstance(exc, FileNotFoundError) else 126 if isinstance(exc, PermissionError) else 1
                task.update({"exception": exc, "exit_code": code, "stdout": "", "stderr": str(exc)})
                return FAILED
            rec.run = run
            rec.pid = run.pid
            self.running_processes += 1
            try:
                self._started(task, rec)
                try:
                    if rec.timeout:
                        await asyncio.wait_for(asyncio.shield(run.exited), rec.timeout)
                    else:
                        await asyncio.shield(run.exited)
                except asyncio.TimeoutError:
                    rec.timed_out = True
                    await self._stop(run)
                except asyncio.CancelledError:
                    _uncancel()
                    if run.running:
                        await self._stop(run)
                        await asyncio.shield(run.done)
                        task["exit_code"] = run.returncode
                        return CANCELED
                    # It ended on its own just before the cancel: report what really happened.
                await asyncio.shield(run.done)
            finally:
                self.running_processes -= 1
        task["exit_code"] = run.returncode
        return DONE if run.returncode == 0 and not rec.timed_out else FAILED

    async def _stop(self, run: ProcessRun) -> None:
        # Shielded: a second cancellation (session closing) must not abandon the kill.
        await asyncio.shield(asyncio.ensure_future(run.terminate(self.kill_grace)))

    # -- cancel and shutdown ---------------------------------------------------------------

    async def kill_task(self, uid: str) -> dict[str, Any]:
        """Cancel task ``uid`` for real and say what happened.

        Queued tasks never start. A running executable's process group gets SIGTERM, then
        SIGKILL after the grace period, and this returns once the process is gone. A
        function already running in a thread cannot be interrupted: it is left alone and
        the answer says so.
        """
        rec = self.records[uid]
        entry = self.tasks.get(uid) or {}
        future = entry.get("future")
        if rec.final or future is None or future.done():
            return {"canceled": False, "was_running": False, "killed": False, "signal": None,
                    "detail": f"the task had already finished ({rec.state}) before the cancel"}
        if rec.kind == FUNCTION:
            with self._cancel_lock:
                started = rec.thread_started
                if not started:
                    rec.cancel_requested = True
            if started:
                return {"canceled": False, "was_running": True, "killed": False, "signal": None,
                        "detail": "the function is already running in a thread of the agent, which cannot be "
                                  "interrupted; it runs to completion"}
            future.cancel()
            await asyncio.wait({future})
            return {"canceled": True, "was_running": False, "killed": False, "signal": None,
                    "detail": "canceled before it started"}
        rec.cancel_requested = True
        was_running = rec.run is not None and rec.run.running
        run = rec.run
        future.cancel()
        await asyncio.wait({future})
        if rec.state != CANCELED:
            return {"canceled": False, "was_running": was_running, "killed": False, "signal": None,
                    "detail": f"the process ended on its own ({rec.state}) before it could be stopped"}
        if run is None:
            return {"canceled": True, "was_running": False, "killed": False, "signal": None,
                    "detail": "canceled before it started"}
        sent = run.signals[-1] if run.signals else None
        return {"canceled": True, "was_running": True, "killed": sent is not None,
                "signal": signal_name(sent) if sent else None,
                "detail": f"process {run.pid} and its process group were killed"
                          + (f" with {signal_name(sent)}" if sent else "")}

    async def cancel_task(self, uid: str) -> bool:
        """rhapsody's API, made truthful: True only if the task was really stopped."""
        if uid not in self.records:
            return False
        return (await self.kill_task(uid))["canceled"]

    async def shutdown(self) -> None:
        """Stop every task (killing processes), then release the thread pool without
        waiting for functions that cannot be interrupted (rhapsody's shutdown would block
        the event loop until they finish)."""
        self._backend_state = BackendMainStates.SHUTDOWN
        pending = set()
        for uid, entry in list(self.tasks.items()):
            fut = entry.get("future")
            if fut is None or fut.done():
                continue
            rec = self.records.get(uid)
            if rec is not None:
                rec.cancel_requested = True
            fut.cancel()
            pending.add(fut)
        if pending:
            await asyncio.wait(pending, timeout=self.kill_grace + PIPE_GRACE + 5)
        self.tasks.clear()
        self.executor.shutdown(wait=False, cancel_futures=True)


def backend_status() -> dict[str, dict[str, Any]]:
    """Which backends this edge can run, found by instantiating them (rhapsody's
    ``discover_backends`` reports every backend as available, installed or not)."""
    status: dict[str, dict[str, Any]] = {"concurrent": {"available": True, "detail": "threads and local processes"}}
    try:
        from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend

        DaskExecutionBackend()  # raises ImportError without dask; starts nothing until awaited
        status["dask"] = {"available": True, "detail": "dask.distributed (LocalCluster unless configured)"}
    except ImportError as exc:
        status["dask"] = {"available": False,
                          "detail": f"{exc} Install it on the edge: pip install 'rhapsody-py[dask]'"}
    return status


async def make_dask_backend(options: dict[str, Any]) -> Any:
    """Start a DaskExecutionBackend (``options`` go to ``dask.distributed.Client``)."""
    try:
        from rhapsody.backends.execution.dask_parallel import DaskExecutionBackend

        backend = DaskExecutionBackend(resources=dict(options))
    except ImportError as exc:
        raise BackendMissing(f"dask is not available on this edge ({exc}); "
                                 "install it with: pip install 'rhapsody-py[dask]'") from None
    try:
        return await backend
    except Exception as exc:
        raise BackendUnavailable(f"dask failed to start: {type(exc).__name__}: {exc}") from None
