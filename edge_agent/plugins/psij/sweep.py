"""Parameter sweeps in the SDK: a list of argument sets becomes one job array (or, when the
tasks are small, rhapsody tasks), and the results come back in the order of the sets.

    pj = bc.get_edge_client("my-edge").get_plugin("psij")
    sweep = pj.submit_sweep({"executable": "/usr/bin/python3", "arguments": ["fit.py"],
                             "attributes": {"duration": 600, "queue_name": "debug"}},
                            [["--lr", "0.1"], ["--lr", "0.01"], {"LR": "0.001"}], executor="slurm")
    for result in sweep.wait(timeout=3600):
        print(result["index"], result["params"], result["state"], result["stdout"])

An argument set is a list (appended to the job's arguments) or a dict (environment
variables of that task only). In an array, task *i* runs set *i*: the job becomes a small
``/bin/sh`` script that picks the set by the scheduler's task index, so nothing has to be
copied to the edge first. Needs only httpx, like the rest of the SDK.
"""

from __future__ import annotations

import re
import shlex
import uuid
from typing import TYPE_CHECKING, Any, Union, cast

if TYPE_CHECKING:
    from ..rhapsody.client import RhapsodyClient
    from .client import PsijClient

ParamSet = Union[list, dict]
# The edge refuses one argument longer than this (spec.MAX_TEXT); the script is one argument.
MAX_SCRIPT = 60_000
# The task index in Slurm, PBS Professional and Torque arrays.
INDEX = '${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-$PBS_ARRAYID}}'
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RHAPSODY_STATES = {"DONE": "COMPLETED", "FAILED": "FAILED", "CANCELED": "CANCELED",
                   "QUEUED": "QUEUED", "RUNNING": "ACTIVE"}
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELED"})


def check_params(params: list[ParamSet]) -> list[tuple[list[str], dict[str, str]]]:
    """``(arguments, environment)`` of each set; ValueError naming the bad one."""
    if not isinstance(params, list) or not params:
        raise ValueError("params: a non-empty list of argument sets (lists or dicts)")
    out: list[tuple[list[str], dict[str, str]]] = []
    for i, one in enumerate(params):
        if isinstance(one, (list, tuple)):
            out.append(([str(a) for a in one], {}))
        elif isinstance(one, dict):
            bad = [k for k in one if not isinstance(k, str) or not _ENV_NAME.match(k)]
            if bad:
                raise ValueError(f"params[{i}]: {bad[0]!r} is not an environment variable name")
            out.append(([], {k: str(v) for k, v in one.items()}))
        else:
            raise ValueError(f"params[{i}]: a list of arguments or a dict of environment variables, "
                             f"got {type(one).__name__}")
    return out


def sweep_script(executable: str, arguments: list[str], params: list[ParamSet]) -> str:
    """A ``/bin/sh`` script that runs ``executable arguments + set[i]`` (with set *i*'s
    environment) in array task *i*, and fails with 64 for an index without a set."""
    lines = [f'case "{INDEX}" in']
    for i, (args, env) in enumerate(check_params(params)):
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items())
        lines.append(f"{i}) {exports}exec {shlex.join([executable, *arguments, *args])} ;;")
    lines.append('*) echo "no argument set for array task ' + INDEX + '" >&2; exit 64 ;;')
    lines.append("esac")
    script = "\n".join(lines) + "\n"
    if len(script) > MAX_SCRIPT:
        raise ValueError(f"the {len(params)} argument sets make a {len(script)}-byte script, more than one job "
                         f"argument may hold ({MAX_SCRIPT}); split the sweep in parts")
    return script


def is_small(job_spec: dict[str, Any], small_seconds: float) -> bool:
    """Whether a sweep's tasks are small enough for rhapsody: a single process, no scheduler
    options, and a stated duration of at most ``small_seconds``."""
    attributes = job_spec.get("attributes") or {}
    resources = job_spec.get("resources") or {}
    duration = attributes.get("duration")
    many = any((attributes.get(k) or resources.get(k) or 1) > 1 for k in ("node_count", "process_count"))
    scheduler = any(attributes.get(k) for k in ("queue_name", "account", "reservation_id"))
    return (isinstance(duration, (int, float)) and 0 < duration <= small_seconds and not many and not scheduler
            and not job_spec.get("custom_attributes"))


class Sweep:
    """A submitted sweep. ``via`` is ``"array"`` (``job_id`` is the array job) or
    ``"rhapsody"`` (``uids`` are its tasks). :meth:`wait` collects the results."""

    def __init__(self, client: PsijClient, params: list[ParamSet], *, via: str, job: dict[str, Any] | None = None,
                 tasks: list[dict[str, Any]] | None = None, rhapsody: Any = None) -> None:
        self.client = client
        self.params = params
        self.via = via
        self.job = job
        self.job_id = job["job_id"] if job else None
        self.uids = [t["uid"] for t in tasks or []]
        self._rhapsody = rhapsody

    def __repr__(self) -> str:
        what = f"job {self.job_id}" if self.via == "array" else f"{len(self.uids)} rhapsody tasks"
        return f"<Sweep of {len(self.params)} via {self.via}: {what}>"

    def wait(self, timeout: float | None = None, *, interval: float = 2.0,
             max_bytes: int | None = None) -> list[dict[str, Any]]:
        """Wait until every task ended; ``[{index, params, state, exit_code, stdout, stderr,
        message}]`` in the order of ``params`` (``state`` in psij's words: COMPLETED, FAILED,
        CANCELED). ``TimeoutError`` if ``timeout`` seconds pass first (the tasks keep running)."""
        if self.via == "rhapsody":
            tasks = self._rhapsody.wait_tasks(self.uids, timeout=timeout)
            results = [self._rhapsody_result(i, t) for i, t in enumerate(tasks)]
            if any(r["state"] not in FINAL for r in results):
                raise TimeoutError(f"sweep still running after {timeout:g} s")
            return results
        assert self.job_id is not None
        self.client.wait_job(self.job_id, timeout=timeout, interval=interval)
        return self.results(max_bytes=max_bytes)

    def results(self, *, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """The tasks as they are now (an array's output is read task by task)."""
        if self.via == "rhapsody":
            return [self._rhapsody_result(i, self._rhapsody.get_task(uid)) for i, uid in enumerate(self.uids)]
        assert self.job_id is not None
        out = []
        for task in self.client.get_array_tasks(self.job_id)["tasks"]:
            index = task["index"]
            one = self.client.get_task_output(self.job_id, index, max_bytes=max_bytes)
            out.append({"index": index, "params": self.params[index], "state": task["state"],
                        "exit_code": task["exit_code"], "stdout": one.get("stdout", ""),
                        "stderr": one.get("stderr", ""), "message": task.get("message"),
                        "retried_by": task.get("retried_by")})
        return out

    def retry_failed(self) -> Sweep:
        """Run the failed tasks again (arrays only): a new Sweep of the same ``params``
        whose array holds only those indices."""
        if self.via != "array" or self.job_id is None:
            raise ValueError("only an array sweep can retry its failed tasks; submit the rhapsody tasks again")
        job = self.client.retry_failed_tasks(self.job_id)
        return Sweep(self.client, self.params, via="array", job=job)

    def _rhapsody_result(self, index: int, task: dict[str, Any]) -> dict[str, Any]:
        state = RHAPSODY_STATES.get(task["state"], task["state"])
        return {"index": index, "params": self.params[index], "state": state,
                "exit_code": task.get("exit_code"), "stdout": task.get("stdout") or "",
                "stderr": task.get("stderr") or "", "message": task.get("error"), "uid": task["uid"]}


def submit_sweep(client: PsijClient, job_spec: dict[str, Any], params: list[ParamSet], *, executor: str,
                 via: str = "auto", small_seconds: float = 60.0, throttle: int | None = None,
                 idempotency_key: str | None = None) -> Sweep:
    """See :meth:`PsijClient.submit_sweep`."""
    sets = check_params(params)
    if via not in ("auto", "array", "rhapsody"):
        raise ValueError("via: 'auto', 'array' or 'rhapsody'")
    if via == "auto":
        small = is_small(job_spec, small_seconds) or executor == "local"
        via = "rhapsody" if small and "rhapsody" in client.edge.plugins() else "array"
    key = idempotency_key or uuid.uuid4().hex
    executable = job_spec["executable"]
    arguments = [str(a) for a in job_spec.get("arguments") or []]
    if via == "rhapsody":
        rhapsody = cast("RhapsodyClient", client.edge.get_plugin("rhapsody"))
        name = job_spec.get("name") or "sweep"
        base_env = {k: str(v) for k, v in (job_spec.get("environment") or {}).items()}
        tasks = [{"executable": executable, "arguments": [*arguments, *args], "name": f"{name}-{i}",
                  **({"env": {**base_env, **env}} if base_env or env else {}),
                  **({"cwd": job_spec["directory"]} if job_spec.get("directory") else {}),
                  **({"timeout": job_spec["attributes"]["duration"]}
                     if (job_spec.get("attributes") or {}).get("duration") else {})}
                 for i, (args, env) in enumerate(sets)]
        submitted = rhapsody.submit_tasks(tasks, idempotency_key=key)
        return Sweep(client, params, via="rhapsody", tasks=submitted, rhapsody=rhapsody)
    if executor == "local":
        raise ValueError("an array needs a batch scheduler (executor='slurm' or 'pbs'); "
                         "small local sweeps go to rhapsody (via='rhapsody')")
    spec = {**job_spec, "executable": "/bin/sh", "arguments": ["-c", sweep_script(executable, arguments, params),
                                                                 "sweep"],
            "array": {"indices": list(range(len(params))), "throttle": throttle}}
    job = client.submit_job(spec, executor=executor, idempotency_key=key)
    return Sweep(client, params, via="array", job=job)

