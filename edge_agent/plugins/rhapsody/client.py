"""SDK client of the rhapsody plugin (needs no rhapsody on the caller's side).

    rh = ec.get_plugin("rhapsody", backends=["concurrent"])
    submitted = rh.submit_tasks([{"executable": "/bin/hostname"},
                                 {"function": "add", "args": [1, 2]}])
    for task in rh.wait_tasks(submitted, timeout=60):
        print(task["uid"], task["state"], task["stdout"] or task["return_value"])

Task descriptions are plain dicts (see ``edge_agent/plugins/rhapsody/tasks.py`` or
docs/plugins/rhapsody.md). Errors raise the SDK's typed exceptions.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from typing import Any, Union

from ...client.plugin import PluginClient

FINAL_STATES = frozenset({"DONE", "FAILED", "CANCELED"})
# One wait call asks the edge for at most this long, well under the bridge's largest
# request timeout; wait_tasks loops for longer waits.
WAIT_SLICE = 120.0
# Extra time the bridge (and the HTTP client) give a wait call beyond its own timeout.
WAIT_MARGIN = 15.0

TaskRef = Union[str, dict]


def _uid(task: TaskRef) -> str:
    return task["uid"] if isinstance(task, dict) else str(task)


def _uids(tasks: Iterable[TaskRef] | None) -> list[str] | None:
    if tasks is None:
        return None
    return [_uid(t) for t in tasks]


class RhapsodyClient(PluginClient):
    def submit_tasks(self, tasks: list[dict[str, Any]], *, idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """Submit task descriptions; returns ``[{"uid", "state"}]`` in the same order.

        With ``idempotency_key``, calling again with the same key and tasks (say, after a
        network error) answers the tasks of the first call instead of submitting twice."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self.call("POST", "submit/{sid}", json={"tasks": list(tasks)}, headers=headers)

    def wait_tasks(self, tasks: Iterable[TaskRef] | None = None, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait until the tasks (uids, or the dicts ``submit_tasks`` returned; default: all
        of this session's) are final, or ``timeout`` seconds passed (None: no limit).
        Returns their task dicts in the order given; on timeout some are still QUEUED or
        RUNNING (check ``state``)."""
        asked = _uids(tasks)
        deadline = None if timeout is None else time.monotonic() + timeout
        results: dict[str, dict[str, Any]] = {}
        pending = asked
        while True:
            remaining = WAIT_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            piece = min(WAIT_SLICE, remaining)
            answer = self.call("POST", "wait/{sid}", json={"uids": pending, "timeout": piece},
                               timeout=piece + WAIT_MARGIN)
            if asked is None:
                asked = [t["uid"] for t in answer]
            results.update((t["uid"], t) for t in answer)
            # Ask again only for those still running: later answers stay small.
            pending = [t["uid"] for t in answer if t["state"] not in FINAL_STATES]
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                return [results[uid] for uid in asked]

    def get_task(self, uid: TaskRef) -> dict[str, Any]:
        """One task's dict: state, exit_code, stdout, stderr, return_value, error, ..."""
        return self.call("GET", f"task/{{sid}}/{_uid(uid)}")

    def cancel_task(self, uid: TaskRef) -> dict[str, Any]:
        """Stop a task. The answer says what happened: ``canceled``, ``was_running``,
        ``killed``, ``signal``, ``state`` and a ``detail`` in words."""
        return self.call("POST", f"cancel/{{sid}}/{_uid(uid)}")

    def list_tasks(self, state: str | None = None, *, offset: int = 0, limit: int = 1000) -> dict[str, Any]:
        """``{"tasks": [brief task dicts], "total", "offset", "limit"}``, optionally only one state."""
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if state:
            params["state"] = state
        return self.call("GET", "list_tasks/{sid}", params=params)

    def statistics(self) -> dict[str, Any]:
        """Counts by state, process and thread use against their limits, events sent."""
        return self.call("GET", "statistics/{sid}")

    def get_statistics(self) -> dict[str, Any]:
        """The original SDK's name for :meth:`statistics` (deprecated)."""
        warnings.warn("get_statistics() is the original SDK's name; use statistics()", DeprecationWarning, stacklevel=2)
        return self.statistics()

    def functions(self) -> list[dict[str, Any]]:
        """The functions this edge lets function tasks call (name, doc, signature)."""
        return self.call("GET", "functions")["functions"]

    def backends(self) -> dict[str, Any]:
        """Backends the plugin offers and whether each is installed and allowed."""
        return self.call("GET", "backends")["backends"]

    def run_tasks(self, tasks: list[dict[str, Any]], timeout: float | None = None) -> list[dict[str, Any]]:
        """Submit and wait: the final task dicts (or, on timeout, their current ones)."""
        return self.wait_tasks(self.submit_tasks(tasks), timeout=timeout)
