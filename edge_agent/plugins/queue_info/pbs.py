"""PBS Pro / OpenPBS: queues (``qstat -Qf``), nodes (``pbsnodes -a``) and jobs (``qstat -f``).

PBS prints the same attributes two ways. The text form (``    name = value``, long values wrapped
at 78 columns onto lines starting with a tab) and the JSON form of ``-F json`` (PBS 19+; resources
nested as ``{"resources_available": {"ncpus": 64}}``) are both turned into one flat
``{"resources_available.ncpus": "64"}`` dict per object, so the rest of the code, and the
records, are the same in both modes.

Queues and nodes: a node with a ``queue`` attribute serves only that queue; the others serve
every execution queue that has no nodes of its own (``hasnodes`` is not True). A route queue
counts the nodes of the queues it routes to. PBS has no associations like Slurm's, so
``collect_allocations`` answers an empty list with a note.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .backend import Backend, Collected, Trace
from .commands import CommandFailed, SchedulerError
from .records import (
    UNLIMITED,
    NodeInfo,
    PartitionInfo,
    job_record,
    parse_duration,
    queue_records,
    size_to_mb,
    split_list,
    to_int,
)

# A vnode in any of these states cannot take a job now.
UNAVAILABLE = frozenset({
    "down", "offline", "state-unknown", "unknown", "stale", "unresolvable", "maintenance", "provisioning",
    "wait-provisioning", "sleep", "initializing",
})
# Resources every vnode has; the other boolean resources that are True become "features".
STANDARD_RESOURCES = frozenset({
    "arch", "host", "mem", "ncpus", "ngpus", "vnode", "vmem", "naccelerators", "accelerator_memory", "hbmem",
    "mpiprocs", "ompthreads", "aoe", "eoe", "nodect", "nchunk", "place", "select", "walltime", "cput",
})
# PBS job states → the plugin's (Slurm's) vocabulary, with a reason where one is implied.
JOB_STATES = {
    "Q": ("PENDING", ""), "W": ("PENDING", "waiting for its start time"), "T": ("PENDING", "in transit"),
    "H": ("PENDING", "held"), "R": ("RUNNING", ""), "B": ("RUNNING", "array job: subjobs running"),
    "E": ("COMPLETING", ""), "S": ("SUSPENDED", ""), "U": ("SUSPENDED", "suspended: workstation busy"),
    "X": ("COMPLETED", ""), "F": ("COMPLETED", ""), "M": ("MOVED", "moved to another server"),
}


class PbsBackend(Backend):
    name = "pbs"
    json_commands = ("qstat", "pbsnodes")

    def _stat(self, trace: Trace, key: str, argv: list[str], json_key: str, header: str | None
              ) -> dict[str, dict[str, str]]:
        """``{object name: flat attributes}`` from ``argv -F json`` or, failing that, ``argv``."""
        data = self.run_json(trace, key, [*argv, "-F", "json"])
        if data is not None:
            objects = data.get(json_key) or {}
            return {name: flatten(attrs) for name, attrs in objects.items() if isinstance(attrs, dict)}
        return parse_blocks(trace.run(argv).stdout, header)

    def collect_info(self) -> Collected:
        trace = Trace(self.runner)
        queues = self._stat(trace, "qstat", ["qstat", "-Qf"], "Queue", "Queue:")
        try:
            nodes = self._stat(trace, "pbsnodes", ["pbsnodes", "-a"], "nodes", None)
        except CommandFailed as exc:
            if "no node list" not in exc.stderr.lower():
                raise
            nodes = {}  # "pbsnodes: Server has no node list": a server without vnodes yet
        try:
            servers = self._stat(trace, "qstat", ["qstat", "-Bf"], "Server", "Server:")
        except SchedulerError as exc:
            trace.notes.append(f"default queue unknown: {exc.detail}")
            servers = {}
        default_queue = next((s.get("default_queue", "") for s in servers.values()), "")
        partitions, node_infos = queues_and_nodes(queues, nodes, default_queue=default_queue)
        return trace.done(queue_records(partitions, node_infos))

    def collect_jobs(self, *, user: str | None, include_finished: bool) -> Collected:
        trace = Trace(self.runner)
        # qstat -f takes no user filter (-u is a summary option); filter here.
        argv = ["qstat", "-f", "-x"] if include_finished else ["qstat", "-f"]
        jobs = jobs_from_pbs(self._stat(trace, "qstat", argv, "Jobs", "Job Id:"))
        if user:
            jobs = [j for j in jobs if j["user"] == user]
        return trace.done(jobs)

    def job_history(self) -> dict[str, dict[str, str]]:
        """Every job PBS still remembers, finished ones and array subjobs included
        (``qstat -x -f -t``), as flat attributes; the budgets are counted from them."""
        return self._stat(Trace(self.runner), "qstat", ["qstat", "-x", "-f", "-t"], "Jobs", "Job Id:")

    def collect_allocations(self, *, user: str | None) -> Collected:
        trace = Trace(self.runner)
        trace.notes.append("PBS keeps no accounts or associations like Slurm's; site allocation tools "
                           "(e.g. sbank) are not queried")
        return trace.done([])


# --- reading PBS output ----------------------------------------------------------------------

_ATTR = re.compile(r"^\s+([^\s=]+) = ?(.*)$")


def parse_blocks(text: str, header: str | None) -> dict[str, dict[str, str]]:
    """Objects of ``qstat -f``/``-Qf``/``-Bf`` (``header`` "Job Id:", "Queue:", "Server:") or of
    ``pbsnodes -a`` (``header`` None: an object starts at a line without indentation).

    A line starting with a tab continues the previous value: qstat wraps long values at 78
    columns, after a comma or in the middle of a word, so pieces are joined as they are.
    """
    objects: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    key: str | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if header is not None and raw.startswith(header):
            current = objects.setdefault(raw[len(header):].strip(), {})
            key = None
        elif header is None and not raw[0].isspace():
            current = objects.setdefault(raw.strip(), {})
            key = None
        elif raw.startswith("\t") and current is not None and key is not None:
            current[key] += raw[1:].rstrip("\n")
        elif current is not None:
            match = _ATTR.match(raw)
            if match:
                key = match.group(1)
                current[key] = match.group(2)
    return objects


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A ``-F json`` object as the text form's flat attributes: nested resources become
    ``resources_available.ncpus``; lists (a node's jobs) are joined with ``", "``; numbers and
    booleans are printed as qstat prints them."""
    flat: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if name == "Variable_List":
                flat[name] = ",".join(f"{k}={v}" for k, v in value.items())
            else:
                flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = ", ".join(str(v) for v in value)
        elif isinstance(value, bool):
            flat[name] = "True" if value else "False"
        else:
            flat[name] = str(value)
    return flat


def _is_true(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "1", "t", "y", "yes")


def _short(name: str) -> str:
    """``workq@server`` → ``workq``; ``1234.server`` stays (see :func:`_job_id`)."""
    return name.split("@", 1)[0].strip()


def queue_state(attrs: dict[str, str]) -> str:
    """PBS's two switches in Slurm's words: enabled (accepts jobs) and started (runs them)."""
    enabled, started = _is_true(attrs.get("enabled")), _is_true(attrs.get("started"))
    if enabled and started:
        return "UP"
    if enabled:
        return "DOWN"  # jobs queue up but do not start
    if started:
        return "DRAIN"  # no new jobs; queued ones still run
    return "INACTIVE"


def _walltime_minutes(value: str | None) -> int | None:
    seconds = parse_duration(value, bare="seconds") if value else None
    return seconds // 60 if seconds is not None else None


def node_info(name: str, attrs: dict[str, str], queues: tuple[str, ...]) -> NodeInfo:
    state = attrs.get("state", "unknown").strip() or "unknown"
    tokens = {t.strip().lower() for t in state.split(",") if t.strip()}
    available = not (tokens & UNAVAILABLE)
    busy = bool(attrs.get("jobs", "").strip()) or (to_int(attrs.get("resources_assigned.ncpus"), 0) or 0) > 0
    features = [
        key.split(".", 1)[1] for key, value in attrs.items()
        if key.startswith("resources_available.") and key.split(".", 1)[1] not in STANDARD_RESOURCES
        and value.strip() == "True"
    ]
    features.extend(split_list(attrs.get("properties")))  # Torque-style node properties
    return NodeInfo(
        name=name, state=state, available=available, idle=available and tokens == {"free"} and not busy,
        cpus=to_int(attrs.get("resources_available.ncpus"), None) or to_int(attrs.get("pcpus"), 0) or 0,
        mem_mb=size_to_mb(attrs.get("resources_available.mem")),
        gpus=to_int(attrs.get("resources_available.ngpus"), 0) or 0,
        features=tuple(sorted(set(features))), partitions=queues,
    )


def queues_and_nodes(queues: dict[str, dict[str, str]], nodes: dict[str, dict[str, str]], *,
                     default_queue: str = "") -> tuple[list[PartitionInfo], list[NodeInfo]]:
    """Queues as partitions, nodes with the queues they serve (see the module docstring)."""
    execution = [q for q, a in queues.items() if a.get("queue_type", "Execution").lower().startswith("e")]
    shared_pool = [q for q in execution if not _is_true(queues[q].get("hasnodes"))]
    served: dict[str, list[str]] = {}
    for name, attrs in nodes.items():
        own = _short(attrs.get("queue", ""))
        served[name] = [own] if own else list(shared_pool)
    # Route queues count the nodes of their destinations (one level of routing is what sites use).
    for qname, attrs in queues.items():
        if qname in execution:
            continue
        destinations = {_short(d) for d in split_list(attrs.get("route_destinations"))}
        for name in nodes:
            if destinations & set(served[name]):
                served[name].append(qname)
    partitions = []
    for qname, attrs in queues.items():
        limit = _walltime_minutes(attrs.get("resources_max.walltime"))
        partitions.append(PartitionInfo(
            name=qname, state=queue_state(attrs), time_limit=UNLIMITED if limit is None else limit,
            default=qname == default_queue, default_time=_walltime_minutes(attrs.get("resources_default.walltime")),
        ))
    infos = [node_info(name, attrs, tuple(served[name])) for name, attrs in nodes.items()]
    return partitions, infos


# --- jobs --------------------------------------------------------------------------------------

def pbs_time(value: str | None) -> int | None:
    """A PBS time stamp: ``Sat Dec  3 20:25:38 2022`` (local time, as ctime prints it) or epoch."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        return int(time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        return None


def _job_id(full_id: str) -> str:
    """``1234.pbs01.example.org`` → ``1234``; ``1234[5].pbs01`` → ``1234[5]``."""
    return full_id.split(".", 1)[0]


def _exec_hosts(exec_host: str) -> str:
    """``node001/0*4+node002/0*4`` → ``node001,node002``."""
    hosts = [part.split("/", 1)[0] for part in exec_host.split("+") if part.strip()]
    return ",".join(dict.fromkeys(h.strip() for h in hosts if h.strip()))


def jobs_from_pbs(jobs: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    out = []
    for full_id, attrs in jobs.items():
        letter = attrs.get("job_state", "").strip()[:1].upper()
        state, implied_reason = JOB_STATES.get(letter, ("UNKNOWN", ""))
        if letter in ("F", "X"):
            exit_status = to_int(attrs.get("Exit_status"))
            if exit_status is not None and exit_status != 0:
                state = "FAILED"
        account = attrs.get("Account_Name", "")
        project = attrs.get("project", "")
        if not account and project and project != "_pbs_project_default":
            account = project
        limit_seconds = parse_duration(attrs.get("Resource_List.walltime"), bare="seconds")
        out.append(job_record(
            job_id=_job_id(full_id), job_name=attrs.get("Job_Name", ""),
            user=attrs.get("Job_Owner", "").split("@", 1)[0], partition=attrs.get("queue", ""),
            state=state, native_state=letter or "?", reason=attrs.get("comment", "") or implied_reason,
            nodes=to_int(attrs.get("Resource_List.nodect"), 0) or 0,
            cpus=to_int(attrs.get("Resource_List.ncpus"), 0) or 0,
            time_limit=limit_seconds // 60 if limit_seconds is not None else None,
            time_used=parse_duration(attrs.get("resources_used.walltime"), bare="seconds") or 0,
            submit_time=pbs_time(attrs.get("qtime") or attrs.get("ctime")), start_time=pbs_time(attrs.get("stime")),
            priority=to_int(attrs.get("Priority")), account=account, qos="",
            node_list=_exec_hosts(attrs.get("exec_host", "")),
        ))
    return out
