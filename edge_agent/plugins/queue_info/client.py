"""SDK client of the queue_info plugin.

    qi = bc.get_edge_client("my-edge").get_plugin("queue_info")
    for name, q in qi.get_info()["queues"].items():
        print(name, q["nodes_idle"], "idle of", q["nodes_total"])
    qi.list_jobs("debug", user="alice")["jobs"]
    qi.list_allocations()["allocations"]      # the agent's own user; user="*" for everyone

Scheduler-side failures raise subclasses of :class:`QueueInfoError` that also keep the generic
class of their HTTP status (a 504 ``scheduler_timeout`` is a :class:`SchedulerTimeout` and an
:class:`~edge_agent.client.errors.EdgeTimeout`), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ...client.errors import (
    BridgeError,
    BridgeUnavailable,
    EdgeDisconnected,
    EdgeTimeout,
    NotFound,
)
from ...client.plugin import PluginClient


class QueueInfoError(BridgeError):
    """The edge's batch scheduler could not answer (see ``detail``, and ``body`` for the
    command, its exit code and stderr)."""


class NoScheduler(QueueInfoError, BridgeUnavailable):
    """503 ``no_scheduler``: the edge has no Slurm or PBS (or the plugin was told so)."""


class SchedulerUnavailable(QueueInfoError, BridgeUnavailable):
    """503 ``command_not_found`` / ``accounting_unavailable``: a command or service is missing."""


class SchedulerFailed(QueueInfoError, EdgeDisconnected):
    """502 ``scheduler_error`` / ``scheduler_output_unreadable``: a command failed."""


class SchedulerTimeout(QueueInfoError, EdgeTimeout):
    """504 ``scheduler_timeout``: a command did not finish in time and was killed."""


class UnknownQueue(QueueInfoError, NotFound):
    """404 ``unknown_queue``: the scheduler has no such queue."""


_ERRORS: dict[str, type[QueueInfoError]] = {
    "no_scheduler": NoScheduler,
    "command_not_found": SchedulerUnavailable,
    "accounting_unavailable": SchedulerUnavailable,
    "scheduler_error": SchedulerFailed,
    "scheduler_output_unreadable": SchedulerFailed,
    "scheduler_timeout": SchedulerTimeout,
    "unknown_queue": UnknownQueue,
}


class QueueInfoClient(PluginClient):
    """Queues, jobs and allocations of one edge's batch scheduler. Every method returns the
    route's JSON (with a ``meta`` dict saying how and when the data was collected);
    ``force=True`` bypasses the edge's cache."""

    def get_info(self, force: bool = False) -> dict[str, Any]:
        """``{"queues": {name: {name, state, default, time_limit, nodes_total, nodes_available,
        nodes_idle, cpus_per_node, mem_per_node_mb, gpus_per_node, features, …}}, "meta": …}``.
        ``time_limit`` is minutes or ``"UNLIMITED"``."""
        return self._get("get_info/{sid}", force=force)

    def list_jobs(self, queue: str | None = None, user: str | None = None, force: bool = False,
                  state: str | None = None) -> dict[str, Any]:
        """``{"jobs": [{job_id, job_name, user, partition, state, nodes, cpus, time_limit,
        time_used, submit_time, start_time, priority, account, node_list, …}], "meta": …}``.

        ``queue`` None lists every queue; ``user`` None every user; ``state`` None the jobs
        still queued or running, ``"all"`` also the finished ones the scheduler remembers, or a
        comma list such as ``"RUNNING,PENDING"``. An unknown queue raises :class:`UnknownQueue`.
        """
        route = "list_jobs/{sid}" if not queue else "list_jobs/{sid}/" + quote(queue, safe="")
        return self._get(route, force=force, user=user, state=state)

    def list_allocations(self, user: str | None = None, force: bool = False) -> dict[str, Any]:
        """``{"allocations": [{account, user, fairshare, qos, max_jobs, max_submit, max_wall,
        grp_tres, …}], "user": …, "meta": …}`` of ``user`` (None: the user the agent runs as;
        ``"*"``: every user and account)."""
        return self._get("list_allocations/{sid}", force=force, user=user)

    def get_usage(self, accounts: list[str] | None = None, days: int | None = None,
                  force: bool = False) -> dict[str, Any]:
        """Budgets: ``{"accounts": [{account, limit, used, remaining, unit: "core-hours",
        period_start, period_end, pace_per_day, forecast {rate_per_day, used_at_end?,
        exhausted_on?}, history [{date, used, day}], verdict}], "meta": …}`` of ``accounts``
        (None: those of the user the agent runs as). Slurm with accounting only."""
        return self._get("usage/{sid}", force=force, accounts=",".join(accounts) if accounts else None, days=days)

    def backend(self, force: bool = False) -> dict[str, Any]:
        """Which scheduler the edge uses and how it was chosen (``force``: detect again)."""
        return self._get("backend/{sid}", force=force)

    def _get(self, route: str, *, force: bool = False, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        if force:
            query["force"] = "true"
        try:
            return self.call("GET", route, params=query or None)
        except BridgeError as exc:
            cls = _ERRORS.get(exc.error)
            if cls is None or isinstance(exc, cls):
                raise
            raise cls(exc.status, exc.error, exc.detail, body=exc.body, request_id=exc.request_id) from None
