"""psij: batch jobs through PSI/J (local processes, Slurm, PBS, LSF, …).

Routes (docs/plugins/psij.md; "gotcha N" in this package is that page's list of psij gotchas):

    GET  executors                      which executors load here and are offered
    POST submit/{sid}                   {"job_spec": {...}, "executor": "slurm"} -> {job_id, native_id, state}
    POST preview/{sid}                  same body: the submit script, nothing submitted
    GET  status/{sid}/{job_id}          state, exit code, and stdout/stderr from byte offsets
    POST cancel/{sid}/{job_id}
    GET  list_jobs/{sid}                the caller's jobs (everyone's for the edge owner/admins)
    GET  templates/{sid}                the caller's job templates and those shared with everyone on the edge
    POST templates/{sid}                {"name", "shared", "body": <a submit body>} -> the saved template
    POST templates/{sid}/{template_id}/submit   submit a template (body: overrides of its job_spec)
    POST templates/{sid}/{template_id}/delete
    GET  tasks/{sid}/{job_id}           an array job's tasks: state, exit code, output files
    GET  task/{sid}/{job_id}/{index}    one task, with its stdout/stderr from byte offsets
    POST retry/{sid}/{job_id}           submit an array's failed tasks again: {"tasks": [3, 7]} (default: all failed)
    GET  report/{sid}/{job_id}          a finished job's efficiency report (like seff)
    GET  reports/{sid}                  reports of the caller's recent finished jobs, most wasteful first

Jobs belong to the calling user, not to the session: they survive sessions and agent
restarts (records in ``<state dir>/psij/jobs.sqlite3``). Every handler is a plain ``def``,
so the framework runs it in a worker thread: psij's calls (sbatch, scancel), SQLite and
file reads never block the agent's event loop. psij is optional: without it the plugin
still loads, lists the jobs it knows, and answers submits with 503 ``psij_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ...plugin import Caller, HTTPError, Plugin, Request, Session, route
from .manager import JobManager, describe, describe_array
from .settings import PsijSettings
from .spec import SpecError, SubmitRequest, parse_submit
from .store import STATE_RANK

log = logging.getLogger("edge_agent.plugins.psij")

MAX_LIST_LIMIT = 1000
MAX_REPORTS = 200

UI_SCHEMA: dict[str, Any] = {
    "title": "Batch jobs (PSI/J)",
    "icon": "rocket",
    "description": "Submit, follow and cancel jobs on this edge through PSI/J: local processes, Slurm, PBS, LSF.",
    "forms": [{
        "id": "submit",
        "title": "Submit a job",
        "layout": "grid2",
        # Field names are dotted paths into the request body.
        "fields": [
            {"name": "job_spec.executable", "type": "text", "label": "Executable", "required": True,
             "placeholder": "/bin/hostname"},
            {"name": "job_spec.arguments", "type": "text", "label": "Arguments", "required": False,
             "placeholder": "space-separated, shell quoting allowed", "parse": "shell_words"},
            {"name": "executor", "type": "select", "label": "Executor", "default": "local",
             "options": ["local", "slurm", "pbs", "lsf", "flux"], "options_endpoint": "executors"},
            {"name": "job_spec.directory", "type": "text", "label": "Working directory", "required": False,
             "placeholder": "absolute path (default: a private job directory)"},
            {"name": "job_spec.attributes.queue_name", "type": "text", "label": "Queue / partition",
             "required": False, "placeholder": "e.g. debug"},
            {"name": "job_spec.attributes.account", "type": "text", "label": "Account / project", "required": False},
            {"name": "job_spec.attributes.duration", "type": "number", "label": "Duration (seconds)",
             "required": False, "default": 600},
            {"name": "job_spec.attributes.node_count", "type": "number", "label": "Nodes", "required": False},
            {"name": "job_spec.attributes.process_count", "type": "number", "label": "Processes", "required": False},
            {"name": "job_spec.name", "type": "text", "label": "Job name", "required": False},
            {"name": "job_spec.environment", "type": "textarea", "label": "Environment (NAME=value per line)",
             "required": False, "parse": "key_value_lines"},
            {"name": "job_spec.array", "type": "text", "label": "Array of tasks (e.g. 0-19 or 1,3,5-9%4)",
             "required": False, "placeholder": "batch executors: one task per index"},
            {"name": "job_spec.custom_attributes", "type": "textarea",
             "label": "Scheduler options (e.g. slurm.constraint=gpu per line)", "required": False,
             "parse": "key_value_lines"},
        ],
        "submit": {"label": "Submit", "endpoint": "submit/{sid}", "method": "POST"},
    }],
    "monitors": [{
        "id": "jobs",
        "title": "Jobs",
        "type": "task_list",
        "endpoint": "list_jobs/{sid}",
        "items_field": "jobs",
        "id_field": "job_id",
        "state_field": "state",
        "columns": ["job_id", "native_id", "executor", "state", "exit_code", "executable", "queue_name"],
        "detail_endpoint": "status/{sid}/{job_id}",
        "cancel_endpoint": "cancel/{sid}/{job_id}",
        "empty_text": "No jobs submitted yet.",
    }],
    "notifications": [{"topic": "job_status", "id_field": "job_id", "state_field": "state"}],
}


class PsijPlugin(Plugin):
    name = "psij"
    version = "1.0.0"
    description = "Batch jobs through PSI/J: submit, follow (with output tailing) and cancel, across agent restarts."
    ui_schema = UI_SCHEMA

    def __init__(self, host, config: dict[str, Any] | None = None) -> None:
        super().__init__(host, config)
        self.manager: JobManager | None = None
        self.settings: PsijSettings | None = None

    async def start(self) -> None:
        """Read the settings, open the job store, import psij (in a thread) and re-attach to
        the jobs that were running when the agent stopped. A bad setting disables the plugin
        with a logged error naming it."""
        self.settings = PsijSettings.from_config(self.config)
        manager = JobManager(self.host.state_dir / "psij", self.settings, self._emit_job_event)
        await asyncio.to_thread(manager.open)
        self.manager = manager

    async def stop(self) -> None:
        await super().stop()
        manager, self.manager = self.manager, None
        if manager is not None:
            await asyncio.to_thread(manager.close)

    def _emit_job_event(self, topic: str, data: dict[str, Any], owner: Caller) -> None:
        self.emit(topic, data, owner=owner)

    def _jobs(self) -> JobManager:
        if self.manager is None:
            raise HTTPError(503, "psij_starting", "the psij plugin is not running")
        return self.manager

    # -- routes --------------------------------------------------------------------------

    @route("GET", "executors")
    def executors(self, request: Request) -> dict[str, Any]:
        """``{"executors": [{name, loads, enabled, error?, submit_command?, …}], "default", "psij"}``."""
        jobs = self._jobs()
        assert self.settings is not None
        return {
            "executors": jobs.executors(),
            "default": self.settings.default_executor,
            "psij": {"available": jobs.backend.available, "version": jobs.backend.version,
                     "error": jobs.backend.error},
        }

    @route("POST", "submit/{sid}")
    def submit(self, request: Request, session: Session) -> dict[str, Any]:
        """Submit a job. The ``Idempotency-Key`` header (or ``idempotency_key`` in the body)
        makes retries safe: a repeated submit returns the first job, marked ``replayed``."""
        jobs = self._jobs()
        jobs.require_psij()
        submit = self._parse(request)
        record, replayed = jobs.submit(request.caller, submit)
        return {"job_id": record.job_id, "native_id": record.native_id, "executor": record.executor,
                "state": record.state, "replayed": replayed,
                "array": describe_array(record.spec["array"]) if record.spec.get("array") else None}

    # Not read-only: for the local executor it checks the executable and directories on
    # the host, which would tell a viewer whether any path exists (issue 20). Those who
    # may submit are those who need to see what a submit would do.
    @route("POST", "preview/{sid}")
    def preview(self, request: Request, session: Session) -> dict[str, Any]:
        """The submit script (or local command line) a submit with this body would use."""
        jobs = self._jobs()
        jobs.require_psij()
        return jobs.preview(request.caller, self._parse(request))

    @route("GET", "status/{sid}/{job_id}")
    def status(self, request: Request, session: Session, job_id: str) -> dict[str, Any]:
        """Status plus output. Query: ``stdout_offset``, ``stderr_offset`` (bytes already
        read), ``max_bytes`` (per stream), ``output=false`` to leave output out."""
        output = (request.arg("output") or "true").lower() not in ("0", "false", "no", "off")
        return self._jobs().status(
            request.caller, job_id,
            stdout_offset=_int_arg(request, "stdout_offset", 0),
            stderr_offset=_int_arg(request, "stderr_offset", 0),
            max_bytes=_int_arg(request, "max_bytes", None),
            output=output,
        )

    @route("POST", "cancel/{sid}/{job_id}")
    def cancel(self, request: Request, session: Session, job_id: str) -> dict[str, Any]:
        return self._jobs().cancel(request.caller, job_id)

    @route("GET", "list_jobs/{sid}")
    def list_jobs(self, request: Request, session: Session) -> dict[str, Any]:
        """Query: ``state`` (comma-separated), ``executor``, ``limit`` (≤ 1000), ``offset``."""
        states = None
        if request.arg("state"):
            states = [s.strip().upper() for s in (request.arg("state") or "").split(",") if s.strip()]
            bad = [s for s in states if s not in STATE_RANK]
            if bad:
                raise HTTPError(400, "bad_request", f"unknown state {bad[0]!r}; states: {', '.join(STATE_RANK)}")
        limit = _int_arg(request, "limit", 100)
        if limit < 1 or limit > MAX_LIST_LIMIT:
            raise HTTPError(400, "bad_request", f"limit must be between 1 and {MAX_LIST_LIMIT}")
        jobs = self._jobs()
        records, total = jobs.list(
            request.caller, states=states, executor=(request.arg("executor") or None),
            limit=limit, offset=_int_arg(request, "offset", 0),
        )
        counts = jobs.jobs.task_counts([r.job_id for r in records if r.spec.get("array")])
        answer = [describe(r) for r in records]
        for job in answer:
            if job["array"]:
                job["tasks"] = counts.get(job["job_id"], {})
        return {"jobs": answer, "total": total}

    @route("GET", "tasks/{sid}/{job_id}")
    def tasks(self, request: Request, session: Session, job_id: str) -> dict[str, Any]:
        """``{"job_id", "array": {indices, count, throttle}, "tasks": [{index, state, exit_code,
        native_id, message, retried_by, stdout_path, stderr_path}]}``; 400 ``not_an_array``."""
        return self._jobs().tasks(request.caller, job_id)

    @route("GET", "task/{sid}/{job_id}/{index}")
    def task(self, request: Request, session: Session, job_id: str, index: str) -> dict[str, Any]:
        """One task and its output; query as for ``status`` (``stdout_offset``, ``stderr_offset``, ``max_bytes``)."""
        if not index.isdigit():
            raise HTTPError(400, "bad_request", f"a task index is a whole number, got {index!r}")
        return self._jobs().task(request.caller, job_id, int(index),
                                 stdout_offset=_int_arg(request, "stdout_offset", 0),
                                 stderr_offset=_int_arg(request, "stderr_offset", 0),
                                 max_bytes=_int_arg(request, "max_bytes", None))

    @route("POST", "retry/{sid}/{job_id}")
    def retry(self, request: Request, session: Session, job_id: str) -> dict[str, Any]:
        """Submit again an array's failed (and canceled) tasks, or those in ``{"tasks": [...]}``,
        as a new array job. Idempotency as for ``submit``. 409 ``nothing_to_retry``."""
        jobs = self._jobs()
        jobs.require_psij()
        data = request.json(default={}) or {}
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", "send {\"tasks\": [<task index>, …]} or nothing")
        indices = data.get("tasks")
        if indices is not None and (not isinstance(indices, list) or not indices
                                    or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices)):
            raise HTTPError(400, "bad_request", "tasks: a non-empty list of task indices")
        key = _header(request, "idempotency-key") or data.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > 255):
            raise HTTPError(400, "bad_request", "idempotency_key: 1-255 printable characters")
        record, replayed, chosen = jobs.retry(request.caller, job_id, indices=indices, idempotency_key=key)
        return {"job_id": record.job_id, "native_id": record.native_id, "executor": record.executor,
                "state": record.state, "replayed": replayed, "retry_of": job_id, "tasks": chosen}

    @route("GET", "templates/{sid}")
    def templates(self, request: Request, session: Session) -> dict[str, Any]:
        """``{"templates": [{template_id, name, owner, shared, mine, body, created, updated}]}``."""
        return {"templates": self._jobs().template_list(request.caller)}

    @route("GET", "templates/{sid}/{template_id}")
    def template(self, request: Request, session: Session, template_id: str) -> dict[str, Any]:
        return self._jobs().template_get(request.caller, template_id)

    @route("POST", "templates/{sid}")
    def template_save(self, request: Request, session: Session) -> dict[str, Any]:
        """Save a named submit body, private or ``shared`` with everyone who may use this edge.
        The body is checked as a submit is (400 ``invalid_job_spec``); saving a name again replaces it."""
        data = request.json(default={})
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request",
                            "send {\"name\", \"shared\", \"body\": {\"job_spec\": …, \"executor\": …}}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100 or "\n" in name:
            raise HTTPError(400, "bad_request", "name: a single line of 1 to 100 characters")
        shared = data.get("shared", False)
        if not isinstance(shared, bool):
            raise HTTPError(400, "bad_request", "shared: true or false")
        body = data.get("body")
        if not isinstance(body, dict):
            raise HTTPError(400, "bad_request", "body: a submit body {\"job_spec\": …, \"executor\": …}")
        body = {k: v for k, v in body.items() if k != "idempotency_key"}
        self._check_body(body)
        return self._jobs().template_save(request.caller, name=name.strip(), shared=shared, body=body)

    @route("POST", "templates/{sid}/{template_id}/submit")
    def template_submit(self, request: Request, session: Session, template_id: str) -> dict[str, Any]:
        """Submit a template; the request body's ``job_spec`` fields (and ``executor``) override
        the template's. Idempotency as for ``submit``."""
        jobs = self._jobs()
        jobs.require_psij()
        template = jobs.template_get(request.caller, template_id)
        extra = request.json(default={}) or {}
        if not isinstance(extra, dict):
            raise HTTPError(400, "bad_request", "the body, if any, must be an object")
        body = dict(template["body"])
        body["job_spec"] = {**body.get("job_spec", {}), **(extra.get("job_spec") or {})}
        for key in ("executor", "idempotency_key"):
            if key in extra:
                body[key] = extra[key]
        submit = self._check_body(body, header=_header(request, "idempotency-key"))
        record, replayed = jobs.submit(request.caller, submit)
        return {"job_id": record.job_id, "native_id": record.native_id, "executor": record.executor,
                "state": record.state, "replayed": replayed, "template_id": template_id}

    @route("POST", "templates/{sid}/{template_id}/delete")
    def template_delete(self, request: Request, session: Session, template_id: str) -> dict[str, Any]:
        return self._jobs().template_delete(request.caller, template_id)

    @route("GET", "report/{sid}/{job_id}")
    def report(self, request: Request, session: Session, job_id: str) -> dict[str, Any]:
        """What a finished job used against what it asked for, with plain ``verdicts``;
        409 ``job_not_finished`` before it ends. From sacct / ``qstat -x -f``, cached once final."""
        return self._jobs().report(request.caller, job_id)

    @route("GET", "reports/{sid}")
    def reports(self, request: Request, session: Session) -> dict[str, Any]:
        """Query: ``limit`` (the most recent finished jobs to consider, ≤ 200, default 50).
        ``{"reports": [...], "total"}``, most wasteful first."""
        limit = _int_arg(request, "limit", 50)
        if limit < 1 or limit > MAX_REPORTS:
            raise HTTPError(400, "bad_request", f"limit must be between 1 and {MAX_REPORTS}")
        made = self._jobs().reports(request.caller, limit=limit)
        return {"reports": made, "total": len(made)}

    @route("GET", "health")
    async def _health(self, request: Request) -> dict[str, Any]:
        """The built-in health answer, plus whether psij is usable here."""
        answer = await super()._health(request)
        manager = self.manager
        available = bool(manager and manager.backend.available)
        answer["status"] = "ok" if available else "degraded"
        answer["psij"] = {"available": available,
                          "version": manager.backend.version if manager else None,
                          "error": None if available else (manager.backend.error if manager else "not started")}
        return answer

    # -- helpers -------------------------------------------------------------------------

    def _check_body(self, body: dict[str, Any], *, header: str | None = None) -> SubmitRequest:
        assert self.settings is not None
        try:
            return parse_submit(body, default_executor=self.settings.default_executor, header_key=header)
        except SpecError as exc:
            raise HTTPError(400, "invalid_job_spec", str(exc)) from None

    def _parse(self, request: Request) -> SubmitRequest:
        assert self.settings is not None
        header = _header(request, "idempotency-key")
        try:
            return parse_submit(request.json(default={}), default_executor=self.settings.default_executor,
                                header_key=header)
        except SpecError as exc:
            raise HTTPError(400, "invalid_job_spec", str(exc)) from None


def _header(request: Request, name: str) -> str | None:
    for key, value in request.headers.items():
        if key.lower() == name:
            return value
    return None


def _int_arg(request: Request, name: str, default: int | None) -> Any:
    raw = request.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, "bad_request", f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise HTTPError(400, "bad_request", f"{name} must not be negative, got {value}")
    return value
