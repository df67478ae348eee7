"""Running scheduler commands: no shell, a timeout, a clean environment, and errors users can act on.

Every scheduler command of the plugin goes through :class:`CommandRunner`. It is blocking (call it
from a worker thread, never from the event loop) and it never hangs: a command that outlives its
timeout is killed together with its process group. Failures become :class:`SchedulerError`
subclasses, which are :class:`~edge_agent.plugin.HTTPError` values the plugin framework answers
with directly (502 for a failing command, 504 for a timeout, 503 for a missing one).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

from ...plugin import HTTPError, Response

DEFAULT_TIMEOUT = 30.0
# Stderr is quoted back to the caller; a scheduler can print a lot when it is unhappy.
MAX_STDERR_CHARS = 4000

# Variables that silently change what the commands print: default filters (SQUEUE_USERS, …),
# default formats and relative time stamps. The plugin sets its own options explicitly.
_DROPPED_ENV_PREFIXES = ("SQUEUE_", "SINFO_", "SACCTMGR_", "SSHARE_", "SCONTROL_")
_FORCED_ENV = {"SLURM_TIME_FORMAT": "standard"}


class SchedulerError(HTTPError):
    """A scheduler command could not give an answer. Carries the command and its stderr."""

    status = 502
    code = "scheduler_error"

    def __init__(self, detail: str, *, command: list[str] | None = None, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(self.status, self.code, detail)
        self.command = list(command or [])
        self.returncode = returncode
        self.stderr = stderr

    def to_response(self) -> Response:
        body: dict[str, Any] = {"error": self.error, "detail": self.detail}
        if self.command:
            body["command"] = shlex.join(self.command)
        if self.returncode is not None:
            body["returncode"] = self.returncode
        if self.stderr:
            body["stderr"] = self.stderr
        return Response.json(body, status=self.status)


class NoScheduler(SchedulerError):
    """No batch scheduler is configured or detected on this host."""

    status = 503
    code = "no_scheduler"


class CommandNotFound(SchedulerError):
    """The scheduler's command is not installed where the agent looks for it."""

    status = 503
    code = "command_not_found"


class CommandFailed(SchedulerError):
    """The command ran and exited non-zero (controller down, permission denied, bad option)."""

    status = 502
    code = "scheduler_error"


class CommandTimeout(SchedulerError):
    """The command did not finish within the timeout and was killed."""

    status = 504
    code = "scheduler_timeout"


class OutputError(SchedulerError):
    """The command succeeded but printed something the plugin cannot read."""

    status = 502
    code = "scheduler_output_unreadable"


@dataclass
class CommandResult:
    argv: list[str]
    stdout: str
    stderr: str
    returncode: int
    seconds: float = 0.0

    @property
    def display(self) -> str:
        return display_command(self.argv)


@dataclass
class CommandRunner:
    """Resolves and runs scheduler commands.

    ``bin_dir`` is searched before ``path`` (default: the agent's ``PATH``), so a site can point
    the agent at ``/opt/pbs/bin`` without touching its environment. ``env`` adds variables (such as
    ``SLURM_CONF`` for a second cluster) on top of the agent's environment.
    """

    timeout: float = DEFAULT_TIMEOUT
    bin_dir: str | None = None
    path: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def which(self, name: str) -> str | None:
        """The absolute path of command ``name``, or None when it is not installed."""
        if self.bin_dir:
            candidate = os.path.join(self.bin_dir, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        return shutil.which(name, path=self.path if self.path is not None else os.environ.get("PATH"))

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
        if self.path is not None:
            env["PATH"] = self.path
        env.update(_FORCED_ENV)
        env.update(self.env)
        return env

    def run(self, argv: list[str], *, timeout: float | None = None) -> CommandResult:
        """Run ``argv`` (no shell) and return its output; raise a SchedulerError unless it exits 0.

        Blocking: call from a worker thread. On timeout the whole process group is killed and
        :class:`CommandTimeout` is raised, so a wedged ``sacctmgr`` cannot pin a thread forever.
        """
        result = self.run_unchecked(argv, timeout=timeout)
        if result.returncode != 0:
            stderr = result.stderr.strip() or result.stdout.strip()
            raise CommandFailed(
                f"`{result.display}` failed with exit code {result.returncode}: "
                f"{first_line(stderr) or 'no error message'}",
                command=result.argv, returncode=result.returncode, stderr=clip(stderr),
            )
        return result

    def run_unchecked(self, argv: list[str], *, timeout: float | None = None) -> CommandResult:
        """Like :meth:`run`, but a non-zero exit is returned, not raised."""
        limit = self.timeout if timeout is None else timeout
        exe = self.which(argv[0])
        if exe is None:
            where = f"{self.bin_dir} or " if self.bin_dir else ""
            search = self.path if self.path is not None else os.environ.get("PATH", "")
            raise CommandNotFound(f"`{argv[0]}` is not installed here (looked in {where}PATH={search})",
                                  command=argv)
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [exe, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.environment(), start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            raise CommandFailed(f"`{display_command(argv)}` could not be started: {exc}", command=argv) from exc
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise CommandTimeout(
                f"`{display_command(argv)}` did not finish within {limit:.3g} s and was killed",
                command=argv, stderr=clip(_decode(err).strip()),
            ) from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        return CommandResult(list(argv), _decode(out), _decode(err), proc.returncode, time.monotonic() - started)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def display_command(argv: list[str]) -> str:
    """``argv`` as a user would type it (unit separators in format strings shown as ``|``)."""
    return shlex.join(argv).replace("\x1f", "|")


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def clip(text: str, limit: int = MAX_STDERR_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"
