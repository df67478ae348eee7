"""queue_info: queues (partitions), nodes, jobs and allocations of the edge's batch scheduler.

Routes (all read-only; ``?force=true`` bypasses the cache):

- ``GET get_info/{sid}`` → ``{"queues": {name: queue}, "meta": {...}}``
- ``GET list_jobs/{sid}`` and ``GET list_jobs/{sid}/{queue}`` ``?user=&state=`` → ``{"jobs": [...]}``
- ``GET list_allocations/{sid}?user=`` → ``{"allocations": [...]}`` (no user: the agent's own
  user; ``*``: everyone)
- ``GET backend/{sid}`` → which scheduler is used, how it was chosen, what JSON it offers

Settings (``--option queue_info.KEY=VALUE``): ``backend`` (auto, slurm, pbs, none), ``json``
(false: read text output only), ``command_timeout`` (s for all the commands of one answer),
``ttl_info``/``ttl_jobs``/``ttl_allocations`` (s), ``bin_dir`` (where the scheduler's commands
are), ``slurm_conf`` (a slurm.conf for another cluster), ``pbs_conf`` (default /etc/pbs.conf).

The data is collected by blocking commands in this plugin's own small thread pool, never on the
event loop, and kept in one cache for the whole agent (not per session), so a hundred portal
tabs cost one ``squeue`` every few seconds. See :mod:`.records` for the fields and units.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import time
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Callable

from ...plugin import HTTPError, Plugin, Request, Session, route
from . import budget
from .backend import Backend, Collected
from .cache import Cached, CollectorCache
from .commands import DEFAULT_TIMEOUT, CommandRunner, SchedulerError
from .detect import BACKENDS, Detection, detect, make_backend
from .records import FINAL_JOB_STATES, is_active, named_numbers
from .slurm import default_user

if TYPE_CHECKING:
    from ...host import PluginHost

log = logging.getLogger("edge_agent.plugins.queue_info")

# How often "no scheduler found" is re-checked (a module may be loaded after the agent starts).
REDETECT_SECONDS = 60.0
# Scheduler commands running at once; more would only queue up at a busy controller.
POOL_SIZE = 4
# Queue and user names go into argv: no leading dash (it would be read as an option), no commas
# (sacctmgr would read a list), no spaces.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")
_STATE = re.compile(r"^[A-Za-z_]{1,32}$")

_COLUMNS_QUEUES = [
    {"key": "name", "label": "Queue"}, {"key": "state", "label": "State"},
    {"key": "default", "label": "Default"}, {"key": "time_limit", "label": "Time limit (min)"},
    {"key": "nodes_total", "label": "Nodes"}, {"key": "nodes_available", "label": "Available"},
    {"key": "nodes_idle", "label": "Idle"}, {"key": "cpus_per_node", "label": "CPUs/node"},
    {"key": "mem_per_node_mb", "label": "Memory/node (MiB)"}, {"key": "gpus_per_node", "label": "GPUs/node"},
    {"key": "features", "label": "Features"},
]
_COLUMNS_JOBS = [
    {"key": "job_id", "label": "Job"}, {"key": "job_name", "label": "Name"}, {"key": "user", "label": "User"},
    {"key": "partition", "label": "Queue"}, {"key": "state", "label": "State"}, {"key": "reason", "label": "Reason"},
    {"key": "nodes", "label": "Nodes"}, {"key": "cpus", "label": "CPUs"},
    {"key": "time_used", "label": "Used (s)"}, {"key": "time_limit", "label": "Limit (min)"},
    {"key": "account", "label": "Account"}, {"key": "node_list", "label": "Node list"},
]
_COLUMNS_ALLOCATIONS = [
    {"key": "account", "label": "Account"}, {"key": "user", "label": "User"},
    {"key": "partition", "label": "Partition"}, {"key": "fairshare", "label": "Fair share"},
    {"key": "qos", "label": "QOS"}, {"key": "max_jobs", "label": "Max jobs"},
    {"key": "max_submit", "label": "Max submit"}, {"key": "max_wall", "label": "Max wall (min)"},
    {"key": "grp_tres", "label": "Group TRES"},
]


@dataclass
class Settings:
    """The plugin's settings, read once from ``--option queue_info.*``; bad values fall back to
    the default with a warning in the log (and in ``backend/{sid}``)."""

    backend: str = "auto"
    use_json: bool = True
    command_timeout: float = DEFAULT_TIMEOUT
    ttl_info: float = 60.0
    ttl_jobs: float = 5.0
    ttl_allocations: float = 60.0
    bin_dir: str | None = None
    slurm_conf: str | None = None
    pbs_conf: str | None = None
    budget_period_start: str | None = None  # ISO dates of the site's allocation period (usage/{sid})
    budget_period_end: str | None = None
    # "gpu=4,debug=0.5": what a core-hour costs in each queue, where the site says so (PBS
    # sites, or Slurm sites that charge otherwise than TRESBillingWeights); wins over Slurm's.
    charge_factors: str | None = None
    # "chem01=50000,ml=10000": core-hours each account may use in the period (PBS has no
    # allocations of its own; on Slurm this wins over GrpTRESMins).
    budget_limits: str | None = None
    # Seconds between budget checks that emit a ``usage`` event (the bridge warns when an
    # account runs low from them); 0: never.
    budget_watch: float = 900.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> tuple[Settings, list[str]]:
        settings, problems = cls(), []
        for key, value in config.items():
            attr = "use_json" if key == "json" else key
            if attr not in cls.__dataclass_fields__:
                problems.append(f"unknown setting queue_info.{key}")
                continue
            default = getattr(settings, attr)
            try:
                setattr(settings, attr, _coerce(attr, value, default))
            except ValueError as exc:
                problems.append(f"queue_info.{key}={value!r} ignored: {exc}")
        if settings.backend not in BACKENDS:
            problems.append(f"queue_info.backend={settings.backend!r} is not one of {', '.join(BACKENDS)}")
        return settings, problems


def _coerce(attr: str, value: Any, default: Any) -> Any:
    if attr == "use_json":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on", "auto"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError("expected a number of seconds")
        number = float(value)
        if number < 0 or (attr == "command_timeout" and number == 0):
            raise ValueError("must be positive")
        return number
    if attr == "backend":
        return str(value).strip().lower()
    return str(value) if value not in (None, "") else None


def parse_charge_factors(text: str | None) -> dict[str, float]:
    """``queue_info.charge_factors``: ``"gpu=4,debug=0.5"``, what a core-hour costs per queue."""
    return named_numbers(text, "<queue>=<factor ≥ 0>")


def with_charge_factors(queues: dict[str, dict[str, Any]], site: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Queue records with each one's ``charge_factor`` (a core-hour's price) and where it comes
    from: ``site`` (the setting), ``billing_weights`` (Slurm's TRESBillingWeights) or none."""
    out = {}
    for name, queue in queues.items():
        queue = dict(queue)
        if name in site:
            queue["charge_factor"], queue["charge_factor_source"] = site[name], "site"
        else:
            queue.setdefault("charge_factor", None)
            queue["charge_factor_source"] = "billing_weights" if queue["charge_factor"] is not None else None
        out[name] = queue
    return out


class QueueInfoPlugin(Plugin):
    name = "queue_info"
    version = "1.0.0"
    description = "Queues, nodes, jobs and allocations of the edge's batch scheduler (Slurm or PBS)."
    ui_schema = {
        "title": "Queues & allocations",
        "icon": "list",
        "description": description,
        "refresh_button": True,
        "forms": [
            {
                "id": "jobs", "title": "Jobs", "layout": "grid3",
                "fields": [
                    {"name": "queue", "type": "text", "label": "Queue", "placeholder": "all queues",
                     "required": False},
                    {"name": "user", "type": "text", "label": "User", "placeholder": "all users", "required": False},
                    {"name": "state", "type": "select", "label": "State", "default": "", "required": False,
                     "options": [{"value": "", "label": "queued and running"}, {"value": "RUNNING", "label": "running"},
                                 {"value": "PENDING", "label": "pending"}, {"value": "all", "label": "all known"}]},
                ],
                "submit": {"label": "List jobs", "style": "primary", "method": "GET",
                           "endpoint": "list_jobs/{sid}/{queue}", "endpoint_without_queue": "list_jobs/{sid}",
                           "query": ["user", "state"]},
            },
            {
                "id": "allocations", "title": "Allocations", "layout": "single",
                "fields": [{"name": "user", "type": "text", "label": "User",
                            "placeholder": "the agent's user; * for everyone", "required": False}],
                "submit": {"label": "Show allocations", "style": "primary", "method": "GET",
                           "endpoint": "list_allocations/{sid}", "query": ["user"]},
            },
        ],
        "monitors": [
            {"id": "queues", "title": "Queues", "type": "table", "auto_load": "get_info/{sid}",
             "endpoint": "get_info/{sid}", "data_path": "queues", "row_key": "name", "columns": _COLUMNS_QUEUES,
             "empty_text": "No queues"},
            {"id": "jobs", "title": "Jobs", "type": "table", "auto_load": "list_jobs/{sid}",
             "endpoint": "list_jobs/{sid}", "data_path": "jobs", "row_key": "job_id", "columns": _COLUMNS_JOBS,
             "empty_text": "No jobs in the queue", "form": "jobs"},
            {"id": "allocations", "title": "Allocations", "type": "table", "auto_load": "list_allocations/{sid}",
             "endpoint": "list_allocations/{sid}", "data_path": "allocations", "columns": _COLUMNS_ALLOCATIONS,
             "empty_text": "No allocations", "form": "allocations"},
            {"id": "backend", "title": "Scheduler", "type": "raw", "endpoint": "backend/{sid}"},
        ],
        "notifications": [{"topic": "usage", "items_field": "accounts", "id_field": "account"}],
    }

    def __init__(self, host: PluginHost, config: dict[str, Any] | None = None) -> None:
        super().__init__(host, config)
        self.settings, self.problems = Settings.from_config(self.config)
        try:
            self._charge_factors = parse_charge_factors(self.settings.charge_factors)
        except ValueError as exc:
            self._charge_factors = {}
            self.problems.append(f"queue_info.charge_factors ignored: {exc}")
        for problem in self.problems:
            log.warning("%s", problem)
        env = {"SLURM_CONF": self.settings.slurm_conf} if self.settings.slurm_conf else {}
        self.runner = CommandRunner(timeout=self.settings.command_timeout, bin_dir=self.settings.bin_dir, env=env)
        self.cache = CollectorCache()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="queue-info")
        self._backend: Backend | None = None
        self._detection: Detection | None = None
        self._detected_at = 0.0
        self._detect_lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        if self.settings.budget_watch > 0:
            self._watcher = asyncio.get_running_loop().create_task(self._watch_budgets())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _watch_budgets(self) -> None:
        """Every ``budget_watch`` seconds (the first soon after start), the agent user's
        budgets as a ``usage`` event: each account's limit, use and remainder, without the
        history (the bridge derives ``allocation_low`` from these)."""
        await asyncio.sleep(min(5.0, self.settings.budget_watch))
        while True:
            try:
                summary = await self.budget_summary()
                if summary is not None:
                    self.emit("usage", summary)
            except asyncio.CancelledError:
                raise
            except SchedulerError as exc:
                log.debug("budget check skipped: %s", exc)
            except Exception:
                log.warning("budget check failed", exc_info=True)
            await asyncio.sleep(self.settings.budget_watch)

    async def budget_summary(self) -> dict[str, Any] | None:
        """The agent user's budgets without their history, as ``usage/{sid}`` reads them
        (None: no Slurm or PBS, or no account with a limit)."""
        backend = await self.get_backend()
        if backend.name not in ("slurm", "pbs"):
            return None
        collect = self._pbs_usage if backend.name == "pbs" else self._usage
        got = await self._collect(("usage", "-", "30"), self.settings.ttl_allocations, collect, False,
                                  accounts=[], days=30)
        accounts = [{k: v for k, v in a.items() if k not in ("history", "forecast", "verdict")}
                    for a in got.value.data.get("accounts", []) if a.get("limit")]
        if not accounts:
            return None
        return {"accounts": accounts, "unit": got.value.data.get("unit"), "collected_at": round(got.collected_at, 3)}

    # -- backend -------------------------------------------------------------------------

    async def get_backend(self, *, redetect: bool = False) -> Backend:
        """The scheduler backend, detected on first use (and re-detected every minute while
        auto-detection finds none, so installing Slurm later needs no agent restart)."""
        if self._detect_lock is None:
            self._detect_lock = asyncio.Lock()
        async with self._detect_lock:
            detection = self._detection
            stale = (
                self._backend is None or detection is None or redetect
                or (detection.backend == "none" and detection.how == "auto"
                    and time.monotonic() - self._detected_at > REDETECT_SECONDS)
            )
            if stale:
                new = await self._in_pool(detect, self.settings.backend, self.runner, pbs_conf=self.settings.pbs_conf)
                if detection is None or new.backend != detection.backend or new.bin_dir != detection.bin_dir:
                    log.info("queue_info backend: %s (%s: %s)", new.backend, new.how, new.reason)
                    self._backend = make_backend(new, self.runner, use_json=self.settings.use_json)
                    self.cache.invalidate()
                self._detection = new
                self._detected_at = time.monotonic()
        assert self._backend is not None
        return self._backend

    async def _in_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _collect(self, key: tuple, ttl: float, fn: Callable[..., Collected], force: bool,
                       **kwargs: Any) -> Cached[Collected]:
        started = time.monotonic()
        got = await self.cache.get(key, ttl, lambda: self._in_pool(fn, **kwargs), force=force)
        if not got.cached:
            log.debug("queue_info %s collected in %.2fs with %s", key[0], time.monotonic() - started,
                      "; ".join(got.value.commands))
        return got

    def _meta(self, backend: Backend, got: Cached[Collected]) -> dict[str, Any]:
        return {
            "backend": backend.name,
            "mode": got.value.mode,
            "commands": got.value.commands,
            "notes": got.value.notes,
            "collected_at": round(got.collected_at, 3),
            "age_seconds": round(got.age, 3),
            "cached": got.cached,
        }

    # -- routes --------------------------------------------------------------------------

    @route("GET", "get_info/{sid}")
    async def get_info(self, request: Request, session: Session) -> dict[str, Any]:
        """``{"queues": {name: queue record}, "meta": {...}}``."""
        backend = await self.get_backend()
        got = await self._collect(("info",), self.settings.ttl_info, backend.collect_info, request.flag("force"))
        return {"queues": with_charge_factors(got.value.data, self._charge_factors), "meta": self._meta(backend, got)}

    @route("GET", "list_jobs/{sid}")
    async def list_all_jobs(self, request: Request, session: Session) -> dict[str, Any]:
        """Jobs of every queue (``?user=``, ``?state=``)."""
        return await self._list_jobs(request, None)

    @route("GET", "list_jobs/{sid}/{queue}")
    async def list_jobs(self, request: Request, session: Session, queue: str) -> dict[str, Any]:
        """Jobs of ``queue``; 404 when the queue does not exist."""
        return await self._list_jobs(request, check_name(queue, "queue"))

    async def _list_jobs(self, request: Request, queue: str | None) -> dict[str, Any]:
        user = request.arg("user") or None
        user = None if user == "*" else check_name(user, "user") if user else None
        states, include_finished = parse_states(request.arg("state"))
        backend = await self.get_backend()
        got = await self._collect(("jobs", user or "*", include_finished), self.settings.ttl_jobs,
                                  backend.collect_jobs, request.flag("force"),
                                  user=user, include_finished=include_finished)
        jobs = got.value.data
        if queue:
            jobs = [j for j in jobs if queue in j["partition"].split(",")]
        if states:
            jobs = [j for j in jobs if j["state"] in states]
        elif not include_finished:
            jobs = [j for j in jobs if is_active(j)]
        if queue and not jobs:
            await self._check_queue(backend, queue)
        return {"jobs": sorted(jobs, key=_job_order), "meta": self._meta(backend, got)}

    async def _check_queue(self, backend: Backend, queue: str) -> None:
        """404 for a queue the scheduler does not know (only asked when a queue has no jobs)."""
        try:
            info = await self._collect(("info",), self.settings.ttl_info, backend.collect_info, False)
        except SchedulerError:
            return  # cannot tell; an empty list is still a true answer
        queues = info.value.data
        if queue not in queues:
            raise HTTPError(404, "unknown_queue",
                            f"no queue '{queue}' on this edge; queues: {', '.join(sorted(queues)) or 'none'}")

    @route("GET", "list_allocations/{sid}")
    async def list_allocations(self, request: Request, session: Session) -> dict[str, Any]:
        """Associations of ``?user=`` (default: the agent's own user; ``*``: everyone)."""
        raw = request.arg("user") or ""
        user = None if raw == "*" else check_name(raw, "user") if raw else default_user()
        backend = await self.get_backend()
        got = await self._collect(("allocations", user or "*"), self.settings.ttl_allocations,
                                  backend.collect_allocations, request.flag("force"), user=user)
        allocations = [compat_allocation(a, original=request.original_format) for a in got.value.data]
        return {"allocations": allocations, "user": user or "*", "meta": self._meta(backend, got)}

    @route("GET", "usage/{sid}")
    async def usage(self, request: Request, session: Session) -> dict[str, Any]:
        """Burn-down of ``?accounts=a,b`` (default: the agent user's accounts): core-hours used
        per day since the period began, the limit (``GrpTRESMins``), what remains, the pace
        to spend it by the period's end, and a forecast. ``?days=`` (default 30) without a
        site period. Slurm with accounting only."""
        backend = await self.get_backend()
        if backend.name not in ("slurm", "pbs"):
            raise HTTPError(501, "not_supported", "budgets are read from Slurm's accounting or PBS's job "
                                                  f"history; this edge runs {backend.name}")
        days = request.arg("days") or "30"
        if not days.isdigit() or not 1 <= int(days) <= 366:
            raise HTTPError(400, "bad_request", f"days must be a whole number from 1 to 366, got {days!r}")
        raw = request.arg("accounts") or ""
        accounts = [check_name(a.strip(), "account") for a in raw.split(",") if a.strip()]
        key = ("usage", ",".join(accounts) or "-", days)
        collect = self._pbs_usage if backend.name == "pbs" else self._usage
        got = await self._collect(key, self.settings.ttl_allocations, collect, request.flag("force"),
                                  accounts=accounts, days=int(days))
        return {**got.value.data, "meta": self._meta(backend, got)}

    def _period(self, days: int) -> tuple[date, date, date | None, dict[str, float]]:
        """Today, the accounting period and the site's limits, or 500 ``bad_setting``."""
        today = date.today()
        try:
            start, end = budget.period(self.settings.budget_period_start, self.settings.budget_period_end,
                                       today=today, days=days)
        except ValueError as exc:
            raise HTTPError(500, "bad_setting", f"queue_info.budget_period_*: {exc}") from None
        try:
            site_limits = budget.parse_site_limits(self.settings.budget_limits)
        except ValueError as exc:
            raise HTTPError(500, "bad_setting", f"queue_info.budget_limits: {exc}") from None
        return today, start, end, site_limits

    def _pbs_usage(self, *, accounts: list[str], days: int) -> Collected:
        """PBS: usage from the job history (qstat -x -f -t), limits from the site's setting."""
        today, start, end, site_limits = self._period(days)
        backend = self._backend
        assert backend is not None and hasattr(backend, "job_history")
        jobs = backend.job_history()
        usage = budget.parse_pbs_usage(jobs, today=today, start=start)
        if not accounts:
            me = default_user()
            accounts = sorted({budget.pbs_account(a) for a in jobs.values()
                               if a.get("Job_Owner", "").split("@")[0] == me} - {""})
        made = [budget.burn_down(a, usage.get(a, {}), site_limits.get(a), start=start, end=end, today=today)
                for a in accounts]
        return Collected({"accounts": made, "unit": "core-hours", "period_start": start.isoformat(),
                          "period_end": end.isoformat() if end else None, "source": "qstat -x -f -t"}, [])

    def _usage(self, *, accounts: list[str], days: int) -> Collected:
        today, start, end, site_limits = self._period(days)
        if not accounts:
            text = self.runner.run(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={default_user()}",
                                    "format=Account"]).stdout
            accounts = sorted({line.strip() for line in text.splitlines() if line.strip()})
        if not accounts:
            return Collected({"accounts": [], "unit": "core-hours"}, [])
        limits = {**budget.parse_limits(self.runner.run(budget.limits_command(accounts)).stdout), **site_limits}
        usage = budget.parse_usage(self.runner.run(budget.usage_command(accounts, start)).stdout, today=today)
        made = [budget.burn_down(a, usage.get(a, {}), limits.get(a), start=start, end=end, today=today)
                for a in accounts]
        return Collected({"accounts": made, "unit": "core-hours", "period_start": start.isoformat(),
                          "period_end": end.isoformat() if end else None}, [])

    @route("GET", "backend/{sid}")
    async def backend_info(self, request: Request, session: Session) -> dict[str, Any]:
        """Which scheduler answers, how it was chosen, and what this plugin does with it.
        ``?force=true`` detects again (and empties the cache if the answer changed)."""
        backend = await self.get_backend(redetect=request.flag("force"))
        assert self._detection is not None
        return {
            **self._detection.to_dict(),
            "json": backend.json_support(),
            "settings": {
                "json": self.settings.use_json, "command_timeout": self.settings.command_timeout,
                "ttl_info": self.settings.ttl_info, "ttl_jobs": self.settings.ttl_jobs,
                "ttl_allocations": self.settings.ttl_allocations, "slurm_conf": self.settings.slurm_conf,
            },
            "problems": self.problems,
            "cache": {"entries": len(self.cache), "hits": self.cache.hits, "misses": self.cache.misses,
                      "collector_runs": self.cache.runs},
        }


def compat_allocation(alloc: dict[str, Any], *, original: bool) -> dict[str, Any]:
    """An allocation with the original RADICAL Edge's fields beside ours: ``fairshare_factor``
    (sshare's factor, which is what our ``fairshare`` holds), and ``allocated_node_hours``,
    ``used_node_hours``, ``remaining_node_hours`` (null: neither Slurm associations nor PBS
    say, and the original always answered null). With ``original`` (``?format=v0``)
    ``fairshare`` means what it meant there: the association's raw shares."""
    out = {**alloc, "fairshare_factor": alloc.get("fairshare"),
           "allocated_node_hours": None, "used_node_hours": None, "remaining_node_hours": None}
    if original:
        out["fairshare"] = alloc.get("shares")
    return out


def check_name(value: str, what: str) -> str:
    """``value`` if it is a plausible queue or user name, else a 400 (it ends up in argv)."""
    if not _NAME.match(value):
        raise HTTPError(400, "bad_request", f"invalid {what} name {value!r}")
    return value


def parse_states(raw: str | None) -> tuple[frozenset[str], bool]:
    """``?state=`` → (states to keep, whether finished jobs are wanted). Empty: active jobs;
    ``all``: everything the scheduler still knows; else a comma list such as ``RUNNING,PENDING``."""
    if not raw:
        return frozenset(), False
    states = {s.strip().upper() for s in raw.split(",") if s.strip()}
    for state in states:
        if not _STATE.match(state):
            raise HTTPError(400, "bad_request", f"invalid job state {state!r}")
    if "ALL" in states:
        return frozenset(), True
    return frozenset(states), bool(states & FINAL_JOB_STATES)


def _job_order(job: dict[str, Any]) -> tuple[int, str]:
    digits = re.match(r"\d+", job["job_id"])
    return (int(digits.group(0)) if digits else 0, job["job_id"])
