"""Submit requests as callers send them, validated and normalised before psij sees them.

Everything here is pure Python (no psij), so a bad request is refused with a precise
message before anything is created, and the normalised form is what the job store keeps.

Accepted ``job_spec`` (docs/plugins/psij.md)::

    {"executable": "/bin/sh", "arguments": ["-c", "echo hi"], "directory": "/abs/dir",
     "environment": {"K": "v"}, "stdout_path": "out.txt", "stderr_path": "err.txt",
     "name": "label", "launcher": "srun",
     "attributes": {"queue_name": "debug", "account": "proj1", "duration": 600,
                    "reservation_id": "r1", "node_count": 1, "process_count": 2,
                    "slurm.constraint": "cpu"},          # seed README form: moved to custom_attributes
     "custom_attributes": {"slurm.qos": "normal"},
     "resources": {"cpu_cores_per_process": 2, "memory": 1073741824},
     "after": {"succeeded": ["<job id>"]},                # start after other jobs of the caller
     "array": "0-19%4"}                                   # tasks 0..19, at most 4 at once (arrays.py)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

# Spellings some sites and older clients use for psij's executor names.
EXECUTOR_ALIASES = {"pbspro": "pbs", "torque": "pbs_classic"}

SPEC_FIELDS = (
    "executable", "arguments", "directory", "environment", "inherit_environment", "stdin_path",
    "stdout_path", "stderr_path", "name", "launcher", "attributes", "custom_attributes", "resources", "after",
    "array",
)
# Dependencies: start after other jobs of the same user have succeeded, failed or ended.
AFTER_CONDITIONS = ("succeeded", "failed", "ended")
MAX_DEPENDENCIES = 100
ATTRIBUTE_FIELDS = ("queue_name", "account", "project_name", "duration", "reservation_id")
RESOURCE_INT_FIELDS = (
    "node_count", "process_count", "processes_per_node", "cpu_cores_per_process", "gpu_cores_per_process",
    "memory",
)
RESOURCE_FIELDS = (*RESOURCE_INT_FIELDS, "exclusive_node_use")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# "<scheduler>.<option>": the scheduler prefix selects which executor renders it.
_CUSTOM_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*\.[A-Za-z0-9][A-Za-z0-9_.-]*$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_WALLTIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(?:(\d+):)?(\d+)$")
MAX_ARGUMENTS = 10_000
MAX_TEXT = 65_536


class SpecError(ValueError):
    """A submit request that cannot be accepted; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SubmitRequest:
    """A validated submit: the executor name, the normalised job spec, the optional
    idempotency key, and a fingerprint of what was asked (to spot a key reused for a
    different job)."""

    executor: str
    spec: dict[str, Any]
    idempotency_key: str | None
    fingerprint: str


def parse_submit(body: Any, *, default_executor: str, header_key: str | None = None) -> SubmitRequest:
    """Validate a ``submit`` body. Raises :class:`SpecError` with a message users can act on."""
    if not isinstance(body, dict):
        raise SpecError("", "the request body must be a JSON object")
    unknown = sorted(set(body) - {"job_spec", "executor", "idempotency_key"})
    if unknown:
        raise SpecError(unknown[0], _unknown_message(unknown[0], ("job_spec", "executor", "idempotency_key")))
    if "job_spec" not in body:
        raise SpecError("job_spec", "missing; send {\"job_spec\": {\"executable\": …}, \"executor\": …}")
    executor = body.get("executor", default_executor)
    if executor is None:
        executor = default_executor
    if not isinstance(executor, str) or not executor.strip():
        raise SpecError("executor", f"must be a non-empty string, got {_type(executor)}")
    executor = executor.strip().lower()
    executor = EXECUTOR_ALIASES.get(executor, executor)
    key = _idempotency_key(body.get("idempotency_key"), header_key)
    spec = normalise_job_spec(body["job_spec"], executor=executor)
    canonical = json.dumps({"executor": executor, "job_spec": spec}, sort_keys=True, separators=(",", ":"))
    return SubmitRequest(executor, spec, key, hashlib.sha256(canonical.encode()).hexdigest())


def _idempotency_key(body_key: Any, header_key: str | None) -> str | None:
    if body_key is not None and not isinstance(body_key, str):
        raise SpecError("idempotency_key", f"must be a string, got {_type(body_key)}")
    header_key = header_key.strip() if header_key else None
    body_key = body_key.strip() if body_key else None
    if header_key and body_key and header_key != body_key:
        raise SpecError("idempotency_key", "the Idempotency-Key header and the body's idempotency_key differ")
    key = header_key or body_key
    if key is not None and not _IDEMPOTENCY_KEY.match(key):
        raise SpecError("idempotency_key", "must be 1-255 printable ASCII characters without spaces")
    return key


def normalise_job_spec(raw: Any, *, executor: str = "local") -> dict[str, Any]:
    """Check types and values of a job spec and return its canonical form.

    The canonical form always has ``executable``, ``arguments``, ``environment``,
    ``attributes``, ``custom_attributes`` and ``resources``; optional paths are absent when
    not given. Paths are ``~``-expanded; ``directory`` must then be absolute. Durations are
    seconds (float).
    """
    if not isinstance(raw, dict):
        raise SpecError("job_spec", f"must be an object, got {_type(raw)}")
    for key in raw:
        if key not in SPEC_FIELDS:
            raise SpecError(f"job_spec.{key}", _unknown_message(key, SPEC_FIELDS))
    spec: dict[str, Any] = {}

    executable = raw.get("executable")
    if executable is None or (isinstance(executable, str) and not executable.strip()):
        raise SpecError("job_spec.executable", "missing; name the program to run, e.g. \"/bin/hostname\"")
    spec["executable"] = _text("job_spec.executable", executable).strip()

    arguments = raw.get("arguments")
    if arguments is None:
        arguments = []
    if not isinstance(arguments, list):
        raise SpecError("job_spec.arguments", f"must be a list of strings, got {_type(arguments)}")
    if len(arguments) > MAX_ARGUMENTS:
        raise SpecError("job_spec.arguments", f"at most {MAX_ARGUMENTS} arguments")
    spec["arguments"] = [_scalar_text(f"job_spec.arguments[{i}]", a) for i, a in enumerate(arguments)]

    directory = raw.get("directory")
    if directory is not None:
        path = os.path.expanduser(_text("job_spec.directory", directory))
        if not os.path.isabs(path):
            raise SpecError("job_spec.directory", f"must be an absolute path, got {directory!r}")
        spec["directory"] = os.path.normpath(path)

    for field in ("stdin_path", "stdout_path", "stderr_path"):
        value = raw.get(field)
        if value is not None:
            text = _text(f"job_spec.{field}", value)
            if not text.strip():
                raise SpecError(f"job_spec.{field}", "must not be empty")
            spec[field] = os.path.expanduser(text)

    spec["environment"] = _environment(raw.get("environment"))
    inherit = raw.get("inherit_environment", True)
    if not isinstance(inherit, bool):
        raise SpecError("job_spec.inherit_environment", f"must be true or false, got {_type(inherit)}")
    spec["inherit_environment"] = inherit

    for field in ("name", "launcher"):
        value = raw.get(field)
        if value is not None:
            text = _text(f"job_spec.{field}", value).strip()
            if "\n" in text or "\r" in text:
                raise SpecError(f"job_spec.{field}", "must be a single line")
            if text:
                spec[field] = text

    attributes, resources, custom = _attributes(raw.get("attributes"))
    resources = _merge("job_spec.resources", resources, _resources(raw.get("resources"), "job_spec.resources"))
    custom = _merge("job_spec.custom_attributes", custom, _custom_attributes(raw.get("custom_attributes")))
    spec["attributes"] = attributes
    spec["resources"] = resources
    spec["custom_attributes"] = custom
    after = _after(raw.get("after"))
    if after:
        if executor == "local":
            raise SpecError("job_spec.after", "dependencies need a batch scheduler (slurm, pbs); "
                                              "the local executor has none")
        spec["after"] = after
    if raw.get("array") is not None:
        from .arrays import TASK_PLACEHOLDER, parse_array

        if executor == "local":
            raise SpecError("job_spec.array", "arrays need a batch scheduler (slurm, pbs); the local executor has none")
        spec["array"] = parse_array(raw["array"])
        for field in ("stdout_path", "stderr_path"):
            if field in spec and TASK_PLACEHOLDER not in spec[field]:
                raise SpecError(f"job_spec.{field}", f"an array's tasks each need their own file: put "
                                                     f"{TASK_PLACEHOLDER} (the task index) in the path")
    return spec


def _after(raw: Any) -> dict[str, list[str]]:
    """``{"succeeded": ["<job id>", …], "failed": […], "ended": […]}``: the edge's job ids
    this job waits for. A single id may be given as a string."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("job_spec.after",
                        f"must be an object such as {{\"succeeded\": [\"<job id>\"]}}, got {_type(raw)}")
    after: dict[str, list[str]] = {}
    count = 0
    for condition, ids in raw.items():
        where = f"job_spec.after.{condition}"
        if condition not in AFTER_CONDITIONS:
            raise SpecError(where, _unknown_message(condition, AFTER_CONDITIONS))
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list):
            raise SpecError(where, f"must be a list of job ids, got {_type(ids)}")
        clean = sorted({_text(f"{where}[{i}]", v).strip() for i, v in enumerate(ids)} - {""})
        count += len(clean)
        if clean:
            after[condition] = clean
    if count > MAX_DEPENDENCIES:
        raise SpecError("job_spec.after", f"at most {MAX_DEPENDENCIES} jobs")
    return after


def _attributes(raw: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    if raw is None:
        return {}, {}, {}
    if not isinstance(raw, dict):
        raise SpecError("job_spec.attributes", f"must be an object, got {_type(raw)}")
    attributes: dict[str, Any] = {}
    resources: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"job_spec.attributes.{key}"
        if not isinstance(key, str):
            raise SpecError("job_spec.attributes", "keys must be strings")
        if "." in key:
            # The seed README's form: scheduler options such as "slurm.constraint" sit
            # directly in attributes. They are custom attributes.
            custom[_custom_key(where, key)] = _custom_value(where, value)
        elif key in RESOURCE_FIELDS:
            if value is not None:
                resources.update(_resources({key: value}, "job_spec.attributes"))
        elif key == "duration":
            if value is not None:
                attributes["duration"] = parse_duration(value, where)
        elif key in ATTRIBUTE_FIELDS:
            if value is None:
                continue
            text = _text(where, value).strip()
            if not text or "\n" in text:
                raise SpecError(where, "must be a non-empty single-line string")
            # project_name is psij's deprecated spelling of account.
            name = "account" if key == "project_name" else key
            if name in attributes and attributes[name] != text:
                raise SpecError(where, "conflicts with account")
            attributes[name] = text
        else:
            raise SpecError(where, _unknown_message(key, ATTRIBUTE_FIELDS + RESOURCE_FIELDS)
                            + "; scheduler options go in custom_attributes as \"slurm.<option>\"")
    return attributes, resources, custom


def _resources(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(where, f"must be an object, got {_type(raw)}")
    resources: dict[str, Any] = {}
    for key, value in raw.items():
        field = f"{where}.{key}"
        if key not in RESOURCE_FIELDS:
            raise SpecError(field, _unknown_message(key, RESOURCE_FIELDS))
        if value is None:
            continue
        if key == "exclusive_node_use":
            if not isinstance(value, bool):
                raise SpecError(field, f"must be true or false, got {_type(value)}")
            resources[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise SpecError(field, f"must be a whole number, got {value!r}")
        if int(value) < 1:
            raise SpecError(field, f"must be at least 1, got {value!r}")
        resources[key] = int(value)
    _check_resource_counts(resources, where)
    return resources


def _check_resource_counts(resources: dict[str, Any], where: str) -> None:
    """psij's constraint process_count = node_count * processes_per_node, checked early."""
    nodes = resources.get("node_count")
    procs = resources.get("process_count")
    ppn = resources.get("processes_per_node")
    if nodes and procs and ppn and procs != nodes * ppn:
        raise SpecError(where, f"process_count ({procs}) must equal node_count ({nodes}) * "
                               f"processes_per_node ({ppn})")
    if nodes and procs and not ppn and procs % nodes:
        raise SpecError(where, f"process_count ({procs}) must be a multiple of node_count ({nodes})")
    if ppn and procs and not nodes and procs % ppn:
        raise SpecError(where, f"process_count ({procs}) must be a multiple of processes_per_node ({ppn})")


def _custom_attributes(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("job_spec.custom_attributes", f"must be an object, got {_type(raw)}")
    custom: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"job_spec.custom_attributes.{key}"
        custom[_custom_key(where, key)] = _custom_value(where, value)
    return custom


def _custom_key(where: str, key: Any) -> str:
    if not isinstance(key, str) or not _CUSTOM_KEY.match(key):
        raise SpecError(where, "keys look like \"<scheduler>.<option>\", e.g. \"slurm.constraint\" or \"pbs.l\"")
    prefix, _, option = key.partition(".")
    # psij lower-cases the scheduler prefix when it renders the script.
    return f"{prefix.lower()}.{option}"


def _custom_value(where: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if "\n" in value or "\r" in value or "\x00" in value:
            raise SpecError(where, "must be a single line")
        return value
    raise SpecError(where, f"must be a string, number or boolean, got {_type(value)}")


def _merge(where: str, first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    merged = dict(first)
    for key, value in second.items():
        if key in merged and merged[key] != value:
            raise SpecError(f"{where}.{key}", f"given twice with different values ({merged[key]!r}, {value!r})")
        merged[key] = value
    return merged


def _environment(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("job_spec.environment", f"must be an object of NAME: value, got {_type(raw)}")
    env: dict[str, str] = {}
    for key, value in raw.items():
        where = f"job_spec.environment.{key}"
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise SpecError(where, "variable names are letters, digits and _ and do not start with a digit")
        env[key] = _scalar_text(where, value)
    return env


def parse_duration(value: Any, where: str = "job_spec.attributes.duration") -> float:
    """Seconds (a number), or a walltime string: ``SS``, ``MM:SS``, ``HH:MM:SS``, ``D-HH:MM:SS``."""
    if isinstance(value, bool):
        raise SpecError(where, f"must be a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            match = _WALLTIME.match(text)
            if not match:
                raise SpecError(where, f"must be seconds or HH:MM:SS, got {value!r}") from None
            days, first, second, last = match.groups()
            parts = [int(p) for p in (first, second) if p is not None] + [int(last)]
            while len(parts) < 3:
                parts.insert(0, 0)
            hours, minutes, secs = parts
            seconds = float(int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs)
    else:
        raise SpecError(where, f"must be a number of seconds, got {_type(value)}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise SpecError(where, f"must be a finite number of seconds, got {value!r}")
    if seconds <= 0:
        raise SpecError(where, f"must be positive, got {value!r}")
    return seconds


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(where, f"must be a string, got {_type(value)}")
    if "\x00" in value:
        raise SpecError(where, "must not contain NUL characters")
    if len(value) > MAX_TEXT:
        raise SpecError(where, f"longer than {MAX_TEXT} characters")
    return value


def _scalar_text(where: str, value: Any) -> str:
    """A string, or a number converted to one (psij does the same for environment values)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(where, f"must be a string, got {_type(value)}")
    return _text(where, value if isinstance(value, str) else str(value))


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _unknown_message(key: Any, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return f"unknown field {key!r}{hint}"
