"""Job arrays: one submit, many tasks (Slurm ``--array``, PBS ``-J``).

psij follows only an array's base id (its Slurm poll lists ``<base>_<index>`` lines that it
never matches, so it reports the whole array COMPLETED at its first poll). The plugin
follows arrays itself: one scheduler query per poll interval for all arrays of the edge,
per-task state and exit code kept in the job store, and the array job's own state made from
its tasks'. Everything here is pure (no psij, no subprocess): parsing, rendering, states.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from .spec import SpecError

MAX_TASKS = 10_000
MAX_INDEX = 4_000_000
# The per-task output files: like Slurm's own ``%a`` filename pattern.
TASK_PLACEHOLDER = "%a"
# The variable that holds a task's index inside the batch script.
# Torque (pbs_classic) has arrays too (-t, $PBS_ARRAYID), but its qstat has no JSON to follow them by.
INDEX_VARIABLES = {"slurm": "SLURM_ARRAY_TASK_ID", "pbs": "PBS_ARRAY_INDEX"}
ARRAY_OPTIONS = {"slurm": "slurm.array", "pbs": "pbs.J"}

_RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")

# Slurm's job states (squeue -O State, sacct State) as psij's.
SLURM_STATES = {
    "PENDING": "QUEUED", "REQUEUED": "QUEUED", "REQUEUE_FED": "QUEUED", "REQUEUE_HOLD": "QUEUED",
    "RESV_DEL_HOLD": "QUEUED", "CONFIGURING": "ACTIVE", "RUNNING": "ACTIVE", "COMPLETING": "ACTIVE",
    "SUSPENDED": "ACTIVE", "STOPPED": "ACTIVE", "SIGNALING": "ACTIVE", "STAGE_OUT": "ACTIVE",
    "RESIZING": "ACTIVE", "COMPLETED": "COMPLETED", "CANCELLED": "CANCELED", "FAILED": "FAILED",
    "TIMEOUT": "FAILED", "NODE_FAIL": "FAILED", "OUT_OF_MEMORY": "FAILED", "BOOT_FAIL": "FAILED",
    "DEADLINE": "FAILED", "PREEMPTED": "FAILED", "SPECIAL_EXIT": "FAILED", "REVOKED": "CANCELED",
}
# What a task that did not end by itself ran into.
SLURM_MESSAGES = {"TIMEOUT": "reached its time limit", "NODE_FAIL": "its node failed",
                  "OUT_OF_MEMORY": "ran out of memory", "BOOT_FAIL": "its node did not boot",
                  "DEADLINE": "missed its deadline", "PREEMPTED": "was preempted"}
TASK_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELED"})


def parse_array(raw: Any, where: str = "job_spec.array") -> dict[str, Any]:
    """``"0-19"``, ``"1,3,5-9:2%4"`` (``%N``: at most N tasks at once) or a list of indices
    → ``{"indices": [sorted unique ints], "throttle": N or None}``."""
    throttle = None
    if isinstance(raw, dict):
        extra = sorted(set(raw) - {"indices", "throttle"})
        if extra:
            raise SpecError(f"{where}.{extra[0]}", "unknown field; an array has \"indices\" and \"throttle\"")
        throttle = raw.get("throttle")
        raw = raw.get("indices")
    if isinstance(raw, str):
        text = raw.strip()
        if "%" in text:
            text, _, limit = text.partition("%")
            if not limit.isdigit():
                raise SpecError(where, f"the part after % is how many tasks may run at once, got {limit!r}")
            throttle = int(limit)
        indices = _indices_from_text(text, where)
    elif isinstance(raw, list):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
            raise SpecError(where, "a list of task indices must hold whole numbers")
        indices = set(raw)
    else:
        raise SpecError(where, "task indices such as \"0-19\", \"1,3,5-9\" or [0, 1, 2]")
    if not indices:
        raise SpecError(where, "no task indices")
    if min(indices) < 0 or max(indices) > MAX_INDEX:
        raise SpecError(where, f"task indices go from 0 to {MAX_INDEX}")
    if len(indices) > MAX_TASKS:
        raise SpecError(where, f"at most {MAX_TASKS} tasks, got {len(indices)}")
    if throttle is not None and (not isinstance(throttle, int) or isinstance(throttle, bool) or throttle < 1):
        raise SpecError(f"{where}.throttle", "how many tasks may run at once: a whole number, 1 or more")
    return {"indices": sorted(indices), "throttle": throttle}


def _indices_from_text(text: str, where: str) -> set[int]:
    indices: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise SpecError(where, f"{part.strip()!r} is not an index or a range such as 0-19 or 1-9:2")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        step = int(match[3]) if match[3] is not None else 1
        if last < first or step < 1:
            raise SpecError(where, f"{part.strip()!r}: a range goes up, by a step of 1 or more")
        if (last - first) // step + 1 > MAX_TASKS:
            raise SpecError(where, f"at most {MAX_TASKS} tasks")
        indices.update(range(first, last + 1, step))
    return indices


def compress(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2,5,7-8"`` (Slurm's ``--array`` list syntax)."""
    ordered = sorted(set(indices))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def scheduler_option(executor: str, array: dict[str, Any]) -> dict[str, str]:
    """The custom attribute that makes ``executor`` submit ``array``; SpecError when the
    scheduler cannot express it (PBS arrays are one range ``X-Y[:step]`` of two tasks or more)."""
    indices = array["indices"]
    if executor == "slurm":
        value = compress(indices)
        if array.get("throttle"):
            value += f"%{array['throttle']}"
        return {ARRAY_OPTIONS["slurm"]: value}
    if executor == "pbs":
        step = indices[1] - indices[0] if len(indices) > 1 else 1
        if len(indices) < 2 or indices != list(range(indices[0], indices[-1] + 1, step)):
            raise SpecError("job_spec.array", "PBS arrays are one range of two tasks or more, "
                                              "e.g. \"0-19\" or \"0-18:2\"")
        if array.get("throttle"):
            raise SpecError("job_spec.array", "PBS Professional has no limit of tasks at once (%N)")
        return {ARRAY_OPTIONS[executor]: f"{indices[0]}-{indices[-1]}" + (f":{step}" if step > 1 else "")}
    raise SpecError("job_spec.array", f"arrays need Slurm or PBS Professional (executor slurm or pbs); not {executor}")


def task_path(path: str, index: int) -> str:
    """A task's file from an array's ``%a`` path."""
    return path.replace(TASK_PLACEHOLDER, str(index))


def per_task_script(script: str, paths: list[str], executor: str) -> str:
    """psij's batch script with the array's ``%a`` paths made per task: psij quotes the paths
    it passes to its launcher, so the index variable is put in between the quoted parts."""
    variable = INDEX_VARIABLES[executor]
    for path in paths:
        if TASK_PLACEHOLDER not in path:
            continue
        quoted = shlex.quote(path)
        per_task = f'"${{{variable}}}"'.join(shlex.quote(part) if part else "" for part in path.split(TASK_PLACEHOLDER))
        script = script.replace(quoted, per_task)
    return script


# -- following arrays: what the scheduler says about tasks ---------------------------------------

SQUEUE_ARRAY_COMMAND = ["squeue", "--me", "-r", "-h", "-t", "all",
                        "-O", "ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,exit_code:|,Reason:"]


def sacct_array_command(bases: list[str]) -> list[str]:
    return ["sacct", "-X", "-n", "-P", "-j", ",".join(bases), "-o", "JobID,JobIDRaw,State,ExitCode"]


def parse_squeue_tasks(out: str, bases: set[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{base: {index: {state, exit_code, native_id, message}}}`` from SQUEUE_ARRAY_COMMAND."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 5 or cols[0] not in bases:
            continue
        base, index, native, raw_state, raw_exit = cols[:5]
        for i in _squeue_indices(index):
            task = _task(raw_state, _wait_status(raw_exit), native)
            if task["state"] == "QUEUED":
                task["native_id"] = None  # a pending task has no job id of its own yet
            found.setdefault(base, {})[i] = task
    return found


def _squeue_indices(text: str) -> list[int]:
    """``5`` or a pending range ``[5-9,12%2]`` (squeue prints one unless -r splits it)."""
    if text.isdigit():
        return [int(text)]
    inner = text.strip("[]").split("%")[0]
    try:
        return sorted(_indices_from_text(inner, "squeue"))
    except SpecError:
        return []


def _wait_status(text: str) -> int | None:
    """squeue's exit_code is the raw wait status: the exit code is its high byte."""
    try:
        return int(text) >> 8
    except ValueError:
        return None


def parse_sacct_tasks(out: str, bases: set[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """The same from ``sacct -X -P -o JobID,JobIDRaw,State,ExitCode`` (``12_3|15|FAILED|4:0``)."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for line in out.splitlines():
        cols = line.split("|")
        if len(cols) < 4 or "_" not in cols[0]:
            continue
        base, _, index = cols[0].partition("_")
        if base not in bases:
            continue
        state = cols[2].split()[0] if cols[2] else ""
        code = cols[3].split(":")[0]
        exit_code = int(code) if code.isdigit() else None
        for i in _squeue_indices(index):
            found.setdefault(base, {})[i] = _task(state, exit_code, cols[1] if index.isdigit() else None)
    return found


def _task(raw_state: str, exit_code: int | None, native_id: str | None) -> dict[str, Any]:
    state = SLURM_STATES.get(raw_state.upper(), "ACTIVE" if raw_state else "QUEUED")
    return {"state": state, "exit_code": exit_code if state in ("COMPLETED", "FAILED") else None,
            "native_id": native_id, "message": SLURM_MESSAGES.get(raw_state.upper())}


# PBS job states (qstat's job_state) as psij's; F and X are decided by Exit_status.
PBS_STATES = {"Q": "QUEUED", "H": "QUEUED", "W": "QUEUED", "T": "QUEUED", "M": "QUEUED",
              "R": "ACTIVE", "B": "ACTIVE", "E": "ACTIVE", "S": "ACTIVE", "U": "ACTIVE"}


def pbs_array_command(bases: list[str]) -> list[str]:
    """Every subjob of the arrays ``bases`` (``1234[].pbs01``), finished ones included."""
    return ["qstat", "-x", "-f", "-t", "-F", "json", *bases]


def parse_qstat_tasks(out: str, bases: set[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{base: {index: task}}`` from :func:`pbs_array_command`'s JSON (subjobs ``1234[5].pbs01``).
    A finished subjob with ``Exit_status`` 0 COMPLETED, another FAILED (PBS adds 256 to a signal:
    271 is SIGTERM, e.g. a walltime kill), one without any (deleted before it ran) CANCELED."""
    import json

    try:
        jobs = json.loads(out).get("Jobs") or {}
    except (ValueError, AttributeError):
        return {}
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for name, attrs in jobs.items():
        head, bracket, rest = name.partition("[")
        index_text, _, server = rest.partition("]")
        base = f"{head}[]{server}"
        if not bracket or not index_text.isdigit() or base not in bases or not isinstance(attrs, dict):
            continue
        raw = str(attrs.get("job_state", ""))
        status = attrs.get("Exit_status")
        message = None
        if raw in ("F", "X"):
            if status is None:
                state, exit_code = "CANCELED", None
            else:
                exit_code = int(status)
                state = "COMPLETED" if exit_code == 0 else "FAILED"
                if exit_code > 256:
                    message = f"killed by signal {exit_code - 256}"
        else:
            state, exit_code = PBS_STATES.get(raw, "QUEUED"), None
        native = name if state != "QUEUED" else None
        found.setdefault(base, {})[int(index_text)] = {"state": state, "exit_code": exit_code,
                                                       "native_id": native, "message": message}
    return found


def array_state(tasks: list[dict[str, Any]]) -> str:
    """The array's state from its tasks': QUEUED until one starts, ACTIVE until all ended,
    then COMPLETED if all succeeded, FAILED if one failed, else CANCELED."""
    states = [t["state"] for t in tasks]
    if not states or all(s == "QUEUED" for s in states):
        return "QUEUED"
    if not all(s in TASK_FINAL for s in states):
        return "ACTIVE"
    if all(s == "COMPLETED" for s in states):
        return "COMPLETED"
    return "FAILED" if "FAILED" in states else "CANCELED"


def counts(tasks: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for task in tasks:
        out[task["state"]] = out.get(task["state"], 0) + 1
    return out


def summary(tasks: list[dict[str, Any]]) -> str | None:
    """``3 of 20 tasks failed: 3, 7, 12`` for an array that did not all succeed."""
    failed = [t["index"] for t in tasks if t["state"] == "FAILED"]
    canceled = [t["index"] for t in tasks if t["state"] == "CANCELED"]
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {len(tasks)} tasks failed: {compress(failed)}")
    if canceled:
        parts.append(f"{len(canceled)} of {len(tasks)} tasks canceled: {compress(canceled)}")
    return "; ".join(parts) or None
