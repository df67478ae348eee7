"""Job reports: what a finished job used against what it asked for (like Slurm's ``seff``).

A report is built from the scheduler's accounting: ``sacct`` on Slurm (one call for any
number of jobs), ``qstat -x -f`` on PBS, and, for local jobs or when accounting is off,
only what the agent itself saw (its state history). The parsers here are pure functions of
the commands' text, tested with captured output; :func:`build_report` turns their facts into
the route's answer with plain verdicts ("asked for 64 GB, peaked at 3 GB").

Report fields (all optional except the ids): ``elapsed``, ``walltime_requested`` (seconds),
``queue_wait``, ``cpus``, ``cpu_time`` (core-seconds used), ``cpu_efficiency`` (0..1),
``memory_requested``, ``memory_peak`` (bytes), ``memory_efficiency``, ``exit_code``,
``signal``, ``reason``, ``node_list``, ``scheduler_state``, ``waste`` (0..1, how much of
what was asked for went unused) and ``verdicts``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ..queue_info.pbs import parse_blocks, pbs_time
from ..queue_info.records import parse_duration, to_int

# sacct's fields, in this order (``-P``: pipe-separated). All exist since Slurm 17.
SACCT_FIELDS = ("JobID", "JobName", "State", "ExitCode", "Reason", "Elapsed", "Timelimit", "TotalCPU",
                "AllocCPUS", "NNodes", "ReqMem", "MaxRSS", "NodeList", "Submit", "Start", "End",
                "Account", "Partition", "NTasks")
# Scheduler states in which accounting will not change any more.
SLURM_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                         "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"})
SLURM_REASONS = {
    "OUT_OF_MEMORY": "ran out of memory",
    "TIMEOUT": "hit its wall-time limit",
    "NODE_FAIL": "a node it ran on failed",
    "PREEMPTED": "was preempted",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "missed its deadline",
    "CANCELLED": "was cancelled",
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)([BW]?)\s*([nc]?)\s*$", re.IGNORECASE)
_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}


def sacct_command(native_ids: list[str]) -> list[str]:
    """One ``sacct`` call for all of ``native_ids`` (jobs and their steps, no header)."""
    return ["sacct", "-j", ",".join(native_ids), "-P", "-n", "--format=" + ",".join(SACCT_FIELDS)]


def pbs_command(native_ids: list[str]) -> list[str]:
    """One ``qstat -x -f`` call for all of ``native_ids`` (finished jobs included)."""
    return ["qstat", "-x", "-f", *native_ids]


# --- Slurm -------------------------------------------------------------------------------------

def parse_sacct(text: str) -> dict[str, dict[str, Any]]:
    """Facts per job id from ``sacct -P -n --format=<SACCT_FIELDS>`` output.

    The allocation's line (``1234``) gives times, limits and the requested memory; its steps
    (``1234.batch``, ``1234.0``, ``1234.extern``) give the peak memory (the largest
    step's ``MaxRSS * NTasks``; the allocation line has none). Array tasks (``1234_5``) are jobs of their own.
    """
    jobs: dict[str, dict[str, Any]] = {}
    steps: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        values = line.split("|")
        if len(values) < len(SACCT_FIELDS):
            continue
        row = dict(zip(SACCT_FIELDS, values))
        job_id, _, step = row["JobID"].partition(".")
        if step:
            steps.setdefault(job_id, []).append(row)
        else:
            jobs[job_id] = _sacct_job(row)
    for job_id, facts in jobs.items():
        # As seff counts it: a step's peak is its largest task's MaxRSS times its tasks.
        sizes = [(size_bytes(s["MaxRSS"]), to_int(s["NTasks"]) or 1) for s in steps.get(job_id, [])]
        peaks = [p * n for p, n in sizes if p is not None]
        facts["memory_peak"] = max(peaks) if peaks else None
    return jobs


def _sacct_job(row: dict[str, str]) -> dict[str, Any]:
    state = row["State"].split(" ", 1)[0].strip()  # "CANCELLED by 0"
    code, _, sig = row["ExitCode"].partition(":")
    cpus = to_int(row["AllocCPUS"])
    nodes = to_int(row["NNodes"])
    submit, start, end = (slurm_time(row[k]) for k in ("Submit", "Start", "End"))
    requested = size_bytes(row["ReqMem"], cpus=cpus, nodes=nodes)
    return {
        "scheduler_state": state,
        "final": state in SLURM_FINAL and end is not None,
        "scheduler_exit_code": to_int(code),
        "signal": to_int(sig) or None,
        "scheduler_reason": None if row["Reason"] in ("", "None") else row["Reason"],
        "elapsed": parse_duration(row["Elapsed"], bare="seconds"),
        "walltime_requested": parse_duration(row["Timelimit"], bare="minutes"),
        "cpu_time": slurm_cpu_time(row["TotalCPU"]),
        "cpus": cpus,
        "nodes": nodes,
        "memory_requested": requested,
        "node_list": None if row["NodeList"] in ("", "None assigned") else row["NodeList"],
        "submit_time": submit,
        "start_time": start,
        "end_time": end,
        "queue_wait": (start - submit) if start is not None and submit is not None else None,
        "account": row["Account"] or None,
        "queue_name": row["Partition"] or None,
        "reason": SLURM_REASONS.get(state),
    }


def array_facts(facts: dict[str, dict[str, Any]], base: str,
                indices: list[int] | None = None) -> dict[str, Any] | None:
    """An array job's facts from its tasks' (``<base>_<index>`` in ``parse_sacct``'s answer;
    ``sacct -j <base>`` lists every task), None when sacct has none yet.

    What was asked for is per task (each task gets the array's limits). What was used is
    the largest over the tasks (``memory_peak``, ``elapsed``: the request each task needed
    at least, so the only safe trimmed request), CPU time summed and set against the
    allocated core-seconds of all tasks (``allocated_cpu_seconds``), the queue wait until
    the first task started. ``tasks`` has each task's own figures. Final once every task's
    accounting is: none pending (``1234_[5-9]``) and, given the array's ``indices``, none
    missing (slurmdbd writes a task's record a moment after it ends)."""
    prefix = base + "_"
    tasks: dict[int, dict[str, Any]] = {}
    pending = False
    for key, task in facts.items():
        if not key.startswith(prefix):
            continue
        index = key[len(prefix):]
        if index.isdigit():
            tasks[int(index)] = task
        else:
            pending = True  # "1234_[5-9%2]": tasks not started yet
    if not tasks:
        return None
    unaccounted = len(set(indices) - set(tasks)) if indices is not None else 0
    if unaccounted:
        pending = True
    ordered = [tasks[i] for i in sorted(tasks)]
    first = ordered[0]

    def known(key: str) -> list[Any]:
        return [t[key] for t in ordered if t.get(key) is not None]

    elapsed, peaks, submits, starts, ends = (known(k) for k in ("elapsed", "memory_peak", "submit_time",
                                                                 "start_time", "end_time"))
    allocated = sum(t["elapsed"] * t["cpus"] for t in ordered if t.get("elapsed") is not None and t.get("cpus"))
    failed = [t for t in ordered if t["scheduler_state"] != "COMPLETED"]
    nodes = sorted({t["node_list"] for t in ordered if t.get("node_list")})
    return {
        "scheduler_state": failed[0]["scheduler_state"] if failed else "COMPLETED",
        "final": not pending and all(t["final"] for t in ordered),
        "scheduler_exit_code": failed[0]["scheduler_exit_code"] if failed else first["scheduler_exit_code"],
        "signal": failed[0]["signal"] if failed else None,
        "scheduler_reason": None,
        "elapsed": max(elapsed) if elapsed else None,
        "walltime_requested": first["walltime_requested"],
        "cpu_time": sum(known("cpu_time")) if known("cpu_time") else None,
        "allocated_cpu_seconds": allocated or None,
        "cpus": first["cpus"],
        "nodes": first["nodes"],
        "memory_requested": first["memory_requested"],
        "memory_peak": max(peaks) if peaks else None,
        "node_list": ",".join(nodes) or None,
        "submit_time": min(submits) if submits else None,
        "start_time": min(starts) if starts else None,
        "end_time": max(ends) if ends and len(ends) == len(ordered) and not pending else None,
        "queue_wait": (min(starts) - min(submits)) if starts and submits else None,
        "account": first["account"],
        "queue_name": first["queue_name"],
        "reason": None,
        "tasks_unaccounted": unaccounted,
        "tasks": [{"index": i, "scheduler_state": t["scheduler_state"], "exit_code": t["scheduler_exit_code"],
                   "elapsed": t["elapsed"], "cpu_time": t["cpu_time"], "memory_peak": t["memory_peak"],
                   "cpu_efficiency": _round(cpu_efficiency(t["cpu_time"], t["elapsed"], t["cpus"])),
                   "reason": t["reason"]}
                  for i, t in sorted(tasks.items())],
    }


def cpu_efficiency(cpu_time: float | None, elapsed: float | None, cpus: int | None,
                   allocated: float | None = None) -> float | None:
    """CPU time used against the core-seconds allocated: ``allocated`` where given (an
    array's, summed over its tasks: array_facts), else ``cpus * elapsed``; at most 1."""
    allocated = allocated or (elapsed * cpus if elapsed and cpus else None)
    return min(cpu_time / allocated, 1.0) if allocated and cpu_time is not None else None


def slurm_time(value: str) -> float | None:
    """``2026-12-03T09:03:12`` (the cluster's local time) as epoch seconds; None for
    ``Unknown``/``None``/empty."""
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def slurm_cpu_time(value: str) -> float | None:
    """sacct's ``TotalCPU``: ``[D-][HH:]MM:SS.mmm`` (``00:00.326``, ``01:02:03``, ``1-02:03:04``)."""
    text = value.strip()
    if not text:
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = to_int(head, 0) or 0
    parts = text.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds + days * 86400


def size_bytes(value: str | None, *, cpus: int | None = None, nodes: int | None = None,
               default_unit: str = "") -> int | None:
    """Bytes of a size as Slurm or PBS print it: ``219904K``, ``1G``, ``1000M``, ``4000Mc``
    (per CPU, Slurm before 21.08), ``4000Mn`` (per node), ``1024000kb``; None when empty."""
    if value is None:
        return None
    match = _SIZE.match(str(value))
    if not match:
        return None
    number, unit, _, per = match.groups()
    size = float(number) * (1 << _SHIFT[(unit or default_unit).upper()])
    if per.lower() == "c" and cpus:
        size *= cpus
    elif per.lower() == "n" and nodes:
        size *= nodes
    return int(size)


# --- PBS ---------------------------------------------------------------------------------------

def parse_qstat_xf(text: str) -> dict[str, dict[str, Any]]:
    """Facts per job id (``998``, ``1001[]``) from ``qstat -x -f`` text output."""
    jobs: dict[str, dict[str, Any]] = {}
    for full_id, attrs in parse_blocks(text, "Job Id:").items():
        jobs[full_id.split(".", 1)[0]] = _pbs_job(attrs)
    return jobs


def _pbs_job(attrs: dict[str, str]) -> dict[str, Any]:
    state = attrs.get("job_state", "").strip()
    status = to_int(attrs.get("Exit_status"))
    signal = None
    if status is not None and status > 256:  # PBS: 256 + the signal that killed the job
        signal, status = status - 256, None
    submit, start = pbs_time(attrs.get("qtime") or attrs.get("ctime")), pbs_time(attrs.get("stime"))
    elapsed = parse_duration(attrs.get("resources_used.walltime"), bare="seconds")
    end = pbs_time(attrs.get("obittime")) or ((start + elapsed) if start is not None and elapsed is not None else None)
    cpus = to_int(attrs.get("Resource_List.ncpus")) or to_int(attrs.get("resources_used.ncpus"))
    hosts = [part.split("/", 1)[0].strip() for part in attrs.get("exec_host", "").split("+") if part.strip()]
    reason = None
    if status is not None and status < 0:
        reason = PBS_EXIT_REASONS.get(status, f"PBS could not run it (Exit_status {status})")
    elif signal is not None:
        reason = f"was killed by signal {signal}"
    return {
        "scheduler_state": state,
        "final": state == "F",
        "scheduler_exit_code": status,
        "signal": signal,
        "scheduler_reason": None,
        "elapsed": elapsed,
        "walltime_requested": parse_duration(attrs.get("Resource_List.walltime"), bare="seconds"),
        "cpu_time": parse_duration(attrs.get("resources_used.cput"), bare="seconds"),
        "cpus": cpus,
        "nodes": to_int(attrs.get("Resource_List.nodect")),
        "memory_requested": size_bytes(attrs.get("Resource_List.mem")),
        "memory_peak": size_bytes(attrs.get("resources_used.mem")),
        "node_list": ",".join(dict.fromkeys(hosts)) or None,
        "submit_time": submit,
        "start_time": start,
        "end_time": end,
        "queue_wait": (start - submit) if start is not None and submit is not None else None,
        "account": attrs.get("Account_Name") or None,
        "queue_name": attrs.get("queue") or None,
        "reason": reason,
    }


# Negative Exit_status values: PBS Pro's JOB_EXEC_* codes.
PBS_EXIT_REASONS = {
    -1: "PBS could not start it (job execution failed, before files)",
    -2: "PBS could not start it (job execution failed, after files)",
    -3: "PBS could not start it (retry)",
    -4: "PBS could not start it (initialisation of the job failed)",
    -10: "PBS could not stage its files in",
    -11: "was killed: it exceeded its wall-time limit",
    -12: "was killed: it exceeded a resource limit",
}


# --- the report --------------------------------------------------------------------------------

def agent_facts(record_history: list[dict[str, Any]]) -> dict[str, Any]:
    """What the agent itself saw: queue wait and elapsed time from its state history."""
    times: dict[str, float | None] = {}
    for step in record_history:
        times.setdefault(step.get("state", ""), step.get("time"))
    queued, active = times.get("QUEUED"), times.get("ACTIVE")
    end = next((times[s] for s in ("COMPLETED", "FAILED", "CANCELED") if times.get(s)), None)
    return {
        "submit_time": queued,
        "start_time": active,
        "end_time": end,
        "queue_wait": (active - queued) if active and queued else None,
        "elapsed": (end - active) if end and active else None,
    }


def build_report(record: Any, facts: dict[str, Any] | None, *, source: str,
                 note: str | None = None) -> dict[str, Any]:
    """The answer of ``GET report``: the record's identity, the scheduler's ``facts`` (or the
    agent's own, ``source="agent"``), efficiencies, a waste score and plain verdicts."""
    facts = dict(facts or {})
    base = agent_facts(record.history)
    for key, value in base.items():
        if facts.get(key) is None:
            facts[key] = value
    spec = record.spec
    attributes, resources = spec.get("attributes", {}), spec.get("resources", {})
    if facts.get("walltime_requested") is None:
        facts["walltime_requested"] = attributes.get("duration")
    if facts.get("memory_requested") is None and resources.get("memory"):
        facts["memory_requested"] = int(resources["memory"])
    elapsed = facts.get("elapsed")
    cpu_eff = cpu_efficiency(facts.get("cpu_time"), elapsed, facts.get("cpus"), facts.get("allocated_cpu_seconds"))
    mem_req, mem_peak = facts.get("memory_requested"), facts.get("memory_peak")
    mem_eff = min(mem_peak / mem_req, 1.0) if mem_req and mem_peak is not None else None
    wall_req = facts.get("walltime_requested")
    wall_use = min(elapsed / wall_req, 1.0) if wall_req and elapsed is not None else None
    exit_code = record.exit_code if record.exit_code is not None else facts.get("scheduler_exit_code")
    reason = facts.get("reason")
    if reason is None and record.state == "FAILED":
        if facts.get("tasks") is not None and record.message:
            reason = record.message  # an array's: "3 of 20 tasks failed: 3,7,12"
        else:
            reason = f"exited with code {exit_code}" if exit_code else (record.message or "failed")
    if reason is None and record.state == "CANCELED":
        reason = "was cancelled"
    unused = [1 - x for x in (cpu_eff, mem_eff, wall_use) if x is not None]
    report = {
        "job_id": record.job_id,
        "native_id": record.native_id,
        "executor": record.executor,
        "state": record.state,
        "source": source,
        "note": note,
        "name": spec.get("name"),
        "executable": spec.get("executable"),
        "created": record.created,
        **{k: facts.get(k) for k in (
            "scheduler_state", "scheduler_exit_code", "signal", "scheduler_reason", "elapsed",
            "walltime_requested", "queue_wait", "cpus", "nodes", "cpu_time", "memory_requested",
            "memory_peak", "node_list", "submit_time", "start_time", "end_time")},
        "account": facts.get("account") or attributes.get("account"),
        "queue_name": facts.get("queue_name") or attributes.get("queue_name"),
        "exit_code": exit_code,
        "reason": reason,
        "cpu_efficiency": _round(cpu_eff),
        "memory_efficiency": _round(mem_eff),
        "walltime_efficiency": _round(wall_use),
        "waste": _round(sum(unused) / len(unused)) if unused else None,
    }
    if facts.get("tasks") is not None:
        report["tasks"] = facts["tasks"]
        report["task_count"] = len(facts["tasks"])
        report["allocated_cpu_seconds"] = facts.get("allocated_cpu_seconds")
        # Tasks the accounting has no record of yet (it writes them a moment after they end).
        report["tasks_unaccounted"] = facts.get("tasks_unaccounted", 0)
    report["verdicts"] = verdicts(report)
    report["verdict"] = "; ".join(report["verdicts"])
    return report


def verdicts(report: dict[str, Any]) -> list[str]:
    """Plain sentences, most useful first: memory, CPU, wall time, outcome, queue wait."""
    out = []
    # An array's requests are per task and its use the largest task's (array_facts).
    count = report.get("task_count") or 0
    each, peaked, ran, tasks = ((" per task", "the largest task peaked at", "the longest task ran",
                                 f" per task over {count} task{'s' if count != 1 else ''}")
                                if report.get("tasks") else ("", "peaked at", "ran", ""))
    if report["memory_requested"] and report["memory_peak"] is not None:
        out.append(f"asked for {fmt_bytes(report['memory_requested'])}{each}, {peaked} "
                   f"{fmt_bytes(report['memory_peak'])}")
    if report["cpu_efficiency"] is not None and report["cpus"]:
        cores = f"{report['cpus']} core{'s' if report['cpus'] != 1 else ''}"
        out.append(f"used {report['cpu_efficiency']:.0%} of {cores}{tasks} while it ran")
    if report["walltime_requested"] and report["elapsed"] is not None:
        out.append(f"asked for {fmt_duration(report['walltime_requested'])}{each}, {ran} "
                   f"{fmt_duration(report['elapsed'])}")
    if report["reason"]:
        out.append(report["reason"])
    elif report["state"] == "COMPLETED":
        out.append("exited with code 0")
    if report["queue_wait"] is not None:
        out.append(f"waited {fmt_duration(report['queue_wait'])} in the queue")
    return out


def fmt_bytes(value: float) -> str:
    """``68719476736`` → ``64 GB``; binary units, as Slurm and PBS count them."""
    for unit, shift in (("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)):
        if value >= 1 << shift:
            scaled = value / (1 << shift)
            return f"{scaled:.0f} {unit}" if scaled >= 10 or scaled == int(scaled) else f"{scaled:.1f} {unit}"
    return f"{int(value)} B"


def fmt_duration(seconds: float) -> str:
    """``7200`` → ``2 h``; ``90`` → ``1 min 30 s``; ``4`` → ``4 s``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs and not days and not hours else ""]
    return " ".join(p for p in parts if p)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
