"""The output types of queue_info, shared by every backend and every parsing mode.

Backends turn scheduler output into :class:`NodeInfo` and :class:`PartitionInfo` values and job
and allocation dicts built by :func:`job_record` and :func:`allocation_record`; this module turns
nodes and partitions into queue records. Because every path ends in the same builders, Slurm in
JSON mode, Slurm in text mode and PBS answer with the same fields of the same types.

Units: time limits of queues are minutes or ``"UNLIMITED"``; time limits of jobs are minutes or
None (unlimited); ``time_used`` is seconds; time stamps are epoch seconds or None; memory is MiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

UNLIMITED = "UNLIMITED"

# Job states in the plugin's vocabulary (Slurm's long names; PBS states are mapped onto them).
FINAL_JOB_STATES = frozenset({
    "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
    "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT", "MOVED",
})


@dataclass
class NodeInfo:
    """One compute node as a backend sees it. ``state`` is a display label; ``available`` and
    ``idle`` are the backend's verdicts (see each backend for its list of unavailable states)."""

    name: str
    state: str
    available: bool
    idle: bool
    cpus: int = 0
    mem_mb: int = 0
    gpus: int = 0
    features: tuple[str, ...] = ()
    partitions: tuple[str, ...] = ()


@dataclass
class PartitionInfo:
    """One queue (Slurm partition, PBS queue) before its nodes are counted."""

    name: str
    state: str = "UP"
    time_limit: int | str = UNLIMITED
    default: bool = False
    default_time: int | None = None
    # Slurm's TRESBillingWeights: {"CPU": 1.0, "Mem": 0.25 (per GB), "GRES/gpu": 2.0}.
    billing_weights: dict[str, float] = field(default_factory=dict)


_MEM_UNITS = {"K": 1 / (1024 * 1024), "M": 1 / 1024, "G": 1.0, "T": 1024.0, "P": 1024.0 ** 2}


def named_numbers(text: str | None, form: str) -> dict[str, float]:
    """A setting such as ``"gpu=4,debug=0.5"`` → ``{"gpu": 4.0, "debug": 0.5}``; ValueError
    naming the part that is not ``form`` (``<queue>=<factor>``) with a number ≥ 0."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            number = float(value) if sep and name.strip() else -1.0
        except ValueError:
            number = -1.0
        if number < 0:
            raise ValueError(f"{part.strip()!r} is not {form}")
        out[name.strip()] = number
    return out


def parse_billing_weights(text: str | None) -> dict[str, float]:
    """``CPU=1.0,Mem=0.25G,GRES/gpu=2.0`` → ``{"CPU": 1.0, "Mem": 0.25, "GRES/gpu": 2.0}`` with
    the memory weight per GB (Slurm's default unit for a weight without suffix is the MB)."""
    weights: dict[str, float] = {}
    for part in (text or "").split(","):
        name, _, raw = part.strip().partition("=")
        if not name or not raw:
            continue
        unit = raw[-1].upper() if raw[-1].isalpha() else ""
        try:
            value = float(raw[:-1] if unit else raw)
        except ValueError:
            continue
        if name.lower() == "mem":
            value *= _MEM_UNITS.get(unit or "M", 1.0)
            name = "Mem"
        elif name.lower() == "cpu":
            name = "CPU"
        weights[name] = value
    return weights


def charge_factor(weights: dict[str, float], *, cpus: int, mem_mb: int, gpus: int) -> float | None:
    """What one core-hour of a whole node is billed, from the partition's billing weights:
    (cores * CPU + GB * Mem + GPUs * GRES/gpu) / cores. None without weights (Slurm then
    bills cores: a factor of 1). Slurm's ``PriorityFlags=MAX_TRES`` (the largest term, not
    the sum) is not modelled."""
    if not weights or cpus <= 0:
        return None
    gpu = next((v for k, v in weights.items() if k.lower() in ("gres/gpu", "gpu")), 0.0)
    billed = cpus * weights.get("CPU", 0.0) + mem_mb / 1024 * weights.get("Mem", 0.0) + gpus * gpu
    return round(billed / cpus, 4)


def queue_records(partitions: list[PartitionInfo], nodes: list[NodeInfo]) -> dict[str, dict[str, Any]]:
    """``{name: queue record}``: each partition with the counts of the nodes that serve it.

    ``cpus_per_node``, ``mem_per_node_mb`` and ``gpus_per_node`` are the largest node of the
    queue (what one job can get on one node); ``features`` is the union over its nodes.
    """
    members: dict[str, list[NodeInfo]] = {p.name: [] for p in partitions}
    for node in nodes:
        for part_name in node.partitions:
            if part_name in members:
                members[part_name].append(node)
    queues: dict[str, dict[str, Any]] = {}
    for part in partitions:
        group = members[part.name]
        states: dict[str, int] = {}
        for node in group:
            states[node.state] = states.get(node.state, 0) + 1
        queues[part.name] = {
            "name": part.name,
            "state": part.state,
            "default": part.default,
            "time_limit": part.time_limit,
            "default_time": part.default_time,
            "nodes_total": len(group),
            "nodes_available": sum(1 for n in group if n.available),
            "nodes_idle": sum(1 for n in group if n.idle),
            "cpus_total": sum(n.cpus for n in group),
            "cpus_per_node": max((n.cpus for n in group), default=0),
            "mem_per_node_mb": max((n.mem_mb for n in group), default=0),
            "gpus_per_node": max((n.gpus for n in group), default=0),
            "gpus_total": sum(n.gpus for n in group),
            "features": sorted({f for n in group for f in n.features}),
            "node_states": dict(sorted(states.items())),
            "billing_weights": part.billing_weights or None,
            "charge_factor": charge_factor(part.billing_weights, cpus=max((n.cpus for n in group), default=0),
                                           mem_mb=max((n.mem_mb for n in group), default=0),
                                           gpus=max((n.gpus for n in group), default=0)),
        }
    return queues


def job_record(
    *, job_id: str, job_name: str, user: str, partition: str, state: str, nodes: int, cpus: int,
    time_limit: int | None, time_used: int, submit_time: int | None, start_time: int | None,
    priority: int | None, account: str, node_list: str, reason: str = "", qos: str = "",
    native_state: str = "",
) -> dict[str, Any]:
    """The job dict every backend returns (keyword-only so no field is ever swapped)."""
    return {
        "job_id": job_id,
        "job_name": job_name,
        "user": user,
        "partition": partition,
        "state": state,
        "native_state": native_state or state,
        "reason": reason,
        "nodes": nodes,
        "cpus": cpus,
        "time_limit": time_limit,
        "time_used": time_used,
        "submit_time": submit_time,
        "start_time": start_time,
        "priority": priority,
        "account": account,
        "qos": qos,
        "node_list": node_list,
    }


def allocation_record(
    *, account: str, user: str, cluster: str = "", partition: str = "", shares: int | None = None,
    fairshare: float | None = None, qos: str = "", default_qos: str = "", max_jobs: int | None = None,
    max_submit: int | None = None, max_wall: int | None = None, max_tres: str | None = None,
    grp_jobs: int | None = None, grp_submit: int | None = None, grp_wall: int | None = None,
    grp_tres: str | None = None,
) -> dict[str, Any]:
    """The allocation (association) dict. ``user`` is "" for an account-level row; limits are
    None when unset; walls are minutes; TRES limits are Slurm strings (``cpu=64,gres/gpu=4``)."""
    return {
        "account": account,
        "user": user,
        "cluster": cluster,
        "partition": partition,
        "shares": shares,
        "fairshare": fairshare,
        "qos": qos,
        "default_qos": default_qos,
        "max_jobs": max_jobs,
        "max_submit": max_submit,
        "max_wall": max_wall,
        "max_tres": max_tres,
        "grp_jobs": grp_jobs,
        "grp_submit": grp_submit,
        "grp_wall": grp_wall,
        "grp_tres": grp_tres,
    }


def is_active(job: dict[str, Any]) -> bool:
    """True for jobs that are still in the queue (not finished)."""
    return job["state"] not in FINAL_JOB_STATES


# --- small parsers shared by the backends ------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(value: Any, *, bare: str = "minutes") -> int | None:
    """Seconds of a Slurm/PBS duration (``5:00`` = 5 min, ``1:00:00``, ``2-12:00:00``,
    ``00:30:00``), or None for unlimited/unset values (``UNLIMITED``, ``INFINITE``, ``NONE``, …).

    ``M:SS`` is minutes and seconds. A bare number is in ``bare`` units: ``"minutes"`` (Slurm's
    convention for limits) or ``"seconds"`` (PBS's ``walltime=3600``).
    """
    if value is None or isinstance(value, bool):
        return None
    scale = 60 if bare == "minutes" else 1
    if isinstance(value, (int, float)):
        return int(value) * scale
    text = str(value).strip()
    match = _DURATION.match(text)
    if not match:
        return None
    days, first, second, third = match.groups()
    if third is not None:
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:
        seconds = int(first) * 60 + int(second)
    else:
        seconds = int(first) * scale if days is None else int(first) * 3600
    return seconds + int(days or 0) * 86400


def to_int(value: Any, default: int | None = None) -> int | None:
    """``value`` as an int (``"12"``, ``12.0``), else ``default``."""
    if value is None or isinstance(value, bool):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return default


def to_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(b|w)?\s*$", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def size_to_mb(value: Any, *, default_unit: str = "b") -> int:
    """MiB of a size such as PBS's ``527672488kb``, ``8gb``, ``1024mb`` or Slurm's ``24105M``.

    A bare number is in ``default_unit`` (PBS: bytes; Slurm: MiB); ``w`` (words) counts 8 bytes.
    """
    if value is None:
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{value}{'' if default_unit == 'b' else default_unit}"
    match = _SIZE.match(str(value))
    if not match:
        return 0
    number, unit, kind = match.groups()
    unit = unit.lower() if unit else ("" if default_unit == "b" else default_unit.lower())
    size = float(number) * (1 << _SIZE_SHIFT[unit])
    if kind and kind.lower() == "w":
        size *= 8
    return int(size // (1 << 20))


def gpus_from_gres(gres: Any) -> int:
    """GPUs in a Slurm GRES string: ``gpu:a100:4(S:0-1),gpu:v100:2`` → 6, ``gpu:2`` → 2,
    ``(null)``/empty → 0. Accepts a list of such strings too."""
    if not gres:
        return 0
    items = gres if isinstance(gres, (list, tuple)) else str(gres).split(",")
    total = 0
    for item in items:
        item = str(item).strip()
        # "gpu:a100:4(S:0-1)": the socket binding may itself contain commas ("S:0,1") when the
        # string was split above; those pieces do not start with "gpu" and are skipped.
        if not item.startswith("gpu"):
            continue
        item = item.split("(", 1)[0]
        parts = item.split(":")
        count = to_int(parts[-1]) if len(parts) > 1 else 1
        total += count if count is not None else 1
    return total


def split_list(value: Any) -> tuple[str, ...]:
    """A comma-separated string (or a list) as a tuple of non-empty items; ``(null)`` is empty."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for item in items:
        item = str(item).strip()
        if item and item not in ("(null)", "N/A"):
            out.append(item)
    return tuple(out)


_HOSTLIST = re.compile(r"([^,\[]+)(?:\[([^\]]+)\])?([^,\[]*)")


def expand_hostlist(expr: str) -> list[str]:
    """Expand a Slurm host list: ``n[01-03,07],gpu1`` → ``n01 n02 n03 n07 gpu1``.

    Handles one bracket group per host name (what Slurm prints); zero padding is kept.
    """
    hosts: list[str] = []
    for match in _HOSTLIST.finditer(expr.strip()):
        prefix, ranges, suffix = match.group(1), match.group(2), match.group(3)
        prefix = prefix.lstrip(",")
        if not prefix and not ranges:
            continue
        if ranges is None:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            width = len(lo)
            for i in range(int(lo), int(hi) + 1):
                hosts.append(f"{prefix}{i:0{width}d}{suffix}")
    return hosts
