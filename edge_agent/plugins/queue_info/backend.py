"""What every scheduler backend offers the plugin, and how a collection records what it ran."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .commands import CommandFailed, CommandResult, CommandRunner, CommandTimeout, clip, display_command

log = logging.getLogger("edge_agent.plugins.queue_info")

# stderr of a command that does not know its JSON option (or lacks the plugin behind it);
# anything else (controller down, permission denied) is a real failure and is reported.
_JSON_UNSUPPORTED = re.compile(
    r"unrecognized option|invalid option|unknown option|illegal option|usage:|data_parser|serializer|openapi",
    re.IGNORECASE,
)


@dataclass
class Collected:
    """What a collector returns: the data and how it was obtained (shown in ``meta``)."""

    data: Any
    commands: list[str] = field(default_factory=list)
    json_used: int = 0
    text_used: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        if self.json_used and self.text_used:
            return "mixed"
        return "json" if self.json_used else "text"


class Trace:
    """Runs the commands of one collection and remembers them (thread-confined).

    The runner's timeout is the budget of the whole collection, not of each command: an
    answer that needs three commands (or a JSON attempt and its text fallback) still comes
    within ``command_timeout``, well inside the bridge's own request timeout.
    """

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self.deadline = time.monotonic() + runner.timeout
        self.commands: list[str] = []
        self.json_used = 0
        self.text_used = 0
        self.notes: list[str] = []

    def run(self, argv: list[str], *, json_output: bool = False) -> CommandResult:
        """Run ``argv``; it counts as a JSON or text read once it succeeded."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise CommandTimeout(f"`{display_command(argv)}` was not run: the commands of this answer used up "
                                 f"their {self.runner.timeout:g} s limit", command=argv)
        self.commands.append(display_command(argv))
        result = self.runner.run(argv, timeout=remaining)
        if json_output:
            self.json_used += 1
        else:
            self.text_used += 1
        return result

    def done(self, data: Any) -> Collected:
        return Collected(data, self.commands, self.json_used, self.text_used, self.notes)


class Backend:
    """A batch scheduler. Collectors are blocking (they run commands): call them in a thread.

    ``use_json`` allows JSON output where the scheduler supports it; a command whose JSON option
    turns out to be unsupported is remembered and read as text from then on.
    """

    name = "none"
    # Command name -> whether its JSON output is (still) believed to work.
    json_commands: tuple[str, ...] = ()

    def __init__(self, runner: CommandRunner, *, use_json: bool = True, version: str | None = None) -> None:
        self.runner = runner
        self.version = version
        self.use_json = use_json
        self._json_ok: dict[str, bool] = {cmd: use_json for cmd in self.json_commands}

    def collect_info(self) -> Collected:
        """``{queue name: queue record}`` (see :func:`records.queue_records`)."""
        raise NotImplementedError

    def collect_jobs(self, *, user: str | None, include_finished: bool) -> Collected:
        """``[job record]`` of every queue, of ``user`` only when given; finished jobs that the
        scheduler still remembers only with ``include_finished``."""
        raise NotImplementedError

    def collect_allocations(self, *, user: str | None) -> Collected:
        """``[allocation record]`` of ``user`` (None: every user and account)."""
        raise NotImplementedError

    def json_support(self) -> dict[str, bool]:
        return dict(self._json_ok)

    def run_json(self, trace: Trace, key: str, argv: list[str]) -> dict[str, Any] | None:
        """Run a JSON-printing command; None means "use the text form instead".

        None when JSON is off for ``key``, when the command rejects its JSON option (remembered),
        or when it prints something that is not a JSON object (this time only). A real failure
        (controller unreachable, permission denied) is raised, not hidden behind the text form.
        """
        if not self._json_ok.get(key, False):
            return None
        try:
            result = trace.run(argv, json_output=True)
        except CommandFailed as exc:
            if _JSON_UNSUPPORTED.search(exc.stderr or exc.detail):
                self._json_ok[key] = False
                log.info("%s has no usable JSON output (%s); reading its text output from now on",
                         key, exc.stderr.strip().splitlines()[0] if exc.stderr.strip() else exc.detail)
                trace.notes.append(f"{key}: JSON output unsupported, used text")
                return None
            raise
        try:
            data = json.loads(result.stdout)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            log.warning("`%s` printed no JSON object; falling back to its text output", result.display)
            trace.json_used -= 1
            trace.notes.append(f"{key}: unreadable JSON output, used text")
            return None
        raise_json_errors(data, result)
        return data


def raise_json_errors(data: dict[str, Any], result: CommandResult) -> None:
    """Slurm's JSON carries errors in an ``errors`` list (exit code sometimes 0): raise them."""
    errors = data.get("errors") or []
    if not isinstance(errors, list) or not errors:
        return
    messages = []
    for err in errors:
        if isinstance(err, dict):
            text = err.get("description") or err.get("error") or json.dumps(err)
            source = err.get("source")
            messages.append(f"{text} ({source})" if source else str(text))
        else:
            messages.append(str(err))
    raise CommandFailed(
        f"`{result.display}` reported: {'; '.join(messages)}",
        command=result.argv, returncode=result.returncode, stderr=clip(result.stderr.strip() or "; ".join(messages)),
    )
