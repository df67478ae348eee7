"""Slurm: partitions, nodes, jobs and associations, from JSON where Slurm has it, else from text.

What each Slurm release offers (checked on 22.05.8; newer shapes from Slurm's data_parser):

========================  ===========================  =====================================
data                      JSON                         text fallback
========================  ===========================  =====================================
nodes                     ``sinfo --json`` (22.05:     ``scontrol -o show node``
                          ``nodes``; 23.02+: ``sinfo``
                          array of partition/state
                          groups)
partitions                23.02+: the ``sinfo`` array  ``scontrol -o show partition``
                          or ``scontrol --json show
                          partition``
jobs                      ``squeue --json`` (22.05     ``squeue -h -a -t all -o <fields>``
                          ignores filters: always
                          filtered here)
associations              ``sacctmgr --json show       ``sacctmgr -n -P show assoc
                          assoc`` (23.02+)             format=…``
fair share                none                         ``sshare -n -P -a -o …`` (best effort)
========================  ===========================  =====================================

JSON values changed shape over the releases: 22.05 (openapi v0.0.38) prints plain numbers and
``null``; data_parser v0.0.39+ prints ``{"set", "infinite", "number"}`` objects and lists of
states. :func:`unwrap` and :func:`state_tokens` read both, so every release and both modes end
in the same records (:mod:`.records`).
"""

from __future__ import annotations

import getpass
import os
import re
import time
from typing import Any

from .backend import Backend, Collected, Trace
from .commands import CommandFailed, CommandRunner, SchedulerError
from .records import (
    UNLIMITED,
    NodeInfo,
    PartitionInfo,
    allocation_record,
    expand_hostlist,
    gpus_from_gres,
    job_record,
    parse_billing_weights,
    parse_duration,
    queue_records,
    split_list,
    to_float,
    to_int,
)

# Releases from which a command prints JSON (--json); older ones are read as text right away.
JSON_SINCE = {"sinfo": (21, 8), "squeue": (21, 8), "scontrol": (23, 2), "sacctmgr": (23, 2)}

BASE_STATES = ("IDLE", "MIXED", "ALLOCATED", "COMPLETING", "DOWN", "ERROR", "FUTURE", "UNKNOWN")
# A node in any of these states cannot take a job now: down, drained or draining, failing,
# in maintenance, powered down or powering up/down, not responding, rebooting, not yet real.
UNAVAILABLE = frozenset({
    "DOWN", "DRAIN", "FAIL", "MAINTENANCE", "POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN", "POWERING_UP",
    "NOT_RESPONDING", "REBOOT_ISSUED", "FUTURE", "UNKNOWN", "INVALID_REG",
})
# Spellings that mean the same state token (sinfo's long names, older releases, abbreviations).
_STATE_ALIASES = {
    "ALLOC": "ALLOCATED", "MIX": "MIXED", "COMP": "COMPLETING", "DRAINED": "DRAIN", "DRAINING": "DRAIN",
    "DRNG": "DRAIN", "DRNG*": "DRAIN", "MAINT": "MAINTENANCE", "FAILING": "FAIL", "NO_RESPOND": "NOT_RESPONDING",
    "POWERED_OFF": "POWERED_DOWN", "POWER_UP": "POWERING_UP", "REBOOT": "REBOOT_ISSUED", "BOOT": "REBOOT_ISSUED",
    "INVAL": "INVALID_REG", "INVALID": "INVALID_REG", "UNK": "UNKNOWN", "PLND": "PLANNED", "RESV": "RESERVED",
}
# sinfo/scontrol suffix markers: "IDLE*" is a node that does not respond, and so on.
_STATE_SUFFIXES = {
    "*": "NOT_RESPONDING", "~": "POWERED_DOWN", "#": "POWERING_UP", "!": "POWER_DOWN", "%": "POWERING_DOWN",
    "@": "REBOOT_REQUESTED", "^": "REBOOT_ISSUED", "$": "MAINTENANCE", "-": "PLANNED",
}

SACCTMGR_FIELDS = ("Cluster", "Account", "User", "Partition", "Share", "GrpJobs", "GrpTRES", "GrpSubmit",
                   "GrpWall", "MaxJobs", "MaxSubmit", "MaxWall", "MaxTRES", "QOS", "DefaultQOS")
# squeue text fields, separated by the ASCII unit separator (never part of a name); the job name
# comes last so that anything it contains stays in it.
SQUEUE_FIELDS = ("%i", "%u", "%P", "%T", "%D", "%C", "%l", "%M", "%V", "%S", "%Q", "%a", "%N", "%r", "%q", "%j")
SEP = "\x1f"
SHARES_FROM_PARENT = 2147483647  # SLURMDB_FS_USE_PARENT: "Share=parent"


class AccountingUnavailable(SchedulerError):
    """sacctmgr/sshare need slurmdbd; this cluster has no accounting storage."""

    status = 503
    code = "accounting_unavailable"


class SlurmBackend(Backend):
    name = "slurm"
    json_commands = tuple(JSON_SINCE)

    def __init__(self, runner: CommandRunner, *, use_json: bool = True, version: str | None = None) -> None:
        super().__init__(runner, use_json=use_json, version=version)
        release = version_tuple(version)
        if release is not None:
            for cmd, since in JSON_SINCE.items():
                self._json_ok[cmd] = self._json_ok[cmd] and release >= since

    # -- partitions and nodes ------------------------------------------------------------

    def collect_info(self) -> Collected:
        trace = Trace(self.runner)
        data = self.run_json(trace, "sinfo", ["sinfo", "--json"])
        if data is not None and isinstance(data.get("sinfo"), list):
            partitions, nodes = from_sinfo_entries(data["sinfo"])
            if not any(p.default for p in partitions):
                # data_parser's partition objects do not say which one is the default.
                try:
                    names = default_partitions(trace.run(["sinfo", "-h", "-o", "%P"]).stdout)
                except SchedulerError as exc:
                    trace.notes.append(f"default partition unknown: {exc.detail}")
                else:
                    for part in partitions:
                        part.default = part.name in names
            return trace.done(queue_records(partitions, nodes))
        if data is not None and isinstance(data.get("nodes"), list):
            nodes = nodes_from_json(data["nodes"])
        else:
            nodes = nodes_from_scontrol(parse_scontrol(trace.run(["scontrol", "-o", "show", "node"]).stdout))
        pdata = self.run_json(trace, "scontrol", ["scontrol", "--json", "show", "partition"])
        if pdata is not None and isinstance(pdata.get("partitions"), list):
            partitions = [partition_from_json(p) for p in pdata["partitions"] if isinstance(p, dict)]
        else:
            text = trace.run(["scontrol", "-o", "show", "partition"]).stdout
            partitions = partitions_from_scontrol(parse_scontrol(text))
        return trace.done(queue_records(partitions, nodes))

    # -- jobs ----------------------------------------------------------------------------

    def collect_jobs(self, *, user: str | None, include_finished: bool) -> Collected:
        trace = Trace(self.runner)
        filters = ["-a", "-t", "all"] + (["-u", user] if user else [])
        data = self.run_json(trace, "squeue", ["squeue", "--json", *filters])
        if data is not None:
            jobs = jobs_from_squeue_json(data.get("jobs") or [], now=time.time())
        else:
            text = trace.run(["squeue", "-h", *filters, "-o", SEP.join(SQUEUE_FIELDS)]).stdout
            jobs = jobs_from_squeue_text(text)
        # 22.05's squeue --json ignores -u and -t, so filter here in every mode.
        if user:
            jobs = [j for j in jobs if j["user"] == user]
        return trace.done(jobs)

    # -- associations --------------------------------------------------------------------

    def collect_allocations(self, *, user: str | None) -> Collected:
        trace = Trace(self.runner)
        where = ["where", f"user={user}"] if user else []
        try:
            data = self.run_json(trace, "sacctmgr", ["sacctmgr", "--json", "show", "assoc", *where])
            if data is not None:
                allocations = allocations_from_sacctmgr_json(data.get("associations") or [])
            else:
                fmt = "format=" + ",".join(SACCTMGR_FIELDS)
                text = trace.run(["sacctmgr", "-n", "-P", "show", "assoc", *where, fmt]).stdout
                allocations = allocations_from_sacctmgr_text(text)
        except CommandFailed as exc:
            if "accounting_storage" in exc.stderr or "slurmdbd" in exc.stderr.lower():
                raise AccountingUnavailable(
                    "Slurm accounting (slurmdbd) is not available on this cluster, so there are no "
                    f"associations to show: {exc.stderr.strip().splitlines()[0]}",
                    command=exc.command, returncode=exc.returncode, stderr=exc.stderr,
                ) from exc
            raise
        if user:
            # sacctmgr's JSON mode may ignore "where" conditions; keep only the user's rows.
            allocations = [a for a in allocations if a["user"] == user]
        if allocations:
            try:
                shares = fairshare_from_sshare(trace.run(["sshare", "-n", "-P", "-a", "-o",
                                                          "Account,User,RawShares,FairShare"]).stdout)
            except SchedulerError as exc:
                trace.notes.append(f"fair share unavailable: {exc.detail}")
            else:
                for alloc in allocations:
                    alloc["fairshare"] = shares.get((alloc["account"], alloc["user"]))
        return trace.done(allocations)


def default_user() -> str:
    """The user the agent runs as (whose allocations ``list_allocations`` shows by default)."""
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def version_tuple(version: str | None) -> tuple[int, int] | None:
    """``"22.05.8"`` → ``(22, 5)``."""
    if not version:
        return None
    match = re.search(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- values --------------------------------------------------------------------------------

def unwrap(value: Any, *, infinite: Any = None) -> Any:
    """A data_parser number (``{"set": true, "infinite": false, "number": 5}``) as a plain value;
    plain values (22.05) pass through. Unset is None, infinite is ``infinite``."""
    if isinstance(value, dict) and ("number" in value or "set" in value or "infinite" in value):
        if value.get("infinite"):
            return infinite
        if not value.get("set", True):
            return None
        return value.get("number")
    return value


def state_tokens(*values: Any) -> list[str]:
    """Normalized Slurm state tokens from any spelling: ``"IDLE+DRAIN"``, ``"down*"``,
    ``["IDLE", "DRAIN"]``, ``"idle"`` + ``["DRAIN"]`` → base state first, then sorted flags."""
    tokens: set[str] = set()
    for value in values:
        if value is None:
            continue
        items = value if isinstance(value, (list, tuple)) else str(value).split("+")
        for item in items:
            item = str(item).strip().upper()
            while item and item[-1] in _STATE_SUFFIXES:
                tokens.add(_STATE_SUFFIXES[item[-1]])
                item = item[:-1]
            if item:
                tokens.add(_STATE_ALIASES.get(item, item))
    base = [t for t in BASE_STATES if t in tokens]
    return base + sorted(tokens - set(base))


def node_from_tokens(name: str, tokens: list[str], **fields: Any) -> NodeInfo:
    available = not (set(tokens) & UNAVAILABLE)
    idle = available and "IDLE" in tokens and "COMPLETING" not in tokens
    return NodeInfo(name=name, state="+".join(t.lower() for t in tokens) or "unknown", available=available,
                    idle=idle, **fields)


def time_limit_minutes(value: Any) -> int | str:
    """A partition limit (minutes, duration string or data_parser number) → minutes or UNLIMITED."""
    value = unwrap(value, infinite=UNLIMITED)
    if value is None or value == UNLIMITED:
        return UNLIMITED
    seconds = parse_duration(value)
    return UNLIMITED if seconds is None else seconds // 60


def _epoch(value: Any) -> int | None:
    value = to_int(unwrap(value))
    return value if value else None


def default_partitions(text: str) -> set[str]:
    """``sinfo -h -o %P`` marks the default partition with a ``*``."""
    return {line.strip().rstrip("*") for line in text.splitlines() if line.strip().endswith("*")}


# --- scontrol text ---------------------------------------------------------------------------

_KEY = re.compile(r"(?:^|\s)([A-Z][A-Za-z0-9_:/.]*)=")


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """``scontrol -o show …``: one record per line of ``Key=value`` pairs. Values may contain
    spaces (``OS=Linux 6.1 #1 SMP``, ``Reason=Not responding``); keys start upper-case."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        matches = list(_KEY.finditer(line))
        record: dict[str, str] = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            record[match.group(1)] = line[match.end():end].strip()
        if record:
            records.append(record)
    return records


def _null(value: str | None) -> str:
    return "" if value in (None, "(null)", "N/A", "NONE") else str(value)


def partitions_from_scontrol(records: list[dict[str, str]]) -> list[PartitionInfo]:
    parts = []
    for rec in records:
        name = rec.get("PartitionName")
        if not name:
            continue
        default_time = parse_duration(_null(rec.get("DefaultTime")) or None)
        parts.append(PartitionInfo(
            name=name,
            state=rec.get("State", "UNKNOWN").upper(),
            time_limit=time_limit_minutes(rec.get("MaxTime")),
            default=rec.get("Default", "NO").upper() == "YES",
            default_time=default_time // 60 if default_time is not None else None,
            billing_weights=parse_billing_weights(_null(rec.get("TRESBillingWeights"))),
        ))
    return parts


def nodes_from_scontrol(records: list[dict[str, str]]) -> list[NodeInfo]:
    nodes = []
    for rec in records:
        name = rec.get("NodeName")
        if not name:
            continue
        nodes.append(node_from_tokens(
            name, state_tokens(rec.get("State")),
            cpus=to_int(rec.get("CPUTot"), 0) or 0,
            mem_mb=to_int(rec.get("RealMemory"), 0) or 0,
            gpus=gpus_from_gres(_null(rec.get("Gres"))),
            features=split_list(_null(rec.get("AvailableFeatures"))),
            partitions=split_list(_null(rec.get("Partitions"))),
        ))
    return nodes


# --- JSON (22.05 openapi v0.0.38 and data_parser v0.0.39+) ------------------------------------

def nodes_from_json(nodes: list[dict[str, Any]]) -> list[NodeInfo]:
    """Nodes of ``sinfo --json`` (22.05) or ``scontrol --json show node`` (23.02+)."""
    out = []
    for node in nodes:
        if not isinstance(node, dict) or not node.get("name"):
            continue
        out.append(node_from_tokens(
            node["name"], state_tokens(node.get("state"), node.get("state_flags")),
            cpus=to_int(unwrap(node.get("cpus")), 0) or 0,
            mem_mb=to_int(unwrap(node.get("real_memory")), 0) or 0,
            gpus=gpus_from_gres(node.get("gres")),
            features=split_list(node.get("features")),
            partitions=split_list(node.get("partitions")),
        ))
    return out


def partition_from_json(part: dict[str, Any]) -> PartitionInfo:
    """A partition of ``scontrol --json show partition`` or of a ``sinfo --json`` entry."""
    inner = part.get("partition") if isinstance(part.get("partition"), dict) else {}
    states = state_list(inner.get("state") if inner else part.get("state"))
    flags = {str(f).upper() for f in (part.get("flags") or []) + (inner.get("flags") or [] if inner else [])}
    maximums = part.get("maximums") or {}
    defaults = part.get("defaults") or {}
    default_time = unwrap(defaults.get("time"))
    default_seconds = parse_duration(default_time) if default_time is not None else None
    return PartitionInfo(
        name=str(part.get("name", "")),
        state=states[0] if states else "UP",
        time_limit=time_limit_minutes(maximums.get("time")),
        default="DEFAULT" in flags or bool(part.get("default") is True),
        default_time=default_seconds // 60 if default_seconds is not None else None,
        billing_weights=parse_billing_weights((part.get("tres") or {}).get("billing_weights")
                                              if isinstance(part.get("tres"), dict) else None),
    )


def state_list(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [str(v).upper() for v in items if str(v)]


def from_sinfo_entries(entries: list[dict[str, Any]]) -> tuple[list[PartitionInfo], list[NodeInfo]]:
    """Partitions and nodes from the ``sinfo`` array of ``sinfo --json`` (23.02+): one entry per
    partition and group of alike nodes; a node in two partitions appears in two entries."""
    partitions: dict[str, PartitionInfo] = {}
    nodes: dict[str, NodeInfo] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        part_obj = entry.get("partition") or {}
        pname = str(part_obj.get("name", ""))
        if pname and pname not in partitions:
            partitions[pname] = partition_from_json(part_obj)
        node_group = entry.get("nodes") or {}
        names: list[str] = []
        for item in node_group.get("nodes") or node_group.get("hostnames") or []:
            names.extend(expand_hostlist(str(item)) if "[" in str(item) else [str(item)])
        tokens = state_tokens((entry.get("node") or {}).get("state"))
        fields = {
            "cpus": to_int(unwrap((entry.get("cpus") or {}).get("maximum")), 0) or 0,
            "mem_mb": to_int(unwrap((entry.get("memory") or {}).get("maximum")), 0) or 0,
            "gpus": gpus_from_gres((entry.get("gres") or {}).get("total")),
            "features": split_list((entry.get("features") or {}).get("total")),
        }
        for name in names:
            known = nodes.get(name)
            parts = (known.partitions if known else ()) + ((pname,) if pname else ())
            nodes[name] = node_from_tokens(name, tokens, partitions=tuple(dict.fromkeys(parts)), **fields)
    return list(partitions.values()), list(nodes.values())


def _job_id(job: dict[str, Any]) -> str:
    """The id squeue prints: ``123``, ``123_4`` (array task), ``123_[5-9]`` (pending array),
    ``123+0`` (heterogeneous component)."""
    array_id = to_int(unwrap(job.get("array_job_id")), 0)
    if array_id:
        task = unwrap(job.get("array_task_id"))
        if task is not None:
            return f"{array_id}_{task}"
        tasks = job.get("array_task_string") or ""
        if tasks:
            return f"{array_id}_[{tasks}]"
    het_id = to_int(unwrap(job.get("het_job_id")), 0)
    if het_id:
        return f"{het_id}+{to_int(unwrap(job.get('het_job_offset')), 0)}"
    return str(unwrap(job.get("job_id")))


def jobs_from_squeue_json(jobs: list[dict[str, Any]], *, now: float) -> list[dict[str, Any]]:
    out = []
    for job in jobs:
        if not isinstance(job, dict):
            continue
        states = state_list(job.get("job_state"))
        state = states[0] if states else "UNKNOWN"
        start = _epoch(job.get("start_time"))
        end = _epoch(job.get("end_time"))
        if state in ("RUNNING", "SUSPENDED", "COMPLETING", "STOPPED") and start and start <= now:
            used = int(now - start)
        elif start and end and end >= start and state not in ("PENDING", "RUNNING"):
            used = end - start
        else:
            used = 0
        limit = unwrap(job.get("time_limit"), infinite=None)
        # A pending job cancelled before it started has no "cpus" any more (squeue's text
        # still prints the request): read the request from its TRES strings then.
        cpus = to_int(unwrap(job.get("cpus"))) or _tres_count(job.get("tres_alloc_str"), "cpu") \
            or _tres_count(job.get("tres_req_str"), "cpu")
        out.append(job_record(
            job_id=_job_id(job),
            job_name=str(job.get("name") or ""),
            user=str(job.get("user_name") or job.get("user") or ""),
            partition=str(job.get("partition") or ""),
            state=state,
            reason=str(job.get("state_reason") or ""),
            nodes=to_int(unwrap(job.get("node_count")), 0) or 0,
            cpus=cpus or 0,
            time_limit=to_int(limit),
            time_used=used,
            submit_time=_epoch(job.get("submit_time")),
            start_time=start,
            priority=to_int(unwrap(job.get("priority"))),
            account=str(job.get("account") or ""),
            qos=str(job.get("qos") or ""),
            node_list=str(job.get("nodes") or ""),
        ))
    return out


def _tres_count(tres: Any, kind: str) -> int | None:
    """``cpu=2,mem=2000M,node=1`` → 2 for ``cpu``."""
    for item in str(tres or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == kind:
            return to_int(value)
    return None


def _local_epoch(text: str) -> int | None:
    """squeue's ``2026-11-28T12:45:14`` (local time, SLURM_TIME_FORMAT=standard) → epoch."""
    text = text.strip()
    if not text or text in ("N/A", "Unknown", "None", "(null)"):
        return None
    try:
        return int(time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def jobs_from_squeue_text(text: str) -> list[dict[str, Any]]:
    """``squeue -h -o`` with :data:`SQUEUE_FIELDS` joined by :data:`SEP`."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split(SEP, len(SQUEUE_FIELDS) - 1)
        if len(cols) != len(SQUEUE_FIELDS):
            continue
        (job_id, user, partition, state, nodes, cpus, limit, used, submit, start, priority, account,
         node_list, reason, qos, name) = cols
        limit_seconds = parse_duration(limit)
        out.append(job_record(
            job_id=job_id.strip(), job_name=name, user=user.strip(), partition=partition.strip(),
            state=state.strip().upper() or "UNKNOWN", reason=_null(reason.strip()),
            nodes=to_int(nodes, 0) or 0, cpus=to_int(cpus, 0) or 0,
            time_limit=limit_seconds // 60 if limit_seconds is not None else None,
            time_used=parse_duration(used, bare="seconds") or 0,
            submit_time=_local_epoch(submit), start_time=_local_epoch(start),
            priority=to_int(priority), account=_null(account.strip()), qos=_null(qos.strip()),
            node_list=_null(node_list.strip()),
        ))
    return out


# --- associations ----------------------------------------------------------------------------

def _shares(value: Any) -> int | None:
    shares = to_int(unwrap(value))
    return None if shares is None or shares == SHARES_FROM_PARENT else shares


def _minutes(value: Any) -> int | None:
    """A wall limit: plain minutes (JSON) or a duration string (text) → minutes."""
    value = unwrap(value, infinite=None)
    if value is None or value == "":
        return None
    seconds = parse_duration(value)
    return seconds // 60 if seconds is not None else None


def tres_string(value: Any) -> str | None:
    """A TRES limit as Slurm prints it (``cpu=1,gres/gpu=4``) from text or a JSON TRES list."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return value
    parts = []
    for tres in value if isinstance(value, list) else []:
        if not isinstance(tres, dict):
            continue
        kind, name = tres.get("type", ""), tres.get("name") or ""
        count = unwrap(tres.get("count"))
        parts.append(f"{kind}/{name}={count}" if name else f"{kind}={count}")
    return ",".join(parts) or None


def allocations_from_sacctmgr_text(text: str) -> list[dict[str, Any]]:
    """``sacctmgr -n -P show assoc format=<SACCTMGR_FIELDS>``."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) < len(SACCTMGR_FIELDS):
            continue
        row = dict(zip(SACCTMGR_FIELDS, cols))
        out.append(allocation_record(
            account=row["Account"], user=row["User"], cluster=row["Cluster"], partition=row["Partition"],
            shares=to_int(row["Share"]), qos=row["QOS"], default_qos=row["DefaultQOS"],
            max_jobs=to_int(row["MaxJobs"]), max_submit=to_int(row["MaxSubmit"]), max_wall=_minutes(row["MaxWall"]),
            max_tres=row["MaxTRES"] or None, grp_jobs=to_int(row["GrpJobs"]), grp_submit=to_int(row["GrpSubmit"]),
            grp_wall=_minutes(row["GrpWall"]), grp_tres=row["GrpTRES"] or None,
        ))
    return out


def _path(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def allocations_from_sacctmgr_json(assocs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``sacctmgr --json show assoc`` (data_parser field paths: ``max/jobs/active`` is MaxJobs,
    ``max/jobs/total`` MaxSubmit, ``max/jobs/per/wall_clock`` MaxWall, ``max/tres/total`` GrpTRES…)."""
    out = []
    for assoc in assocs:
        if not isinstance(assoc, dict):
            continue
        qos = assoc.get("qos") or []
        default_qos = _path(assoc, "default", "qos")
        out.append(allocation_record(
            account=str(assoc.get("account") or ""), user=str(assoc.get("user") or ""),
            cluster=str(assoc.get("cluster") or ""), partition=str(assoc.get("partition") or ""),
            shares=_shares(assoc.get("shares_raw")),
            qos=",".join(str(q) for q in qos) if isinstance(qos, list) else str(qos),
            default_qos=str(default_qos or ""),
            max_jobs=to_int(unwrap(_path(assoc, "max", "jobs", "active"))),
            max_submit=to_int(unwrap(_path(assoc, "max", "jobs", "total"))),
            max_wall=_minutes(_path(assoc, "max", "jobs", "per", "wall_clock")),
            max_tres=tres_string(_path(assoc, "max", "tres", "per", "job")),
            grp_jobs=to_int(unwrap(_path(assoc, "max", "jobs", "per", "count"))),
            grp_submit=to_int(unwrap(_path(assoc, "max", "jobs", "per", "submitted"))),
            grp_wall=_minutes(_path(assoc, "max", "per", "account", "wall_clock")),
            grp_tres=tres_string(_path(assoc, "max", "tres", "total")),
        ))
    return out


def fairshare_from_sshare(text: str) -> dict[tuple[str, str], float | None]:
    """``sshare -n -P -a -o Account,User,RawShares,FairShare`` → ``{(account, user): factor}``.
    sshare indents accounts by depth; account rows have no FairShare in 22.05."""
    shares: dict[tuple[str, str], float | None] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 4:
            continue
        shares[(cols[0].strip(), cols[1].strip())] = to_float(cols[3].strip())
    return shares
