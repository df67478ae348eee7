"""Which batch scheduler this host has: Slurm, PBS, or none; forced by config or detected.

Detection looks for the commands the plugin needs (``sinfo`` + ``squeue`` for Slurm, ``qstat`` +
``pbsnodes`` for PBS) in the configured ``bin_dir`` and on ``PATH``, then in ``$PBS_EXEC/bin``
from ``/etc/pbs.conf`` (PBS often lives in /opt/pbs/bin, outside a daemon's PATH). Slurm wins
when both are present: Slurm's Torque wrappers install a ``qstat`` too. The version comes from
``sinfo --version`` / ``qstat --version`` and decides which JSON options are worth trying.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

from .backend import Backend, Collected
from .commands import CommandRunner, NoScheduler, SchedulerError
from .pbs import PbsBackend
from .slurm import SlurmBackend

BACKENDS = ("auto", "slurm", "pbs", "none")
REQUIRED = {"slurm": ("sinfo", "squeue", "scontrol"), "pbs": ("qstat", "pbsnodes")}
OPTIONAL = {"slurm": ("sacctmgr", "sshare"), "pbs": ()}


@dataclass
class Detection:
    """The outcome: ``backend`` (slurm/pbs/none), ``how`` (config/auto) and a ``reason`` a user
    can read; ``bin_dir`` is where the commands were found when it is not on PATH."""

    backend: str
    how: str
    reason: str
    version: str | None = None
    bin_dir: str | None = None
    commands: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "detected_by": self.how, "reason": self.reason, "version": self.version,
            "bin_dir": self.bin_dir, "commands": self.commands,
        }


def detect(choice: str, runner: CommandRunner, *, pbs_conf: str | None = None) -> Detection:
    """Decide the backend. ``choice`` is the config value (auto, slurm, pbs, none). Blocking
    (runs ``--version``): call from a thread."""
    choice = (choice or "auto").strip().lower()
    if choice not in BACKENDS:
        return Detection("none", "config", f"queue_info.backend={choice!r} is not one of {', '.join(BACKENDS)}")
    if choice == "none":
        return Detection("none", "config", "disabled by configuration (queue_info.backend=none)")
    if choice in ("slurm", "pbs"):
        found = _commands(choice, runner)
        if not runner.bin_dir and choice == "pbs" and not found[REQUIRED["pbs"][0]]:
            pbs_bin = pbs_exec_bin(pbs_conf)
            if pbs_bin:
                runner = replace(runner, bin_dir=pbs_bin)
                found = _commands(choice, runner)
        missing = [c for c in REQUIRED[choice] if not found[c]]
        reason = f"forced by configuration (queue_info.backend={choice})"
        if missing:
            reason += f"; missing commands: {', '.join(missing)}"
        return Detection(choice, "config", reason, _version(choice, runner), runner.bin_dir, found)
    for name in ("slurm", "pbs"):
        found = _commands(name, runner)
        if all(found[c] for c in REQUIRED[name]):
            first = REQUIRED[name][0]
            return Detection(name, "auto", f"found {first} at {found[first]}", _version(name, runner),
                             runner.bin_dir, found)
    pbs_bin = None if runner.bin_dir else pbs_exec_bin(pbs_conf)
    if pbs_bin:
        pbs_runner = replace(runner, bin_dir=pbs_bin)
        found = _commands("pbs", pbs_runner)
        if all(found[c] for c in REQUIRED["pbs"]):
            return Detection("pbs", "auto", f"found qstat at {found['qstat']} (PBS_EXEC in {pbs_conf_path(pbs_conf)})",
                             _version("pbs", pbs_runner), pbs_bin, found)
    where = f"{runner.bin_dir} or " if runner.bin_dir else ""
    search = runner.path if runner.path is not None else os.environ.get("PATH", "")
    return Detection("none", "auto", f"neither Slurm (sinfo, squeue, scontrol) nor PBS (qstat, pbsnodes) was found in "
                                     f"{where}PATH={search}")


def make_backend(detection: Detection, runner: CommandRunner, *, use_json: bool = True) -> Backend:
    """The backend object for ``detection`` (a :class:`NoBackend` for "none")."""
    if detection.bin_dir and detection.bin_dir != runner.bin_dir:
        runner = replace(runner, bin_dir=detection.bin_dir)
    if detection.backend == "slurm":
        return SlurmBackend(runner, use_json=use_json, version=detection.version)
    if detection.backend == "pbs":
        return PbsBackend(runner, use_json=use_json, version=detection.version)
    return NoBackend(runner, reason=detection.reason)


class NoBackend(Backend):
    """No scheduler: every collection is a clear 503 ``no_scheduler`` answer."""

    name = "none"

    def __init__(self, runner: CommandRunner, *, reason: str) -> None:
        super().__init__(runner, use_json=False)
        self.reason = reason

    def _refuse(self) -> NoReturn:
        raise NoScheduler(f"this edge has no batch scheduler to ask: {self.reason}. Install Slurm or PBS "
                          "commands here, or start the agent with --option queue_info.backend=slurm|pbs "
                          "(and queue_info.bin_dir=DIR if they are not on PATH)")

    def collect_info(self) -> Collected:
        return self._refuse()

    def collect_jobs(self, *, user: str | None, include_finished: bool) -> Collected:
        return self._refuse()

    def collect_allocations(self, *, user: str | None) -> Collected:
        return self._refuse()


def _commands(backend: str, runner: CommandRunner) -> dict[str, str | None]:
    return {cmd: runner.which(cmd) for cmd in REQUIRED[backend] + OPTIONAL[backend]}


def _version(backend: str, runner: CommandRunner) -> str | None:
    """``sinfo --version`` → ``22.05.8``; ``qstat --version`` → ``2022.1.1``. None if unknown."""
    argv = ["sinfo", "--version"] if backend == "slurm" else ["qstat", "--version"]
    try:
        result = runner.run_unchecked(argv, timeout=min(runner.timeout, 10.0))
    except SchedulerError:
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", result.stdout + result.stderr)
    return match.group(1) if match else None


def pbs_conf_path(pbs_conf: str | None = None) -> str:
    return pbs_conf or os.environ.get("PBS_CONF_FILE") or "/etc/pbs.conf"


def pbs_exec_bin(pbs_conf: str | None = None) -> str | None:
    """``$PBS_EXEC/bin`` from pbs.conf (``PBS_EXEC=/opt/pbs``), if that file says so."""
    try:
        with open(pbs_conf_path(pbs_conf), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key.strip() == "PBS_EXEC" and value.strip():
                    path = os.path.join(value.strip(), "bin")
                    return path if os.path.isdir(path) else None
    except OSError:
        return None
    return None
