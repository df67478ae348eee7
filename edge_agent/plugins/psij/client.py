"""SDK client of the psij plugin (needs only httpx; never imports psij).

    pj = bc.get_edge_client("my-edge").get_plugin("psij")
    job = pj.submit_job({"executable": "/bin/hostname", "attributes": {"queue_name": "debug"}}, executor="slurm")
    final = pj.wait_job(job["job_id"], timeout=600, progress=True)
    print(final["state"], final["exit_code"], final["stdout"])

    array = pj.submit_array({"executable": "/bin/sh", "arguments": ["-c", "run $SLURM_ARRAY_TASK_ID"]}, "0-19")
    pj.retry_failed_tasks(array["job_id"])                  # only the tasks that failed, as a new array
    sweep = pj.submit_sweep({"executable": "fit"}, [["--lr", "0.1"], ["--lr", "0.01"]], executor="slurm")
    results = sweep.wait()                                  # [{index, params, state, exit_code, stdout, …}]
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

from ...backoff import backoff_delay
from ...client.errors import (
    BridgeUnavailable,
    ConnectionFailed,
    EdgeDisconnected,
    EdgeOffline,
    EdgeTimeout,
    RateLimited,
)
from ...client.plugin import PluginClient
from .sweep import Sweep, submit_sweep

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELED"})
# Errors after which a submit may or may not have reached the edge: retried with the same
# idempotency key, so the edge returns the first job instead of submitting a second one.
RETRYABLE = (ConnectionFailed, EdgeDisconnected, EdgeTimeout, EdgeOffline, BridgeUnavailable, RateLimited)
# 503s that retrying cannot fix.
PERMANENT = frozenset({"psij_unavailable"})

Progress = Callable[[dict[str, Any]], None]


class PsijClient(PluginClient):
    """Batch jobs on one edge. Jobs belong to your user, not to this client's session."""

    def executors(self) -> dict[str, Any]:
        """Which executors the edge can use: ``{"executors": [{name, loads, enabled, ready, …}], "default"}``."""
        return self.call("GET", "executors")

    def submit_job(self, job_spec: dict[str, Any], executor: str = "local", idempotency_key: str | None = None,
                   *, retries: int = 3, after: dict[str, list[str] | str] | None = None) -> dict[str, Any]:
        """Submit a job; returns ``{"job_id", "native_id", "executor", "state", "replayed"}``.

        Every submit carries an idempotency key (a fresh one unless you pass your own), and
        a submit whose answer was lost (connection dropped, bridge or edge restarting) is
        retried up to ``retries`` times with the same key: the edge then returns the job it
        already submitted instead of submitting another. Pass your own key to make retries
        across program runs safe too. Invalid specs and scheduler rejections raise
        :class:`~edge_agent.client.errors.BadRequest` carrying the scheduler's message.

        ``after`` makes the scheduler hold the job until others of yours on this edge have
        ``succeeded``, ``failed`` or ``ended``: ``after={"succeeded": [a["job_id"]]}``
        (Slurm's ``--dependency``, PBS's ``-W depend``; the same as ``job_spec["after"]``).
        """
        if after:
            job_spec = {**job_spec, "after": after}
        key = idempotency_key or uuid.uuid4().hex
        body = {"job_spec": job_spec, "executor": executor}
        for attempt in range(retries + 1):
            try:
                return self.call("POST", "submit/{sid}", json=body, headers={"Idempotency-Key": key})
            except RETRYABLE as exc:
                if attempt >= retries or exc.error in PERMANENT:
                    raise
                wait = getattr(exc, "retry_after", None) or backoff_delay(attempt, base=1.0, cap=10.0)
                time.sleep(min(wait, 30.0))
        raise AssertionError("unreachable")

    def preview_job(self, job_spec: dict[str, Any], executor: str = "local") -> dict[str, Any]:
        """The batch script (``script``) or command line (``command``) a submit would use."""
        return self.call("POST", "preview/{sid}", json={"job_spec": job_spec, "executor": executor})

    def get_job_status(self, job_id: str, stdout_offset: int = 0, stderr_offset: int = 0, *,
                       max_bytes: int | None = None, output: bool = True) -> dict[str, Any]:
        """State, exit code and output of a job.

        ``stdout``/``stderr`` hold the bytes after the given offsets (at most ``max_bytes``
        each); pass the returned ``stdout_offset``/``stderr_offset`` back to read only what
        was added since. ``output=False`` skips the output entirely (cheap polling).
        """
        params: dict[str, Any] = {}
        if stdout_offset:
            params["stdout_offset"] = stdout_offset
        if stderr_offset:
            params["stderr_offset"] = stderr_offset
        if max_bytes is not None:
            params["max_bytes"] = max_bytes
        if not output:
            params["output"] = "false"
        return self.call("GET", f"status/{{sid}}/{job_id}", params=params or None)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask the scheduler to cancel the job (CANCELED shows once the scheduler confirms)."""
        return self.call("POST", f"cancel/{{sid}}/{job_id}")

    def list_jobs(self, *, state: str | list[str] | None = None, executor: str | None = None,
                  limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        """Your jobs, newest first: ``{"jobs": [...], "total"}`` (all jobs for the edge owner)."""
        params: dict[str, Any] = {}
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        if executor:
            params["executor"] = executor
        if limit is not None:
            params["limit"] = limit
        if offset is not None:
            params["offset"] = offset
        return self.call("GET", "list_jobs/{sid}", params=params or None)

    def save_template(self, name: str, job_spec: dict[str, Any], executor: str = "local", *,
                      shared: bool = False) -> dict[str, Any]:
        """Save (or replace) your job template ``name``; ``shared=True`` lets everyone who may
        use this edge see and submit it. Returns ``{template_id, name, owner, shared, body, …}``."""
        return self.call("POST", "templates/{sid}", json={"name": name, "shared": shared,
                                                          "body": {"job_spec": job_spec, "executor": executor}})

    def list_templates(self) -> list[dict[str, Any]]:
        """Your templates and those others shared on this edge (``mine`` tells them apart)."""
        return self.call("GET", "templates/{sid}")["templates"]

    def submit_template(self, template_id: str, *, job_spec: dict[str, Any] | None = None,
                        executor: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a template; ``job_spec`` fields override the template's (``arguments``,
        ``after``, …). Returns what :meth:`submit_job` returns, plus ``template_id``."""
        body: dict[str, Any] = {"job_spec": job_spec or {}}
        if executor:
            body["executor"] = executor
        return self.call("POST", f"templates/{{sid}}/{template_id}/submit", json=body,
                         headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})

    def delete_template(self, template_id: str) -> dict[str, Any]:
        return self.call("POST", f"templates/{{sid}}/{template_id}/delete")

    def get_job_report(self, job_id: str) -> dict[str, Any]:
        """A finished job's efficiency report, like Slurm's ``seff``: ``elapsed`` against
        ``walltime_requested``, ``cpu_efficiency``, ``memory_peak`` against ``memory_requested``,
        ``exit_code`` and ``reason``, ``node_list``, ``queue_wait``, a ``waste`` score (0..1) and
        plain ``verdicts`` ("asked for 64 GB, peaked at 3 GB"). Raises
        :class:`~edge_agent.client.errors.Conflict` (``job_not_finished``) while the job runs."""
        return self.call("GET", f"report/{{sid}}/{job_id}")

    def list_job_reports(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Reports of your most recent finished jobs (``limit``, default 50), most wasteful first."""
        params = {"limit": limit} if limit is not None else None
        return self.call("GET", "reports/{sid}", params=params)["reports"]

    # -- arrays and sweeps ----------------------------------------------------------------

    def submit_array(self, job_spec: dict[str, Any], indices: str | list[int], executor: str = "slurm", *,
                     throttle: int | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit a job array (Slurm ``--array``, PBS ``-J``): ``indices`` as ``"0-19"``,
        ``"1,3,5-9"`` or a list. Each task gets its index in ``$SLURM_ARRAY_TASK_ID``
        (``$PBS_ARRAY_INDEX``) and its own stdout/stderr. Returns what :meth:`submit_job` does."""
        array: dict[str, Any] = {"indices": indices, "throttle": throttle}
        return self.submit_job({**job_spec, "array": array}, executor=executor, idempotency_key=idempotency_key)

    def get_array_tasks(self, job_id: str) -> dict[str, Any]:
        """``{"job_id", "array", "tasks": [{index, state, exit_code, native_id, message,
        retried_by, stdout_path, stderr_path}]}`` of an array job."""
        return self.call("GET", f"tasks/{{sid}}/{job_id}")

    def get_task_output(self, job_id: str, index: int, stdout_offset: int = 0, stderr_offset: int = 0, *,
                        max_bytes: int | None = None) -> dict[str, Any]:
        """One task of an array with its stdout/stderr (offsets as in :meth:`get_job_status`)."""
        params = {k: v for k, v in (("stdout_offset", stdout_offset), ("stderr_offset", stderr_offset),
                                    ("max_bytes", max_bytes)) if v}
        return self.call("GET", f"task/{{sid}}/{job_id}/{int(index)}", params=params or None)

    def retry_failed_tasks(self, job_id: str, tasks: list[int] | None = None, *,
                           idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit an array's failed (and canceled) tasks again, or only ``tasks``, as a new
        array job: ``{"job_id", "native_id", "state", "retry_of", "tasks"}``. Raises
        :class:`~edge_agent.client.errors.Conflict` (``nothing_to_retry``) when none failed."""
        body = {"tasks": list(tasks)} if tasks is not None else {}
        return self.call("POST", f"retry/{{sid}}/{job_id}", json=body,
                         headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})

    def submit_sweep(self, job_spec: dict[str, Any], params: list[list | dict], executor: str = "slurm", *,
                     via: str = "auto", small_seconds: float = 60.0, throttle: int | None = None,
                     idempotency_key: str | None = None) -> Sweep:
        """Run ``job_spec`` once per argument set in ``params`` (a list appended to the
        arguments, or a dict of environment variables) and return a :class:`Sweep` whose
        ``wait()`` collects ``[{index, params, state, exit_code, stdout, stderr}]``.

        ``via="array"``: one job array, task *i* running set *i*. ``via="rhapsody"``: one
        rhapsody task per set on this edge (no scheduler queue). ``"auto"`` picks rhapsody
        when the edge has it and the tasks are small (``attributes.duration`` at most
        ``small_seconds``, one process, no queue, account or scheduler options), or the
        executor is ``local``; otherwise an array."""
        return submit_sweep(self, job_spec, params, executor=executor, via=via, small_seconds=small_seconds,
                            throttle=throttle, idempotency_key=idempotency_key)

    def wait_job(self, job_id: str, timeout: float | None = None, *, interval: float = 2.0,
                 progress: bool | Progress | None = None) -> dict[str, Any]:
        """Poll until the job ends; returns its final status, with output.

        ``progress=True`` prints each state change (with the time waited) to stderr; a
        callable is called with the status dict at each change instead. Raises
        ``TimeoutError`` (the job keeps running) when ``timeout`` seconds pass first.
        """
        report = _progress_printer(job_id) if progress is True else progress or None
        started = time.monotonic()
        last_state = None
        while True:
            status = self.get_job_status(job_id, output=False)
            if status["state"] != last_state:
                last_state = status["state"]
                if report:
                    report({**status, "waited": time.monotonic() - started})
            if status["state"] in FINAL_STATES:
                return self.get_job_status(job_id)
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job_id} still {status['state']} after {timeout:g} s")
            time.sleep(interval if left is None else max(min(interval, left), 0.05))

    def follow_output(self, job_id: str, *, interval: float = 1.0,
                      timeout: float | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(stream, text)`` as the job's stdout/stderr grow, until the job ends and
        everything was read. ``stream`` is ``"stdout"`` or ``"stderr"``."""
        offsets = {"stdout": 0, "stderr": 0}
        started = time.monotonic()
        while True:
            status = self.get_job_status(job_id, offsets["stdout"], offsets["stderr"])
            for stream in ("stdout", "stderr"):
                offsets[stream] = status[f"{stream}_offset"]
                if status.get(stream):
                    yield stream, status[stream]
            more = status.get("stdout_truncated") or status.get("stderr_truncated")
            if status["state"] in FINAL_STATES and not more:
                return
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"job {job_id} still {status['state']} after {timeout:g} s")
            if not more:
                time.sleep(interval)


def _progress_printer(job_id: str) -> Progress:
    def show(status: dict[str, Any]) -> None:
        extra = f" exit_code={status['exit_code']}" if status.get("exit_code") is not None else ""
        print(f"job {job_id} ({status.get('executor')} {status.get('native_id') or '-'}): "
              f"{status['state']}{extra} after {status['waited']:.0f} s", file=sys.stderr, flush=True)

    return show
