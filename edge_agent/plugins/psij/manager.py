"""Jobs: submit, follow, cancel, and re-attach after a restart.

The :class:`JobManager` owns the job store and the psij backend, and is the one place
where a job's state changes: :meth:`JobManager._advance` writes the new state to the
store and emits one ``job_status`` event per transition, in order. psij calls back from
its own threads (the caller's thread during ``submit``, the local executor's reaper, a
batch executor's queue-poll thread); transitions are serialised by a lock, and states
psij skips are filled in the way psij itself does (QUEUED → COMPLETED implies ACTIVE),
so a portal sees QUEUED, ACTIVE and the final state for every job.

Every method here blocks (SQLite, sbatch, file reads): call them from worker threads.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import psutil

from ...plugin import Caller, HTTPError
from ..queue_info.commands import CommandRunner, SchedulerError, first_line
from . import arrays
from . import report as reports
from .backend import ExecutorUnavailable, JobBuildError, PsijBackend, describe_commands
from .output import ensure_private_dir, read_chunk, read_tail, remove_tree
from .settings import PsijSettings
from .spec import SpecError, SubmitRequest
from .store import FINAL_STATES, STATE_RANK, DuplicateIdempotencyKey, JobRecord, JobStore, owner_key

log = logging.getLogger("edge_agent.plugins.psij")

EC_ENV = "RADICAL_EDGE_PSIJ_EC_FILE"
# Sourced by psij's launcher scripts after the job's command: it records the exit code
# where the agent finds it again after a restart (psij's local executor reports 0 for
# every attached process, gotcha 5). ``set -e`` is on in the launcher: nothing may fail.
POST_LAUNCH_SCRIPT = f"""# Written by the Radical Edge psij plugin; sourced by psij's launcher after the job ran.
if [ -n "${{{EC_ENV}:-}}" ]; then
    echo "${{_PSI_J_FAILED_EC:-${{_PSI_J_EC:-}}}}" > "${EC_ENV}" 2>/dev/null || true
fi
"""
# Scheduler messages that mean "try again later", not "your job is wrong".
TRANSIENT_MARKERS = (
    "unable to contact", "socket timed out", "temporarily", "try again", "connection refused",
    "communications connection failure", "slurm_persist_conn", "zero bytes were transmitted",
)

Emit = Callable[[str, dict, Caller], None]
# job_spec.after's conditions in the words of Slurm and PBS, and the option that carries them.
AFTER_KEYWORDS = {"succeeded": "afterok", "failed": "afternotok", "ended": "afterany"}
DEPENDENCY_OPTIONS = {"slurm": ("slurm.dependency", ""), "pbs": ("pbs.W", "depend="),
                      "pbs_classic": ("pbs.W", "depend=")}


class JobManager:
    """All jobs of one agent. Open with :meth:`open`, release with :meth:`close`."""

    def __init__(self, root: Path, settings: PsijSettings, emit: Emit) -> None:
        self.root = root
        self.settings = settings
        self._emit = emit
        self.backend = PsijBackend(
            root / "work", poll_interval=settings.poll_interval, initial_poll_delay=settings.initial_poll_delay,
            keep_files=settings.keep_files, on_status=self._on_psij_status,
            poll_error_threshold=settings.poll_error_threshold,
        )
        self.store: JobStore | None = None
        self._claim_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._inflight: dict[tuple[str, str], threading.Event] = {}
        self._live: dict[str, Any] = {}  # job_id -> psij Job being followed
        self._by_psij_id: dict[str, str] = {}  # psij Job.id -> job_id
        self._attached: set[str] = set()  # job_ids followed through attach() after a restart
        self._closed = False
        self._runner = CommandRunner(timeout=30.0)
        self._array_wakeup = threading.Event()
        self._array_thread: threading.Thread | None = None
        self._array_misses: dict[str, int] = {}  # job_id -> polls in a row the scheduler knew nothing

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Create the private directories, open the store, load psij and re-attach to the
        jobs that were still running when the agent last stopped."""
        ensure_private_dir(self.root)
        ensure_private_dir(self.root / "work")
        ensure_private_dir(self.root / "output")
        self.store = JobStore(self.root / "jobs.sqlite3")
        self._post_launch = self.root / "work" / "edge_post_launch.sh"
        self._post_launch.write_text(POST_LAUNCH_SCRIPT)
        if self.backend.load():
            self._reattach_all()
            self._sweep_work_files()
            self._array_thread = threading.Thread(target=self._follow_arrays, name="psij-arrays", daemon=True)
            self._array_thread.start()

    def close(self) -> None:
        """Stop following jobs; the jobs keep running and are re-attached on the next open."""
        self._closed = True
        self._array_wakeup.set()
        self.backend.shutdown()
        if self._array_thread is not None:
            self._array_thread.join(timeout=35)
        with self._state_lock:
            self._live.clear()
            self._by_psij_id.clear()
            if self.store is not None:
                self.store.close()

    @property
    def jobs(self) -> JobStore:
        if self.store is None:
            raise HTTPError(503, "psij_starting", "the psij plugin is still starting")
        return self.store

    # -- executors -----------------------------------------------------------------------

    def executors(self) -> list[dict[str, Any]]:
        """Every executor psij knows, whether it loads here, and whether this edge offers it."""
        result = []
        for name in self.backend.executor_names():
            error = self.backend.load_error(name)
            offered = self.settings.executors is None or name in self.settings.executors
            commands = describe_commands(name)
            entry = {"name": name, "loads": error is None, "enabled": offered and error is None,
                     "ready": offered and error is None and commands.get("submit_command_found", True),
                     **commands}
            if error:
                entry["error"] = error
            elif not offered:
                entry["error"] = "not offered on this edge (psij.executors)"
            result.append(entry)
        return result

    def require_psij(self) -> None:
        if not self.backend.available:
            raise HTTPError(503, "psij_unavailable", self.backend.error or "psij is not available")

    def check_executor(self, name: str) -> None:
        """400 unless ``name`` is an executor this edge offers and can load."""
        self.require_psij()
        names = self.backend.executor_names()
        offered = [n for n in names if self.settings.executors is None or n in self.settings.executors]
        if name not in names:
            raise HTTPError(400, "unknown_executor",
                            f"unknown executor '{name}'; this edge offers: {', '.join(offered)}")
        if name not in offered:
            raise HTTPError(400, "executor_not_offered",
                            f"executor '{name}' is not offered on this edge; it offers: {', '.join(offered)}")
        error = self.backend.load_error(name)
        if error:
            raise HTTPError(400, "executor_unavailable", f"executor '{name}' is not available on this edge: {error}")

    # -- submit --------------------------------------------------------------------------

    def submit(self, caller: Caller, request: SubmitRequest) -> tuple[JobRecord, bool]:
        """Submit a job for ``caller``. Returns the record and whether it is a replay of an
        earlier submit with the same idempotency key (then nothing new was submitted).

        A failed submit leaves no record, no directory and no submit script behind.
        """
        if request.idempotency_key:
            # A retry of a submit that went through is answered from the record alone, even
            # if the executor or the executable has gone since.
            done = self.jobs.find_by_key(owner_key(caller.uid), request.idempotency_key)
            if done is not None and done.state != "NEW":
                _check_fingerprint(done, request)
                return done, True
        self.check_executor(request.executor)
        commands = describe_commands(request.executor)
        if not commands.get("submit_command_found", True):
            raise HTTPError(400, "executor_unavailable",
                            f"executor '{request.executor}' needs '{commands['submit_command']}', "
                            "which is not installed on this edge's host")
        try:
            ex = self.backend.executor(request.executor)
        except ExecutorUnavailable as exc:
            raise HTTPError(400, "executor_unavailable", str(exc)) from None
        job = self.backend.new_job()
        record = self._build(caller, request, job)
        replay = self._claim(record, request)
        if replay is not None:
            return replay, True
        try:
            self._submit(ex, job, record)
        finally:
            if record.idempotency_key:
                with self._claim_lock:
                    event = self._inflight.pop((record.owner_key, record.idempotency_key), None)
                if event is not None:
                    event.set()
        return self.jobs.get(record.job_id) or record, False

    def _build(self, caller: Caller, request: SubmitRequest, job: Any) -> JobRecord:
        """Choose the job's directory and output paths and give ``job`` its psij spec."""
        spec = request.spec
        okey = owner_key(caller.uid)
        job_id = job.id
        job_dir = self.root / "output" / okey / job_id
        directory = spec.get("directory") or str(job_dir)
        # An array's tasks each write their own files (%a: the task index).
        outputs = ("tasks/%a.stdout", "tasks/%a.stderr") if spec.get("array") else ("stdout", "stderr")
        stdout = _resolve(spec.get("stdout_path"), directory, job_dir / outputs[0])
        stderr = _resolve(spec.get("stderr_path"), directory, job_dir / outputs[1])
        extra_env: dict[str, str] = {}
        post_launch = None
        if request.executor == "local":
            try:
                _check_local(spec, directory, stdout, stderr)
            except SpecError as exc:
                raise HTTPError(400, "invalid_job_spec", str(exc)) from None
            extra_env[EC_ENV] = str(job_dir / "exit_code")
            post_launch = str(self._post_launch)
        psij_spec = spec
        if spec.get("after"):
            dependency = self._dependency(caller, request.executor, spec["after"])
            psij_spec = {**spec, "custom_attributes": {**spec.get("custom_attributes", {}), **dependency}}
        if spec.get("array"):
            try:
                option = arrays.scheduler_option(request.executor, spec["array"])
            except SpecError as exc:
                raise HTTPError(400, "invalid_job_spec", str(exc)) from None
            psij_spec = {**psij_spec, "custom_attributes": {**psij_spec.get("custom_attributes", {}), **option}}
        try:
            job.spec = self.backend.make_spec(psij_spec, request.executor, directory=directory, stdout_path=stdout,
                                              stderr_path=stderr, extra_env=extra_env, post_launch=post_launch)
        except JobBuildError as exc:
            raise HTTPError(400, "invalid_job_spec", str(exc)) from None
        return JobRecord(
            job_id=job_id, owner_key=okey, owner_uid=caller.uid, owner_user=caller.user,
            executor=request.executor, state="NEW", spec=spec, job_dir=str(job_dir),
            fingerprint=request.fingerprint, idempotency_key=request.idempotency_key,
            stdout_path=stdout, stderr_path=stderr,
        )

    def _dependency(self, caller: Caller, executor: str, after: dict[str, list[str]]) -> dict[str, str]:
        """The scheduler option that makes a job wait for the caller's jobs in ``after``
        (``slurm.dependency=afterok:12:13,afternotok:14``; ``pbs.W=depend=…``)."""
        if executor not in DEPENDENCY_OPTIONS:
            raise HTTPError(400, "invalid_job_spec",
                            f"job_spec.after: the {executor} executor has no dependencies here; "
                            f"use one of {', '.join(DEPENDENCY_OPTIONS)}")
        parts = []
        for condition, job_ids in after.items():
            natives = []
            for job_id in job_ids:
                record = self.jobs.get(job_id)
                where = f"job_spec.after.{condition}"
                if record is None or not _visible(caller, record):
                    raise HTTPError(400, "invalid_job_spec", f"{where}: no job '{job_id}' of yours on this edge")
                if record.executor != executor:
                    raise HTTPError(400, "invalid_job_spec",
                                    f"{where}: job {job_id} runs on {record.executor}, not {executor}: "
                                    "only jobs of one scheduler can wait for each other")
                if not record.native_id:
                    raise HTTPError(400, "invalid_job_spec", f"{where}: job {job_id} has not reached the scheduler "
                                                             f"({record.state})")
                natives.append(record.native_id)
            parts.append(":".join([AFTER_KEYWORDS[condition], *natives]))
        option, prefix = DEPENDENCY_OPTIONS[executor]
        return {option: prefix + ",".join(parts)}

    def _claim(self, record: JobRecord, request: SubmitRequest) -> JobRecord | None:
        """Insert ``record`` (state NEW), reserving its idempotency key; or return the job
        that already holds the key. A retry that arrives while the first submit is still
        running waits for it."""
        key = record.idempotency_key
        deadline = time.monotonic() + self.settings.idempotency_wait
        while True:
            with self._claim_lock:
                existing = self.jobs.find_by_key(record.owner_key, key) if key else None
                if existing is None:
                    try:
                        self.jobs.insert(record)
                    except DuplicateIdempotencyKey:
                        continue
                    if key:
                        self._inflight[(record.owner_key, key)] = threading.Event()
                    return None
                event = self._inflight.get((record.owner_key, key)) if key else None
            _check_fingerprint(existing, request)
            if existing.state != "NEW":
                return existing
            left = deadline - time.monotonic()
            if event is None or left <= 0 or not event.wait(left):
                raise HTTPError(409, "submission_in_progress",
                                f"a submit with idempotency key {key!r} is still in progress; retry later")
            again = self.jobs.get(existing.job_id)
            if again is not None:
                return again
            # The first attempt failed and left nothing behind: this one submits for real.

    def _submit(self, ex: Any, job: Any, record: JobRecord) -> None:
        job_dir = Path(record.job_dir)
        try:
            ensure_private_dir(job_dir.parent)
            ensure_private_dir(job_dir)
            if record.spec.get("array"):
                ensure_private_dir(job_dir / "tasks")  # before any task writes there
            with self._state_lock:
                self._live[record.job_id] = job
                self._by_psij_id[job.id] = record.job_id
            ex.submit(job)  # blocking: sbatch runs here; QUEUED (and ACTIVE) may fire inside
        except BaseException as exc:
            self._abandon(record, job, job_dir)
            raise _submit_error(exc, record.executor) from None
        with self._state_lock:
            current = self.jobs.get(record.job_id) or record
            current.native_id = job.native_id
            if record.executor == "local":
                current.native_started = _process_start(job.native_id)
            self.jobs.update(current)
        if record.spec.get("array"):
            # psij follows only the base id: the array poller follows the tasks.
            self.jobs.insert_tasks(record.job_id, record.spec["array"]["indices"])
            self._advance(record.job_id, "QUEUED", native_id=job.native_id)
            self._array_wakeup.set()
        log.info("job %s submitted to %s as %s for %s", record.job_id, record.executor, job.native_id,
                 record.owner_user or record.owner_key)

    def _abandon(self, record: JobRecord, job: Any, job_dir: Path) -> None:
        """Undo a failed submit: no record, no directory, no submit script."""
        with self._state_lock:
            self._live.pop(record.job_id, None)
            self._by_psij_id.pop(job.id, None)
        try:
            self.jobs.delete(record.job_id)
        except Exception:
            log.exception("could not remove the record of failed job %s", record.job_id)
        remove_tree(job_dir)
        if self.backend.is_batch(record.executor) and not self.settings.keep_files:
            _unlink(self.backend.executor_work_dir(record.executor) / f"{job.id}.job")

    # -- reads ---------------------------------------------------------------------------

    def get(self, caller: Caller, job_id: str) -> JobRecord:
        """The caller's job ``job_id``; 404 if it does not exist or is someone else's."""
        record = self.jobs.get(job_id)
        if record is None or not _visible(caller, record):
            raise HTTPError(404, "unknown_job", f"no job '{job_id}' on this edge")
        return record

    def list(self, caller: Caller, *, states: list[str] | None = None, executor: str | None = None,
             limit: int = 100, offset: int = 0) -> tuple[list[JobRecord], int]:
        """The caller's jobs (everyone's for the edge owner and admins), newest first."""
        owner = None if caller.sees_everything else owner_key(caller.uid)
        if owner == "-" and not caller.sees_everything:
            return [], 0  # anonymous callers own nothing
        return self.jobs.select(owner=owner, states=states, executor=executor, limit=limit, offset=offset)

    def status(self, caller: Caller, job_id: str, *, stdout_offset: int = 0, stderr_offset: int = 0,
               max_bytes: int | None = None, output: bool = True) -> dict[str, Any]:
        """The job's status, plus its stdout/stderr from the given byte offsets."""
        record = self.get(caller, job_id)
        answer = describe(record)
        answer["history"] = record.history
        if record.state == "FAILED":
            answer["batch_output"] = _read_batch_output(Path(record.job_dir) / BATCH_OUTPUT)
        if output:
            limit = min(max_bytes if max_bytes is not None else self.settings.max_output_bytes,
                        self.settings.max_output_bytes)
            for stream, offset in (("stdout", stdout_offset), ("stderr", stderr_offset)):
                chunk = read_chunk(getattr(record, f"{stream}_path"), offset, limit, final=record.final)
                answer[stream] = chunk.text
                answer[f"{stream}_offset"] = chunk.next_offset
                answer[f"{stream}_size"] = chunk.size
                answer[f"{stream}_truncated"] = chunk.more
        return answer

    # -- templates -----------------------------------------------------------------------

    def template_save(self, caller: Caller, *, name: str, shared: bool, body: dict[str, Any]) -> dict[str, Any]:
        """Save (or replace) the caller's template ``name``: a submit body, checked as a submit
        would check it, so that a template always submits."""
        if caller.uid is None:
            raise HTTPError(403, "forbidden", "templates belong to a bridge user")
        answer = self.jobs.save_template(template_id=uuid.uuid4().hex, owner=owner_key(caller.uid),
                                         owner_user=caller.user, name=name, shared=shared, body=body)
        answer["mine"] = True
        return answer

    def template_list(self, caller: Caller) -> builtins.list[dict[str, Any]]:
        """The caller's templates and those others shared (on this edge), by name."""
        mine = owner_key(caller.uid)
        return [{**t, "mine": t.pop("owner_key") == mine} for t in self.jobs.templates(owner=mine)]

    def template_get(self, caller: Caller, template_id: str) -> dict[str, Any]:
        """One template the caller may use (its own, or a shared one); 404 otherwise."""
        found = self.jobs.get_template(template_id)
        mine = owner_key(caller.uid)
        if found is None or not (found["shared"] or found["owner_key"] == mine):
            raise HTTPError(404, "unknown_template", f"no template '{template_id}' on this edge")
        return {**found, "mine": found.pop("owner_key") == mine}

    def template_delete(self, caller: Caller, template_id: str) -> dict[str, Any]:
        """Delete one of the caller's own templates (others' shared ones: 403)."""
        found = self.template_get(caller, template_id)
        if not found["mine"] and not caller.sees_everything:
            raise HTTPError(403, "forbidden", f"template '{found['name']}' is {found['owner']}'s")
        self.jobs.delete_template(template_id)
        return {"template_id": template_id, "deleted": True}

    # -- reports -------------------------------------------------------------------------

    def report(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """The efficiency report of the caller's finished job (409 while it has not ended)."""
        record = self.get(caller, job_id)
        if not record.final:
            raise HTTPError(409, "job_not_finished", f"job {job_id} is {record.state}: its report is made once it ends")
        return self._reports([record])[record.job_id]

    def reports(self, caller: Caller, *, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Reports of the caller's ``limit`` most recent finished jobs, most wasteful first
        (jobs without a waste figure last, newest first among equals)."""
        records, _ = self.list(caller, states=sorted(FINAL_STATES), limit=limit)
        made = self._reports(records)
        answer = [made[r.job_id] for r in records]
        answer.sort(key=lambda r: (r["waste"] is None, -(r["waste"] or 0.0), -(r["created"] or 0.0)))
        return answer

    def _reports(self, records: builtins.list[JobRecord]) -> dict[str, dict[str, Any]]:
        """Reports of finished ``records``: cached ones from the store, the others from one
        accounting call per executor; those whose accounting is final are cached."""
        out = self.jobs.get_reports([r.job_id for r in records])
        missing: dict[str, list[JobRecord]] = {}
        for record in records:
            if record.job_id not in out:
                missing.setdefault(record.executor, []).append(record)
        for executor, group in missing.items():
            facts, source, note = self._accounting(executor, [r.native_id for r in group if r.native_id])
            for record in group:
                if record.spec.get("array") and source == "sacct" and record.native_id:
                    # sacct lists the tasks, not the array
                    mine = reports.array_facts(facts, record.native_id, record.spec["array"].get("indices"))
                else:
                    mine = facts.get(record.native_id or "")
                if mine is None:
                    why = note or (f"{source} has no record of job {record.native_id}" if source != "agent" else None)
                    report = reports.build_report(record, None, source="agent", note=why)
                    out[record.job_id] = report
                    if executor == "local" or record.native_id is None:
                        self.jobs.put_report(record.job_id, report)  # nothing better will come
                    continue
                report = reports.build_report(record, mine, source=source)
                out[record.job_id] = report
                if mine.get("final"):
                    self.jobs.put_report(record.job_id, report)
        return out

    def _accounting(self, executor: str,
                    native_ids: builtins.list[str]) -> tuple[dict[str, dict[str, Any]], str, str | None]:
        """``(facts by native id, source, note)`` from the scheduler's accounting; no facts and
        a note saying why when there is none (local jobs, accounting disabled)."""
        if not native_ids or not self.backend.is_batch(executor):
            return {}, "agent", None
        if executor == "slurm":
            argv, parse, source = reports.sacct_command(native_ids), reports.parse_sacct, "sacct"
        elif executor in ("pbs", "pbs_classic"):
            argv, parse, source = reports.pbs_command(native_ids), reports.parse_qstat_xf, "qstat"
        else:
            return {}, "agent", f"no accounting reader for {executor} jobs"
        try:
            # Unchecked: qstat exits non-zero when one of several ids is unknown, yet prints the rest.
            result = self._runner.run_unchecked(argv)
        except SchedulerError as exc:
            log.info("job reports: %s", exc.detail)
            return {}, source, f"{source} gave no accounting: {exc.detail}"
        facts = parse(result.stdout)
        if not facts and result.returncode != 0:
            error = first_line(result.stderr.strip() or result.stdout.strip()) or f"exit code {result.returncode}"
            return {}, source, f"{source} gave no accounting: {error}"
        return facts, source, None

    # -- arrays --------------------------------------------------------------------------

    def tasks(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """The tasks of the caller's array job, by index, with their output files."""
        record = self._array(caller, job_id)
        return {"job_id": job_id, "array": describe_array(record.spec["array"]),
                "tasks": [self._task_view(record, t) for t in self.jobs.tasks(job_id)]}

    def task(self, caller: Caller, job_id: str, index: int, *, stdout_offset: int = 0, stderr_offset: int = 0,
             max_bytes: int | None = None) -> dict[str, Any]:
        """One task of an array job, with its stdout/stderr from the given byte offsets."""
        record = self._array(caller, job_id)
        found = next((t for t in self.jobs.tasks(job_id) if t["index"] == index), None)
        if found is None:
            raise HTTPError(404, "unknown_task", f"job {job_id} has no task {index} "
                                                 f"(its tasks: {arrays.compress(record.spec['array']['indices'])})")
        answer = self._task_view(record, found)
        limit = min(max_bytes if max_bytes is not None else self.settings.max_output_bytes,
                    self.settings.max_output_bytes)
        final = found["state"] in arrays.TASK_FINAL
        for stream, offset in (("stdout", stdout_offset), ("stderr", stderr_offset)):
            chunk = read_chunk(answer[f"{stream}_path"], offset, limit, final=final)
            answer[stream] = chunk.text
            answer[f"{stream}_offset"] = chunk.next_offset
            answer[f"{stream}_size"] = chunk.size
            answer[f"{stream}_truncated"] = chunk.more
        return answer

    def retry(self, caller: Caller, job_id: str, *, indices: builtins.list[int] | None = None,
              idempotency_key: str | None = None) -> tuple[JobRecord, bool, builtins.list[int]]:
        """Submit again those tasks of the caller's array that failed or were canceled (or
        ``indices``, which must be such tasks): a new array job with the same spec and only
        those indices. The old tasks point at it (``retried_by``)."""
        record = self._array(caller, job_id)
        tasks = {t["index"]: t for t in self.jobs.tasks(job_id)}
        retryable = sorted(i for i, t in tasks.items()
                           if t["state"] in ("FAILED", "CANCELED") and not t["retried_by"])
        if indices is None:
            chosen = retryable
            if not chosen:
                raise HTTPError(409, "nothing_to_retry", f"no task of job {job_id} failed or was canceled"
                                                         + ("" if record.final else " yet")
                                                         + " that was not retried already")
        else:
            unknown = sorted(set(indices) - set(tasks))
            if unknown:
                raise HTTPError(400, "bad_request", f"job {job_id} has no task {unknown[0]}")
            bad = sorted(set(indices) - set(retryable))
            if bad:
                task = tasks[bad[0]]
                why = (f"was retried already as job {task['retried_by']}" if task["retried_by"]
                       else f"is {task['state']}: only failed or canceled tasks are retried")
                raise HTTPError(409, "task_not_retryable", f"task {bad[0]} of job {job_id} {why}")
            chosen = sorted(set(indices))
        spec = {**record.spec, "array": {**record.spec["array"], "indices": chosen}, "retry_of": job_id}
        spec.pop("after", None)  # what it waited for has happened
        canonical = json.dumps({"executor": record.executor, "job_spec": spec}, sort_keys=True, separators=(",", ":"))
        request = SubmitRequest(record.executor, spec, idempotency_key, hashlib.sha256(canonical.encode()).hexdigest())
        new, replayed = self.submit(caller, request)
        if not replayed:
            self.jobs.mark_retried(job_id, chosen, new.job_id)
        return new, replayed, chosen

    def _array(self, caller: Caller, job_id: str) -> JobRecord:
        record = self.get(caller, job_id)
        if not record.spec.get("array"):
            raise HTTPError(400, "not_an_array", f"job {job_id} is not an array job")
        return record

    def _task_view(self, record: JobRecord, task: dict[str, Any]) -> dict[str, Any]:
        index = task["index"]
        return {**task, "stdout_path": arrays.task_path(record.stdout_path or "", index),
                "stderr_path": arrays.task_path(record.stderr_path or "", index)}

    def _cancel_array(self, caller: Caller, record: JobRecord) -> dict[str, Any]:
        """Cancel every task of an array that has not ended (the array poller sees them end)."""
        assert record.native_id
        self._runner.run(["scancel" if record.executor == "slurm" else "qdel", record.native_id])
        self._array_wakeup.set()
        log.info("array job %s (%s %s) cancel requested by %s", record.job_id, record.executor, record.native_id,
                 caller.user or caller.uid)
        return {**_brief(record), "status": "canceled", "canceled": False, "cancel_requested": True}

    def _follow_arrays(self) -> None:
        """The array poller: one scheduler query per interval for all unfinished arrays."""
        while not self._closed:
            self._array_wakeup.wait(self.settings.poll_interval)
            self._array_wakeup.clear()
            if self._closed:
                return
            try:
                self.poll_arrays()
            except Exception:
                log.exception("array poll failed")

    def poll_arrays(self) -> int:
        """Ask the scheduler about the tasks of every unfinished array once; returns how many
        arrays were looked at. squeue first; sacct for arrays squeue has forgotten."""
        records = [r for r in self.jobs.unfinished() if r.spec.get("array") and r.native_id]
        looked = 0
        for executor in ("slurm", "pbs"):
            group = [r for r in records if r.executor == executor]
            if not group:
                continue
            bases = {r.native_id for r in group if r.native_id}
            seen = self._slurm_tasks(bases) if executor == "slurm" else self._pbs_tasks(bases)
            if seen is None:
                continue  # the scheduler did not answer: try again at the next poll
            for record in group:
                self._apply_tasks(record, seen.get(record.native_id or "", {}))
            looked += len(group)
        return looked

    def _slurm_tasks(self, bases: set[str]) -> dict[str, dict[int, dict[str, Any]]] | None:
        try:
            result = self._runner.run_unchecked(arrays.SQUEUE_ARRAY_COMMAND)
        except SchedulerError as exc:
            log.warning("array poll: %s", exc.detail)
            return None
        if result.returncode != 0:
            log.warning("array poll: squeue failed: %s", first_line(result.stderr.strip()) or result.returncode)
            return None
        seen = arrays.parse_squeue_tasks(result.stdout, bases)
        forgotten = sorted(bases - set(seen))
        if forgotten:
            try:
                done = self._runner.run_unchecked(arrays.sacct_array_command(forgotten))
                seen.update(arrays.parse_sacct_tasks(done.stdout, set(forgotten)))
            except SchedulerError as exc:
                log.info("array poll: no accounting: %s", exc.detail)
        return seen

    def _pbs_tasks(self, bases: set[str]) -> dict[str, dict[int, dict[str, Any]]] | None:
        try:
            # Unchecked: qstat exits non-zero when one of several ids is unknown, yet prints the rest.
            result = self._runner.run_unchecked(arrays.pbs_array_command(sorted(bases)))
        except SchedulerError as exc:
            log.warning("array poll: %s", exc.detail)
            return None
        seen = arrays.parse_qstat_tasks(result.stdout, bases)
        if not seen and result.returncode != 0 and "unknown job" not in result.stderr.lower():
            log.warning("array poll: qstat failed: %s", first_line(result.stderr.strip()) or result.returncode)
            return None
        return seen

    def _apply_tasks(self, record: JobRecord, seen: dict[int, dict[str, Any]]) -> None:
        """Move the tasks forward to what the scheduler said, then the array's own state."""
        tasks = self.jobs.tasks(record.job_id)
        if not seen:
            misses = self._array_misses.get(record.job_id, 0) + 1
            self._array_misses[record.job_id] = misses
            if misses < 3:
                return
            # Neither squeue nor sacct knows it any more: what has not ended never will be seen to.
            seen = {t["index"]: {"state": "FAILED", "exit_code": None, "native_id": t["native_id"],
                                 "message": "the scheduler forgot this task before the agent saw it end"}
                    for t in tasks if t["state"] not in arrays.TASK_FINAL}
        self._array_misses.pop(record.job_id, None)
        changes: dict[int, dict[str, Any]] = {}
        for task in tasks:
            now = seen.get(task["index"])
            if now is None or task["state"] in arrays.TASK_FINAL:
                continue
            if STATE_RANK[now["state"]] < STATE_RANK[task["state"]]:
                continue  # requeued: it is still under way
            if (now["state"], now["exit_code"], now["native_id"]) != (task["state"], task["exit_code"],
                                                                       task["native_id"]):
                changes[task["index"]] = now
                task.update(now)
        if not changes:
            return
        self.jobs.update_tasks(record.job_id, changes)
        counts = arrays.counts(tasks)
        owner = Caller(user=record.owner_user, uid=record.owner_uid)
        self._emit("array_tasks", {"job_id": record.job_id, "native_id": record.native_id, "counts": counts,
                                   "changed": [{"index": i, **t} for i, t in sorted(changes.items())]}, owner)
        state = arrays.array_state(tasks)
        failed = [t for t in tasks if t["state"] == "FAILED"]
        exit_code = 0 if state == "COMPLETED" else (failed[0]["exit_code"] if failed else None)
        self._advance(record.job_id, state, exit_code=exit_code, message=arrays.summary(tasks))

    # -- cancel --------------------------------------------------------------------------

    def cancel(self, caller: Caller, job_id: str) -> dict[str, Any]:
        """Ask the scheduler to cancel the caller's job. The state becomes CANCELED when
        the executor sees it (at once for local jobs, at the next poll for batch jobs)."""
        record = self.get(caller, job_id)
        if record.final:
            if record.state == "CANCELED":
                return {**_brief(record), "status": "canceled", "canceled": True}
            raise HTTPError(409, "job_finished", f"job '{job_id}' already ended: {record.state}")
        if record.state == "NEW":
            raise HTTPError(409, "job_submitting", f"job '{job_id}' is still being submitted; retry in a moment")
        self.require_psij()
        if record.spec.get("array"):
            return self._cancel_array(caller, record)
        with self._state_lock:
            job = self._live.get(job_id)
        if job is None:
            reason = record.message or "executor unavailable"
            raise HTTPError(503, "job_not_followed", f"job '{job_id}' is not followed by this agent ({reason})")
        try:
            job.cancel()
        except KeyError:
            pass  # local: the process ended while we cancelled it
        except Exception as exc:
            message = str(exc).strip() or type(exc).__name__
            raise HTTPError(409, "cancel_failed", f"could not cancel job '{job_id}': {message}") from None
        record = self.jobs.get(job_id) or record
        log.info("job %s (%s %s) cancel requested by %s", job_id, record.executor, record.native_id,
                 caller.user or caller.uid)
        return {**_brief(record), "status": "canceled", "canceled": record.state == "CANCELED",
                "cancel_requested": True}

    # -- psij callbacks and state transitions ---------------------------------------------

    def _on_psij_status(self, job: Any, status: Any) -> None:
        """psij's executor callback; runs on psij's threads. Never raises (psij would only log it)."""
        if self._closed:
            return
        try:
            with self._state_lock:
                job_id = self._by_psij_id.get(job.id)
            if job_id is None:
                return
            state = self.backend.state_name(status.state)
            exit_code, message = status.exit_code, status.message or None
            record = self.jobs.get(job_id)
            if record is None:
                return
            if record.spec.get("array"):
                return  # psij sees only the base id (it calls an array COMPLETED at once): ours to follow
            if record.executor == "local" and state in ("COMPLETED", "FAILED"):
                state, exit_code, message = self._local_outcome(
                    record, state, exit_code, message, attached=job_id in self._attached)
            self._advance(job_id, state, exit_code=exit_code, message=message, when=status.time,
                          native_id=job.native_id)
        except Exception:
            log.exception("psij status callback failed for job %s", getattr(job, "id", "?"))

    def _local_outcome(self, record: JobRecord, state: str, exit_code: int | None, message: str | None, *,
                       attached: bool) -> tuple[str, int | None, str | None]:
        """The real exit code of a local job from the file our post-launch hook wrote.
        psij reports 0 for every re-attached process, whatever its exit code was."""
        recorded = _read_exit_code(Path(record.job_dir) / "exit_code")
        if recorded is not None:
            return ("COMPLETED" if recorded == 0 else "FAILED"), recorded, message
        if attached:
            return "FAILED", None, "the process ended without recording an exit code (killed?)"
        return state, exit_code, message

    def _advance(self, job_id: str, state: str, *, exit_code: int | None = None, message: str | None = None,
                 when: float | None = None, native_id: str | None = None) -> JobRecord | None:
        """Move a job forward to ``state``, filling in skipped states, and emit one
        ``job_status`` event per transition. Older or repeated states are ignored."""
        events: list[dict[str, Any]] = []
        with self._state_lock:
            if self._closed:
                return None
            record = self.jobs.get(job_id)
            if record is None or record.final or state not in STATE_RANK:
                return record
            if native_id and not record.native_id:
                record.native_id = native_id
            if STATE_RANK[state] <= STATE_RANK[record.state]:
                return record
            now = time.time()
            for step in _skipped_states(record, state):
                events.append(self._transition(record, step, now))
            if state in FINAL_STATES:
                record.exit_code = exit_code
                record.message = message
            elif message:
                record.message = message
            events.append(self._transition(record, state, when or now))
            if state == "FAILED" and record.native_id and self.backend.is_batch(record.executor):
                # Before the event goes out: a page that reads the failed job finds it.
                work = self.backend.executor_work_dir(record.executor)
                _keep_batch_output(work / f"{record.native_id}.out", Path(record.job_dir) / BATCH_OUTPUT)
            self.jobs.update(record)
            owner = Caller(user=record.owner_user, uid=record.owner_uid)
            # Emitted under the lock: the host's queue is FIFO, so events keep their order.
            for event in events:
                self._emit("job_status", event, owner)
        if record.final:
            self._finished(record)
        return record

    def _transition(self, record: JobRecord, state: str, when: float) -> dict[str, Any]:
        previous = record.state
        record.state = state
        record.time = when
        entry: dict[str, Any] = {"state": state, "time": when}
        if state in FINAL_STATES:
            entry["exit_code"] = record.exit_code
            if record.message:
                entry["message"] = record.message
        record.history.append(entry)
        event = {**_brief(record), "previous_state": previous, "message": record.message}
        if record.spec.get("name"):
            event["name"] = record.spec["name"]  # child edges' jobs are named edge-<child>
        duration = (record.spec.get("attributes") or {}).get("duration")
        if state == "ACTIVE" and isinstance(duration, (int, float)) and duration > 0:
            event["walltime"] = duration  # seconds from now; the bridge warns before it is reached
        if state in FINAL_STATES and self.settings.event_output_bytes:
            for stream in ("stdout", "stderr"):
                text, cut = read_tail(getattr(record, f"{stream}_path"), self.settings.event_output_bytes)
                event[stream] = text
                event[f"{stream}_truncated"] = cut
        return event

    def _finished(self, record: JobRecord) -> None:
        """Stop following a finished job and remove the files psij leaves behind (gotcha 6)."""
        with self._state_lock:
            job = self._live.pop(record.job_id, None)
            if job is not None:
                self._by_psij_id.pop(job.id, None)
            self._attached.discard(record.job_id)
        if self.backend.is_batch(record.executor):
            work = self.backend.executor_work_dir(record.executor)
            if not self.settings.keep_files:
                _unlink(work / f"{record.job_id}.job")
                natives = [record.native_id] if record.native_id else []
                if record.spec.get("array"):
                    natives += [t["native_id"] for t in self.jobs.tasks(record.job_id) if t["native_id"]]
                for native in natives:
                    for suffix in (".out", ".nodefile", ".ec"):
                        _unlink(work / f"{native}{suffix}")
        log.info("job %s (%s %s) %s exit_code=%s", record.job_id, record.executor, record.native_id,
                 record.state, record.exit_code)

    # -- restart -------------------------------------------------------------------------

    def _reattach_all(self) -> None:
        """Follow again every job that had not ended when the agent last stopped."""
        count = 0
        for record in self.jobs.unfinished():
            try:
                if self._reattach(record):
                    count += 1
            except Exception as exc:
                log.exception("could not re-attach job %s (%s %s)", record.job_id, record.executor, record.native_id)
                record.message = f"not followed after restart: {exc}"
                self.jobs.update(record)
        if count:
            log.info("re-attached %d job(s)", count)

    def _reattach(self, record: JobRecord) -> bool:
        if record.state == "NEW" or not record.native_id:
            # The agent stopped between writing the record and hearing back from the scheduler.
            self._advance(record.job_id, "FAILED", message=(
                "the agent stopped while this job was being submitted; it may not have reached the scheduler"))
            return False
        if record.spec.get("array"):
            return True  # the array poller reads unfinished arrays from the store
        try:
            ex = self.backend.executor(record.executor)
        except ExecutorUnavailable as exc:
            record.message = f"not followed after restart: {exc}"
            self.jobs.update(record)
            log.warning("job %s not re-attached: %s", record.job_id, exc)
            return False
        if record.executor == "local" and not _same_process(record.native_id, record.native_started):
            # The process ended while the agent was down: its exit-code file tells how.
            state, exit_code, message = self._local_outcome(record, "FAILED", None, None, attached=True)
            self._advance(record.job_id, state, exit_code=exit_code, message=message)
            return False
        job = self.backend.new_job()
        with self._state_lock:
            self._live[record.job_id] = job
            self._by_psij_id[job.id] = record.job_id
            self._attached.add(record.job_id)
        # Attached jobs have no spec (gotcha 5); batch executors still read <native_id>.ec.
        ex.attach(job, record.native_id)
        return True

    def _sweep_work_files(self) -> None:
        """Remove batch work files of jobs that are over: Slurm job ids restart after a
        state wipe, and psij appends to ``<native_id>.out`` (gotcha 6)."""
        if self.settings.keep_files:
            return
        for name in ("slurm", "pbs", "pbs_classic", "lsf", "cobalt"):
            work = self.backend.executor_work_dir(name)
            if not work.is_dir():
                continue
            keep_native = self.jobs.native_ids_in_use(name)
            keep_jobs = {r.job_id for r in self.jobs.unfinished() if r.executor == name}
            for path in work.iterdir():
                stem, suffix = path.stem, path.suffix
                stale_script = suffix == ".job" and stem not in keep_jobs
                stale_aux = suffix in (".ec", ".out", ".nodefile") and stem not in keep_native
                if stale_script or stale_aux:
                    _unlink(path)

    # -- dry run -------------------------------------------------------------------------

    def preview(self, caller: Caller, request: SubmitRequest) -> dict[str, Any]:
        """What ``submit`` would hand to the scheduler, without submitting: the batch
        script for batch executors, the command line for the local one."""
        self.check_executor(request.executor)
        job = self.backend.new_job()
        record = self._build(caller, request, job)
        answer: dict[str, Any] = {"executor": request.executor, "directory": str(job.spec.directory),
                                  "stdout_path": record.stdout_path, "stderr_path": record.stderr_path}
        try:
            if self.backend.is_batch(request.executor):
                answer["script"] = self.backend.submit_script(request.executor, job)
            else:
                answer["command"] = self.backend.launch_command(request.executor, job)
        except ExecutorUnavailable as exc:
            raise HTTPError(501, "no_preview", str(exc)) from None
        except Exception as exc:
            raise HTTPError(400, "invalid_job_spec", f"{type(exc).__name__}: {exc}") from None
        return answer


# -- helpers -----------------------------------------------------------------------------


def describe(record: JobRecord) -> dict[str, Any]:
    """A job as the routes show it (without output)."""
    spec = record.spec
    attributes = spec.get("attributes", {})
    resources = spec.get("resources", {})
    return {
        **_brief(record),
        "message": record.message,
        "created": record.created,
        "updated": record.updated,
        "owner": record.owner_user,
        "name": spec.get("name"),
        "executable": spec.get("executable"),
        "arguments": spec.get("arguments", []),
        "directory": spec.get("directory") or record.job_dir,
        "queue_name": attributes.get("queue_name"),
        "account": attributes.get("account"),
        "duration": attributes.get("duration"),
        "node_count": resources.get("node_count"),
        "process_count": resources.get("process_count"),
        "custom_attributes": spec.get("custom_attributes", {}),
        "after": spec.get("after", {}),
        "array": describe_array(spec["array"]) if spec.get("array") else None,
        "retry_of": spec.get("retry_of"),
        "stdout_path": record.stdout_path,
        "stderr_path": record.stderr_path,
        "idempotency_key": record.idempotency_key,
    }


def describe_array(array: dict[str, Any]) -> dict[str, Any]:
    return {"indices": arrays.compress(array["indices"]), "count": len(array["indices"]),
            "throttle": array.get("throttle")}


def _check_fingerprint(existing: JobRecord, request: SubmitRequest) -> None:
    if existing.fingerprint != request.fingerprint:
        raise HTTPError(422, "idempotency_key_reused", f"idempotency key {request.idempotency_key!r} was already "
                                                       f"used for a different job ({existing.job_id})")


def _brief(record: JobRecord) -> dict[str, Any]:
    return {"job_id": record.job_id, "native_id": record.native_id, "executor": record.executor,
            "state": record.state, "exit_code": record.exit_code, "time": record.time}


def _visible(caller: Caller, record: JobRecord) -> bool:
    return caller.sees_everything or (caller.uid is not None and owner_key(caller.uid) == record.owner_key)


def _skipped_states(record: JobRecord, state: str) -> list[str]:
    """States between the record's and ``state`` that psij skipped but that certainly
    happened: psij's own rule (ACTIVE before COMPLETED, QUEUED before ACTIVE), and for
    local jobs, which run as soon as they are submitted, ACTIVE before any end."""
    rank = STATE_RANK[record.state]
    steps = []
    if STATE_RANK[state] >= 2 and rank < 1 and (state in ("ACTIVE", "COMPLETED") or record.executor == "local"):
        steps.append("QUEUED")
    if state in FINAL_STATES and rank < 2 and (state == "COMPLETED" or record.executor == "local"):
        steps.append("ACTIVE")
    return steps


def _resolve(path: str | None, directory: str, default: Path) -> str:
    if not path:
        return str(default)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(directory, path))


def _check_local(spec: dict[str, Any], directory: str, stdout: str, stderr: str) -> None:
    """Refuse what the local executor would only report as FAILED/127 (gotcha 9)."""
    if spec.get("directory") and not os.path.isdir(directory):
        raise SpecError("job_spec.directory", f"{directory!r} does not exist on this host")
    for field, path in (("stdout_path", stdout), ("stderr_path", stderr)):
        if spec.get(field) and not os.path.isdir(os.path.dirname(path)):
            raise SpecError(f"job_spec.{field}", f"the directory of {path!r} does not exist on this host")
    executable = spec["executable"]
    if "/" in executable:
        path = executable if os.path.isabs(executable) else os.path.join(directory, executable)
        if not os.path.exists(path):
            raise SpecError("job_spec.executable", f"{executable!r} does not exist on this host")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise SpecError("job_spec.executable", f"{executable!r} is not an executable file")
        return
    env = spec.get("environment", {})
    search = env.get("PATH") or (os.environ.get("PATH", os.defpath) if spec.get("inherit_environment", True)
                                 else os.defpath)
    if shutil.which(executable, path=search) is None:
        raise SpecError("job_spec.executable", f"{executable!r} is not on PATH ({search})")


def _submit_error(exc: BaseException, executor: str) -> BaseException:
    """The HTTP answer for an exception raised by psij's submit()."""
    if isinstance(exc, HTTPError):
        return exc
    if not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt, SystemExit, CancelledError: not ours to translate
    name = type(exc).__name__
    if name == "InvalidJobException" or isinstance(exc, (ValueError, TypeError)):
        return HTTPError(400, "invalid_job_spec", str(exc))
    if isinstance(exc, FileNotFoundError):
        return HTTPError(503, "scheduler_unavailable",
                         f"the {executor} submit command is not installed on this host: {exc}")
    if name == "SubmitException":
        detail = _scheduler_message(exc)
        if getattr(exc, "transient", False) or any(marker in detail.lower() for marker in TRANSIENT_MARKERS):
            return HTTPError(503, "scheduler_unavailable", detail)
        return HTTPError(422, "submit_rejected", detail)
    log.error("submit to %s failed", executor, exc_info=exc)
    return HTTPError(500, "submit_failed", f"{name}: {exc}")


def _scheduler_message(exc: BaseException) -> str:
    """The scheduler's own words (e.g. sbatch's stderr), without psij's wrapping."""
    message = getattr(exc, "message", None) or str(exc)
    cause = getattr(exc, "exception", None)
    if cause is not None and str(cause) not in message:
        message = f"{message}: {cause}"
    return message.strip() or type(exc).__name__


def _process_start(native_id: str | None) -> float | None:
    try:
        return psutil.Process(int(native_id or "")).create_time()
    except (ValueError, psutil.Error):
        return None


def _same_process(native_id: str | None, started: float | None) -> bool:
    """Whether pid ``native_id`` is still the process we started (pids get reused). Without
    a start time (the process had already ended when it was read) it cannot be."""
    if started is None:
        return False
    try:
        process = psutil.Process(int(native_id or ""))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) < 1.0
    except (ValueError, psutil.Error):
        return False


def _read_exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# What the batch script itself printed (sbatch's `exec &>> <native_id>.out`: a failed `cd`,
# a missing launcher) is kept beside the job's output when it fails, at most this much.
BATCH_OUTPUT = "batch_output"
BATCH_OUTPUT_MAX = 64 * 1024


def _keep_batch_output(source: Path, target: Path) -> None:
    try:
        with open(source, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - BATCH_OUTPUT_MAX))
            data = f.read()
    except OSError:
        return
    if not data.strip():
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as exc:
        log.warning("could not keep the batch script's output of %s: %s", source.name, exc)


def _read_batch_output(path: Path) -> str | None:
    try:
        return path.read_bytes()[-BATCH_OUTPUT_MAX:].decode("utf-8", "replace") or None
    except OSError:
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
