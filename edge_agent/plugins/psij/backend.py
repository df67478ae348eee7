"""The only module that touches psij: lazy import, one executor per name, job building.

psij is optional. It is imported lazily, and always from a helper thread: importing
``psij.executors.local`` on the main thread installs a SIGCHLD handler that may fight
the agent's own (docs/plugins/psij.md, gotcha 7); from another thread psij only polls for
finished children every 0.1 s.

There is one executor instance per executor name for the whole plugin (not per
session): a batch executor runs one queue-poll thread that calls ``squeue`` (or
``qstat``…) once per interval for all of its jobs. Its work directory (submit scripts,
``<native_id>.ec`` exit-code files, launcher scripts) lives under the agent's state dir,
never in ``~/.psij`` (gotcha 6).
"""

from __future__ import annotations

import io
import logging
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from . import arrays

log = logging.getLogger("edge_agent.plugins.psij")

PSIJ_MISSING = "psij-python is not installed on this edge (pip install 'radical-edge-agent[psij]')"

# The command each batch executor submits with: an executor whose command is missing
# loads fine in psij but cannot run anything here.
SUBMIT_COMMANDS = {
    "slurm": "sbatch", "pbs": "qsub", "pbs_classic": "qsub", "lsf": "bsub", "cobalt": "qsub", "flux": "flux",
}
# Custom attribute that sets the job name in each scheduler: psij's templates test
# ``job.name``, which does not exist, so JobSpec.name never reaches them (gotcha 1).
JOB_NAME_ATTRIBUTES = {"slurm": "slurm.job-name", "pbs": "pbs.N", "pbs_classic": "pbs.N", "lsf": "lsf.J"}


class ExecutorUnavailable(Exception):
    """The executor does not exist or cannot be loaded on this host."""


class JobBuildError(ValueError):
    """psij refused the job spec (e.g. inconsistent resources, unknown launcher)."""


class PsijBackend:
    """psij, loaded lazily. ``available`` is False (and ``error`` says why) when it is missing."""

    def __init__(self, work_dir: Path, *, poll_interval: float, initial_poll_delay: float, keep_files: bool,
                 on_status: Callable[[Any, Any], None], poll_error_threshold: int = 2) -> None:
        self.work_dir = work_dir
        self.poll_interval = poll_interval
        self.initial_poll_delay = initial_poll_delay
        self.poll_error_threshold = poll_error_threshold
        self.keep_files = keep_files
        self._on_status = on_status
        self.psij: Any = None
        self.error: str | None = "psij not loaded yet"
        self._executors: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------

    def load(self) -> bool:
        """Import psij in a helper thread (never the main thread); True when it is usable."""
        result: dict[str, Any] = {}

        def _import() -> None:
            quiet = _DropMessage("imported from a non-main thread")
            local_log = logging.getLogger("psij.executors.local")
            local_log.addFilter(quiet)  # expected, and said on purpose: not worth a warning
            try:
                import psij
                import psij.executors.local  # imported here, off the main thread (SIGCHLD)

                result["psij"] = psij
            except ImportError as exc:
                result["error"] = f"{PSIJ_MISSING}: {exc}" if getattr(exc, "name", "") != "psij" else PSIJ_MISSING
            except Exception as exc:  # a broken install must not take the agent down
                result["error"] = f"psij failed to import: {type(exc).__name__}: {exc}"
            finally:
                local_log.removeFilter(quiet)

        thread = threading.Thread(target=_import, name="psij-import", daemon=True)
        thread.start()
        thread.join()
        self.psij = result.get("psij")
        self.error = None if self.psij is not None else result.get("error", PSIJ_MISSING)
        if self.error:
            log.warning("psij plugin: %s", self.error)
        return self.psij is not None

    @property
    def available(self) -> bool:
        return self.psij is not None

    @property
    def version(self) -> str | None:
        return getattr(self.psij, "__version__", None) if self.psij else None

    # -- executors -----------------------------------------------------------------------

    def executor_names(self) -> list[str]:
        """Every executor psij knows about (loadable here or not)."""
        return sorted(self.psij.JobExecutor.get_executor_names()) if self.psij else []

    def load_error(self, name: str) -> str | None:
        """Why ``name`` cannot be loaded here, or None if it can."""
        if not self.psij:
            return self.error
        if name in self._executors:
            return None
        if name not in self.psij.JobExecutor.get_executor_names():
            return f"psij has no executor '{name}'"
        try:
            # psij's registry keeps the import error of each executor plugin.
            from psij._plugins import _get_plugin_class

            _get_plugin_class(name, None, "executor", self.psij.JobExecutor._executors)
        except ValueError as exc:
            cause = exc.__cause__
            return f"{exc}: {cause}" if cause else str(exc)
        except (ImportError, AttributeError):  # psij moved its internals: try for real
            try:
                self.executor(name)
            except ExecutorUnavailable as exc:
                return str(exc)
        return None

    def executor(self, name: str) -> Any:
        """The plugin's one executor instance for ``name``, created on first use."""
        if not self.psij:
            raise ExecutorUnavailable(self.error or PSIJ_MISSING)
        with self._lock:
            ex = self._executors.get(name)
            if ex is not None:
                return ex
            try:
                ex = self.psij.JobExecutor.get_instance(name, config=self._config(name))
            except ValueError as exc:
                cause = f": {exc.__cause__}" if exc.__cause__ else ""
                raise ExecutorUnavailable(f"executor '{name}' cannot be loaded on this edge ({exc}{cause})") from None
            except Exception as exc:
                raise ExecutorUnavailable(f"executor '{name}' failed to start: {type(exc).__name__}: {exc}") from None
            ex.set_job_status_callback(self._on_status)
            if name == "slurm":
                _tolerate_unknown_squeue_lines(ex, self.psij)
                _exit_with_the_jobs_code(ex)
            if name in arrays.INDEX_VARIABLES:
                _per_task_outputs(ex, name)
            self._executors[name] = ex
            log.info("psij executor %s ready (work dir %s)", name, self.work_dir)
            return ex

    def _config(self, name: str) -> Any:
        psij = self.psij
        if name == "local":
            return psij.JobExecutorConfig(work_directory=self.work_dir)
        from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

        # Every batch executor accepts the base config (psij copies it into its own class).
        return BatchSchedulerExecutorConfig(
            work_directory=self.work_dir,
            queue_polling_interval=self.poll_interval,  # type: ignore[arg-type]
            initial_queue_polling_delay=self.initial_poll_delay,  # type: ignore[arg-type]
            queue_polling_error_threshold=self.poll_error_threshold,
            # psij would delete <native_id>.out as it reads it, and with it the batch
            # script's own errors; the job manager removes these files once it has kept
            # what a failed job's page needs (unless keep_files).
            keep_files=True,
        )

    def is_batch(self, name: str) -> bool:
        return name not in ("local", "flux", "rp")

    def executor_work_dir(self, name: str) -> Path:
        """Where a batch executor writes submit scripts and ``<native_id>.ec/.out`` files."""
        return self.work_dir / name

    def shutdown(self) -> None:
        """Stop following jobs (the jobs themselves keep running).

        psij has no API to stop an executor: its queue-poll thread only ends when the
        executor is garbage collected, which never happens while jobs reference it. So
        tell the thread to stop and forget its jobs, or a stopped plugin would keep
        polling the scheduler.
        """
        with self._lock:
            executors, self._executors = self._executors, {}
        for ex in executors.values():
            thread = getattr(ex, "_queue_poll_thread", None)
            if thread is None:
                continue
            thread.done = True
            # A poll already under way must not read (and delete) the <native_id>.ec files
            # that the next agent needs for the exit codes: point it at an empty place.
            ex.work_directory = self.work_dir / ".stopped"
            lock = getattr(thread, "_jobs_lock", None)
            jobs = getattr(thread, "_jobs", None)
            if lock is not None and isinstance(jobs, dict):
                with lock:
                    jobs.clear()

    # -- jobs ----------------------------------------------------------------------------

    def make_spec(self, spec: dict[str, Any], executor: str, *, directory: str, stdout_path: str, stderr_path: str,
                  extra_env: dict[str, str] | None = None, post_launch: str | None = None) -> Any:
        """A psij JobSpec for a normalised spec (see spec.py), with the paths the plugin chose."""
        psij = self.psij
        launcher = spec.get("launcher")
        if launcher is not None and launcher not in psij.Launcher.get_launcher_names():
            names = ", ".join(sorted(psij.Launcher.get_launcher_names()))
            raise JobBuildError(f"unknown launcher '{launcher}'; psij has: {names}")
        attributes = dict(spec.get("attributes") or {})
        custom = dict(spec.get("custom_attributes") or {})
        name_attr = JOB_NAME_ATTRIBUTES.get(executor)
        if name_attr and spec.get("name") and name_attr not in custom:
            custom[name_attr] = spec["name"]
        duration = attributes.pop("duration", None)
        try:
            resources = psij.ResourceSpecV1(**spec["resources"]) if spec.get("resources") else None
            job_attributes = psij.JobAttributes(
                duration=timedelta(seconds=duration) if duration else timedelta(minutes=10),
                queue_name=attributes.get("queue_name"),
                account=attributes.get("account"),
                reservation_id=attributes.get("reservation_id"),
                custom_attributes=custom or None,
            )
            environment = {**spec.get("environment", {}), **(extra_env or {})}
            return psij.JobSpec(
                executable=spec["executable"],
                arguments=list(spec.get("arguments") or []),
                directory=directory,
                name=spec.get("name"),
                environment=environment or None,
                inherit_environment=spec.get("inherit_environment", True),
                stdin_path=spec.get("stdin_path"),
                stdout_path=stdout_path,
                stderr_path=stderr_path,
                resources=resources,
                attributes=job_attributes,
                post_launch=post_launch,
                launcher=launcher,
            )
        except (psij.InvalidJobException, ValueError, TypeError) as exc:
            raise JobBuildError(getattr(exc, "message", None) or str(exc)) from None

    def new_job(self) -> Any:
        """A psij Job without a spec yet: its id becomes the job's id, and its spec is set
        once the plugin has chosen the job's paths (or it is attached to a native job)."""
        return self.psij.Job()

    def submit_script(self, executor: str, job: Any) -> str:
        """The submit script ``executor`` would hand to its scheduler for ``job``, rendered
        with psij's own templates, without running anything."""
        ex = self.executor(executor)
        if not hasattr(ex, "generate_submit_script") or not hasattr(ex, "_create_script_context"):
            raise ExecutorUnavailable(f"executor '{executor}' does not use a submit script")
        ex._check_job(job)  # the checks and defaults psij applies in submit()
        context = ex._create_script_context(job)
        out = io.StringIO()
        ex.generate_submit_script(job, context, out)
        return out.getvalue()

    def launch_command(self, executor: str, job: Any) -> list[str]:
        """The command line the local executor would run for ``job``."""
        ex = self.executor(executor)
        launcher = ex._get_launcher(job.spec.launcher or "single")
        return list(launcher.get_launch_command(job))

    def state_name(self, state: Any) -> str:
        return str(state)


def describe_commands(name: str) -> dict[str, Any]:
    """Whether the scheduler command an executor needs is on PATH."""
    command = SUBMIT_COMMANDS.get(name)
    if command is None:
        return {}
    return {"submit_command": command, "submit_command_found": shutil.which(command) is not None}


# Appended to psij's Slurm script, whose last command records the job's exit code in
# <native_id>.ec and so exits 0 whatever the job did (gotcha 2).
SLURM_EXIT_LINE = ('\n# Radical Edge: end with the job\'s own exit code, so that Slurm (sacct, --dependency=afterok)\n'
                   '# sees a failed job as FAILED.\n'
                   '_edge_ec=$(cat "{script_dir}/$SLURM_JOB_ID.ec" 2>/dev/null || true)\n'
                   'case "$_edge_ec" in ""|*[!0-9]*) exit 0 ;; *) exit "$_edge_ec" ;; esac\n')


def _exit_with_the_jobs_code(ex: Any) -> None:
    """Make the Slurm batch script exit with the job's exit code (psij's exits 0), so that
    the scheduler's accounting and its dependencies (``afterok``, ``afternotok``) see a job
    that failed as failed. psij itself still reads the code from ``<native_id>.ec``."""
    original = ex.generate_submit_script

    def generate_submit_script(job: Any, context: dict[str, Any], submit_file: Any) -> None:
        original(job, context, submit_file)
        submit_file.write(SLURM_EXIT_LINE.format(script_dir=context["psij"]["script_dir"]))

    ex.generate_submit_script = generate_submit_script


def _per_task_outputs(ex: Any, executor: str) -> None:
    """Give each task of an array job its own stdout and stderr: the array's paths hold
    ``%a``, which becomes the scheduler's task index variable in the batch script."""
    original = ex.generate_submit_script
    option = arrays.ARRAY_OPTIONS[executor]

    def generate_submit_script(job: Any, context: dict[str, Any], submit_file: Any) -> None:
        custom = (job.spec.attributes.custom_attributes or {}) if job.spec and job.spec.attributes else {}
        if option not in custom:
            original(job, context, submit_file)
            return
        rendered = io.StringIO()
        original(job, context, rendered)
        paths = [str(Path(p).absolute()) for p in (job.spec.stdout_path, job.spec.stderr_path) if p]
        submit_file.write(arrays.per_task_script(rendered.getvalue(), paths, executor))

    ex.generate_submit_script = generate_submit_script


def _tolerate_unknown_squeue_lines(ex: Any, psij: Any) -> None:
    """Make the Slurm executor's squeue parsing survive lines it does not understand.

    psij polls ``squeue --me``, which lists every job of the agent's user, including jobs
    the edge never submitted, and it asserts on each line: a FAILED job with a reason psij
    does not know (``OutOfMemory``, ``DeadLine``…) fails the whole poll, and after three
    such polls psij marks every job it follows FAILED. Parse line by line instead, with
    psij's own state and reason tables.
    """
    original = ex.parse_status_output
    states = getattr(type(ex), "_STATE_MAP", {})
    reasons = getattr(type(ex), "_REASONS_MAP", {})

    def parse_status_output(exit_code: int, out: str) -> dict[str, Any]:
        try:
            return original(exit_code, out)
        except (AssertionError, KeyError, IndexError, ValueError):  # KeyError instead of asserts under -O
            pass
        result: dict[str, Any] = {}
        for line in out.split("\n")[1:]:
            cols = line.split()
            if len(cols) < 2:
                continue
            state = states.get(cols[1])
            if state is None:
                log.warning("squeue: unknown state %r of job %s; ignored", cols[1], cols[0])
                continue
            message = None
            if state == psij.JobState.FAILED:
                reason = " ".join(cols[2:])
                message = reasons.get(reason, reason or None)
            result[cols[0]] = psij.JobStatus(state, message=message)
        return result

    ex.parse_status_output = parse_status_output


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()
