"""The MCP tools, resources and prompts of the bridge (built on the official SDK's
``MCPServer``).

Every tool that reaches an edge goes through ``calls.plugin_call`` and so through the
proxy's authorization, rate limits and audit: a tool can do nothing its caller could not
do over REST. Tools are annotated for clients (``readOnlyHint``, ``destructiveHint``,
``idempotentHint``); a read-only token is shown only the read-only ones
(:func:`tool_middleware`), which also adds the third-party plugins' tools (``plugins``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from channels.db import database_sync_to_async
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import SubscriptionsListenRequestParams, ToolAnnotations
from pydantic import BaseModel, Field

from edge_agent import __version__ as agent_version
from edge_agent.router import MethodNotAllowed, RouteNotFound

from ..access import policy
from ..conf import edge_settings
from ..core.directory import directory
from .calls import PRINCIPAL_KEY, Caller, PluginError, caller_of, plugin_call
from .files import register_file_tools
from .follow import JobListen
from .plugins import PREFIX, call_plugin_tool, plugin_tools

# The internal tool that carries out the generated third-party plugin tools (never listed).
EXT_CALL = "ext_call"

INSTRUCTIONS = """\
Radical Edge connects HPC machines ("edges") to this bridge. Start with list_edges to see
the edges you may use, their state and plugins. Batch jobs: list_queues (free nodes per
partition), submit_job (always pass a fresh idempotency_key, and reuse it when you retry the
same submission), then wait_job / job_status and job_output. Many small tasks: run_tasks.
Files on an edge (files plugin): file_roots, list_files, read_file, write_file and the
others; job_files shows what a job left in its working directory.
Everything runs with exactly the rights of the API token's user; refusals name the reason.
"""

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
SUBMIT = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
CANCEL = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)
RUN = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
CALL = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)

JOB_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELED"})
TASK_FINAL = frozenset({"DONE", "FAILED", "CANCELED"})

EdgeName = Annotated[str, Field(description="Edge name, as list_edges shows it", min_length=1, max_length=63)]
JobId = Annotated[str, Field(description="The job_id that submit_job returned", min_length=1, max_length=200)]


def build_server() -> MCPServer:
    """A fresh server with every tool, resource and prompt, less those an admin hid
    (``MCP_HIDDEN``)."""
    server: MCPServer = MCPServer(
        "radical-edge", title="Radical Edge", version=agent_version, instructions=INSTRUCTIONS,
        website_url="https://github.com/radical-cybertools/radical.edge", middleware=[tool_middleware],
        subscriptions=False,
    )
    # subscriptions/listen: job updates the caller may see (follow.py), not the SDK's
    # principal-blind in-process bus. (MCPServer takes no handler of its own for it.)
    server._lowlevel_server.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, JobListen())
    _register_tools(server)
    register_file_tools(server, call)
    _register_resources(server)
    _register_prompts(server)
    for name in hidden_names():
        if not name.startswith("plugin:"):
            try:
                server.remove_tool(name)
            except Exception:
                pass
    return server


async def tool_middleware(ctx: Any, call_next: Any) -> Any:
    """Server middleware. ``tools/list``: a read-only token is shown only the read-only
    tools (calling another anyway is refused by the proxy's read-only rule, as over REST),
    and the third-party plugins' tools of the caller's edges are added (plugins.py).
    ``tools/call`` of such a tool is carried out by the internal ``ext_call`` tool."""
    principal = (getattr(ctx.request, "scope", None) or {}).get(PRINCIPAL_KEY)
    if ctx.method == "tools/call":
        params = dict(ctx.params or {})
        name = params.get("name")
        if isinstance(name, str) and name.startswith(PREFIX):
            params.update(name=EXT_CALL, arguments={"tool": name, "arguments": params.get("arguments") or {}})
            ctx = dataclasses.replace(ctx, params=params)
        return await call_next(ctx)
    result = await call_next(ctx)
    if ctx.method != "tools/list" or not isinstance(result, dict):
        return result
    tools = [t for t in result.get("tools", []) if t.get("name") != EXT_CALL]
    if principal is not None and principal.read_only:
        tools = [t for t in tools if (t.get("annotations") or {}).get("readOnlyHint")]
    if principal is not None and EXT_CALL not in hidden_names():
        generated = await plugin_tools(Caller(principal, ""), hidden_names())
        tools += [entry["tool"].model_dump(by_alias=True, mode="json", exclude_none=True)
                  for entry in generated.values()]
    return {**result, "tools": tools}


def hidden_names() -> frozenset[str]:
    return frozenset(edge_settings.MCP_HIDDEN or ())


def plugin_hidden(plugin: str) -> bool:
    return f"plugin:{plugin}" in hidden_names()


def _check_plugin(plugin: str) -> None:
    if plugin_hidden(plugin):
        raise ToolError(f"plugin_hidden: the plugin '{plugin}' is not offered over MCP on this bridge")


async def call(caller: Caller, edge: str, plugin: str, method: str, route: str, **kwargs: Any) -> Any:
    _check_plugin(plugin)
    return await plugin_call(caller, edge, plugin, method, route, **kwargs)


# --- tools ---------------------------------------------------------------------------------


class JobAttributes(BaseModel):
    """Scheduler attributes of a batch job (all optional)."""

    queue_name: str | None = Field(None, description="Partition/queue, from list_queues")
    account: str | None = Field(None, description="Account/project to charge, from list_allocations")
    duration: int | None = Field(None, ge=1, description="Wall-time limit in seconds")
    node_count: int | None = Field(None, ge=1)
    process_count: int | None = Field(None, ge=1)
    reservation_id: str | None = None


class TaskSpec(BaseModel):
    """One rhapsody task: an executable with arguments, a shell command line
    (executable + shell=true), or a function registered on the edge."""

    executable: str | None = Field(None, description="Program to run, or with shell=true a shell command line")
    arguments: list[str] | None = None
    shell: bool | None = Field(None, description="Run executable as a /bin/sh command line")
    function: str | None = Field(None, description="Name of a function registered on the edge (instead of "
                                                   "executable)")
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = Field(None, gt=0, description="Seconds the task may run")
    name: str | None = None


def _register_tools(server: MCPServer) -> None:
    @server.tool(title="List my edges", annotations=READ)
    async def list_edges(ctx: Context) -> dict[str, Any]:
        """List the HPC edges you may use: name, whether it is online, its host, your role
        on it (viewer can only read; user, owner and admin can also submit) and its plugins
        (sysinfo: system status; psij: batch jobs; queue_info: queues and allocations;
        rhapsody: many small tasks; files: files and directories). Call this first."""
        caller = await caller_of(ctx, "list_edges")
        return {"edges": await _edges_for(caller)}

    @server.tool(title="Describe an edge", annotations=READ)
    async def describe_edge(edge: EdgeName, ctx: Context) -> dict[str, Any]:
        """An edge's host facts and its plugins with every route (method, path, read_only).
        Use it to find what a third-party plugin offers before read_route or call_route."""
        caller = await caller_of(ctx, "describe_edge")
        return await _describe(caller, edge)

    @server.tool(title="System status of an edge", annotations=READ)
    async def edge_status(edge: EdgeName, ctx: Context) -> dict[str, Any]:
        """Live system status of an edge's host (sysinfo plugin): hostname, uptime, CPU use
        and load, memory, disks, network and GPUs."""
        caller = await caller_of(ctx, "edge_status")
        return await call(caller, edge, "sysinfo", "GET", "metrics/{sid}")

    @server.tool(title="Queues with free nodes", annotations=READ)
    async def list_queues(edge: EdgeName, ctx: Context,
                          force: Annotated[bool, Field(description="Bypass the edge's short cache")] = False,
                          ) -> dict[str, Any]:
        """Partitions/queues of the edge's batch scheduler (Slurm or PBS), each with its
        state, time limit (minutes), nodes total/available/idle, CPUs, memory and GPUs per
        node. nodes_idle is what can start a job now. Sorted by idle nodes, most first."""
        caller = await caller_of(ctx, "list_queues")
        answer = await call(caller, edge, "queue_info", "GET", "get_info/{sid}", query=_query(force=force))
        queues = sorted((answer.get("queues") or {}).values(),
                        key=lambda q: (-(q.get("nodes_idle") or 0), str(q.get("name"))))
        return {"queues": queues, "meta": answer.get("meta")}

    @server.tool(title="My allocations and balance", annotations=READ)
    async def list_allocations(edge: EdgeName, ctx: Context,
                               user: Annotated[str | None, Field(
                                   description="Scheduler user name; default: the edge agent's own user")] = None,
                               ) -> dict[str, Any]:
        """Scheduler accounts (allocations) you may charge on the edge, with what the
        scheduler reports about their balance and limits: fairshare, QOS, max jobs,
        max wall time and group TRES limits (Slurm associations; PBS where available)."""
        caller = await caller_of(ctx, "list_allocations")
        return await call(caller, edge, "queue_info", "GET", "list_allocations/{sid}", query=_query(user=user))

    @server.tool(title="Submit a batch job", annotations=SUBMIT)
    async def submit_job(
        edge: EdgeName,
        executable: Annotated[str, Field(description="Program to run on the edge, e.g. /bin/hostname or python3",
                                         min_length=1)],
        idempotency_key: Annotated[str, Field(
            description="A fresh unique string (e.g. a UUID) for this submission. Reuse the SAME key when "
                        "retrying it: the edge then returns the first job instead of submitting twice.",
            min_length=1, max_length=255, pattern=r"^[!-~]+$")],
        ctx: Context,
        arguments: list[str] | None = None,
        executor: Annotated[str, Field(description="local, slurm, pbs, lsf or flux")] = "local",
        directory: Annotated[str | None, Field(description="Working directory on the edge")] = None,
        environment: dict[str, str] | None = None,
        attributes: JobAttributes | None = None,
        custom_attributes: Annotated[dict[str, str] | None, Field(
            description='Scheduler options such as {"slurm.constraint": "gpu"}')] = None,
        array: Annotated[str | None, Field(
            description="Run it as a job array (Slurm --array, PBS -J): task indices such as \"0-19\", "
                        "\"1,3,5-9\" or \"0-99%10\" (at most 10 running at once). Each task finds its index "
                        "in $SLURM_ARRAY_TASK_ID ($PBS_ARRAY_INDEX); array_tasks lists their states",
            min_length=1, max_length=4096)] = None,
    ) -> dict[str, Any]:
        """Submit a batch job and return at once with its job_id and state (it does not
        wait). Follow it with wait_job or job_status, read it with job_output, stop it with
        cancel_job. Pick queue and account with list_queues and list_allocations. With
        `array`, one job of many tasks: array_tasks shows each, retry_failed_tasks reruns
        the ones that failed."""
        caller = await caller_of(ctx, "submit_job")
        spec: dict[str, Any] = {"executable": executable, "arguments": arguments or []}
        if directory:
            spec["directory"] = directory
        if environment:
            spec["environment"] = environment
        if attributes is not None:
            spec["attributes"] = attributes.model_dump(exclude_none=True)
        if custom_attributes:
            spec["custom_attributes"] = custom_attributes
        if array is not None:
            spec["array"] = array
        return await call(caller, edge, "psij", "POST", "submit/{sid}",
                          body={"job_spec": spec, "executor": executor},
                          headers={"idempotency-key": idempotency_key})

    @server.tool(title="Job status", annotations=READ)
    async def job_status(edge: EdgeName, job_id: JobId, ctx: Context) -> dict[str, Any]:
        """A job's state (NEW, QUEUED, ACTIVE, COMPLETED, FAILED, CANCELED), exit code,
        native scheduler id, history and output sizes (not the output: see job_output)."""
        caller = await caller_of(ctx, "job_status")
        return await call(caller, edge, "psij", "GET", f"status/{{sid}}/{_seg(job_id)}", query="output=false")

    @server.tool(title="Wait for a job", annotations=READ)
    async def wait_job(edge: EdgeName, job_id: JobId, ctx: Context,
                       timeout: Annotated[float, Field(ge=0, description="Seconds to wait at most")] = 60.0,
                       ) -> dict[str, Any]:
        """Wait until a job ends or timeout seconds pass, reporting progress as its state
        changes; returns its status with "finished": true/false. Call again to keep waiting."""
        caller = await caller_of(ctx, "wait_job")
        timeout = min(timeout, edge_settings.MCP_MAX_WAIT)
        deadline = time.monotonic() + timeout
        last, interval, step = None, 0.5, 0
        while True:
            status = await call(caller, edge, "psij", "GET", f"status/{{sid}}/{_seg(job_id)}", query="output=false")
            if status.get("state") != last:
                last = status.get("state")
                step += 1
                await ctx.report_progress(step, None, f"job {job_id}: {last}")
            if last in JOB_FINAL or time.monotonic() >= deadline:
                return {**status, "finished": last in JOB_FINAL}
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, 5.0)

    @server.tool(title="Job output", annotations=READ)
    async def job_output(
        edge: EdgeName, job_id: JobId, ctx: Context,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: Annotated[int | None, Field(ge=0, description=(
            "Byte offset to read from (pass back next_offset to read only what was added)"))] = None,
        tail: Annotated[int | None, Field(ge=1, description="Read the last N bytes instead of from offset")] = None,
        max_bytes: Annotated[int | None, Field(ge=1, description="Most bytes to return")] = None,
    ) -> dict[str, Any]:
        """Read a job's stdout or stderr: from a byte offset (default 0), or its last
        `tail` bytes. Returns text, next_offset, size and truncated (more to read)."""
        caller = await caller_of(ctx, "job_output")
        limit = min(max_bytes or edge_settings.MCP_MAX_OUTPUT_BYTES, edge_settings.MCP_MAX_OUTPUT_BYTES)
        route = f"status/{{sid}}/{_seg(job_id)}"
        start = offset or 0
        if tail is not None:
            probe = await call(caller, edge, "psij", "GET", route, query=_query(max_bytes=1))
            start = max(0, int(probe.get(f"{stream}_size") or 0) - min(tail, limit))
        key = f"{stream}_offset"
        answer = await call(caller, edge, "psij", "GET", route, query=_query(**{key: start, "max_bytes": limit}))
        return {"job_id": job_id, "state": answer.get("state"), "stream": stream, "offset": start,
                "text": answer.get(stream, ""), "next_offset": answer.get(key),
                "size": answer.get(f"{stream}_size"), "truncated": answer.get(f"{stream}_truncated")}

    @server.tool(title="List my jobs", annotations=READ)
    async def list_jobs(edge: EdgeName, ctx: Context,
                        state: Annotated[str | None, Field(description="Comma-separated states, e.g. ACTIVE,QUEUED")]
                        = None,
                        limit: Annotated[int, Field(ge=1, le=1000)] = 20) -> dict[str, Any]:
        """Your batch jobs on an edge, newest first."""
        caller = await caller_of(ctx, "list_jobs")
        return await call(caller, edge, "psij", "GET", "list_jobs/{sid}", query=_query(state=state, limit=limit))

    @server.tool(title="Cancel a job", annotations=CANCEL)
    async def cancel_job(edge: EdgeName, job_id: JobId, ctx: Context) -> dict[str, Any]:
        """Ask the scheduler to cancel a job. Cancelling a job already cancelled is fine;
        a job that already completed or failed cannot be cancelled (job_finished)."""
        caller = await caller_of(ctx, "cancel_job")
        return await call(caller, edge, "psij", "POST", f"cancel/{{sid}}/{_seg(job_id)}")

    @server.tool(title="Tasks of a job array", annotations=READ)
    async def array_tasks(
        edge: EdgeName, job_id: JobId, ctx: Context,
        task: Annotated[int | None, Field(ge=0, description=(
            "One task's index: also return its stdout and stderr (the last max_bytes of each)"))] = None,
        max_bytes: Annotated[int | None, Field(ge=1, description="Most bytes of each output to return")] = None,
    ) -> dict[str, Any]:
        """The tasks of an array job (submit_job with `array`): each task's index, state,
        exit code and why it failed, with counts per state; or one task with its output."""
        caller = await caller_of(ctx, "array_tasks")
        if task is not None:
            limit = min(max_bytes or edge_settings.MCP_MAX_OUTPUT_BYTES, edge_settings.MCP_MAX_OUTPUT_BYTES)
            return await call(caller, edge, "psij", "GET", f"task/{{sid}}/{_seg(job_id)}/{task}",
                              query=_query(max_bytes=limit))
        answer = await call(caller, edge, "psij", "GET", f"tasks/{{sid}}/{_seg(job_id)}")
        counts: dict[str, int] = {}
        for item in answer.get("tasks", []):
            counts[item.get("state")] = counts.get(item.get("state"), 0) + 1
        return {**answer, "counts": counts}

    @server.tool(title="Retry an array's failed tasks", annotations=SUBMIT)
    async def retry_failed_tasks(
        edge: EdgeName, job_id: JobId, ctx: Context,
        idempotency_key: Annotated[str, Field(
            description="A fresh unique string for this retry; reuse it when retrying the call itself",
            min_length=1, max_length=255, pattern=r"^[!-~]+$")],
        tasks: Annotated[list[int] | None, Field(description="Only these task indices (default: every failed "
                                                             "or canceled task)")] = None,
    ) -> dict[str, Any]:
        """Submit an array's failed (and canceled) tasks again as a new array job; returns
        its job_id and the tasks it runs. Refused (nothing_to_retry) when none failed."""
        caller = await caller_of(ctx, "retry_failed_tasks")
        body = {"tasks": tasks} if tasks is not None else {}
        return await call(caller, edge, "psij", "POST", f"retry/{{sid}}/{_seg(job_id)}", body=body,
                          headers={"idempotency-key": idempotency_key})

    @server.tool(title="Run tasks and wait", annotations=RUN)
    async def run_tasks(
        edge: EdgeName,
        tasks: Annotated[list[TaskSpec], Field(min_length=1, description="The tasks to run")],
        ctx: Context,
        timeout: Annotated[float, Field(ge=0, description="Seconds to wait for them at most")] = 60.0,
        backend: Annotated[str, Field(description="rhapsody backend, e.g. concurrent or dask")] = "concurrent",
    ) -> dict[str, Any]:
        """Run a batch of small tasks (executables, shell command lines or registered
        functions) on an edge with rhapsody and wait for them, reporting progress as they
        finish. Returns each task's state (DONE, FAILED, CANCELED), exit_code, stdout,
        stderr and return_value; tasks still running at the timeout are cancelled and
        listed in still_running_cancelled."""
        caller = await caller_of(ctx, "run_tasks")
        if len(tasks) > edge_settings.MCP_MAX_TASKS:
            raise ToolError(f"too_many_tasks: at most {edge_settings.MCP_MAX_TASKS} tasks per call "
                            f"(MCP_MAX_TASKS); got {len(tasks)}")
        return await _run_tasks(caller, ctx, edge, tasks, min(timeout, edge_settings.MCP_MAX_WAIT), backend)

    @server.tool(title="Read from any plugin", annotations=READ)
    async def read_route(
        edge: EdgeName,
        plugin: Annotated[str, Field(description="Plugin name, from describe_edge")],
        route: Annotated[str, Field(description="A read-only route's path from describe_edge, values filled in; "
                                                "'{sid}' is replaced by your session")],
        ctx: Context,
        query: Annotated[dict[str, str] | None, Field(description="Query parameters")] = None,
    ) -> dict[str, Any]:
        """GET a read-only route of any plugin, including third-party plugins (see
        describe_edge for their routes). The plugin's JSON answer is in "answer"."""
        caller = await caller_of(ctx, "read_route")
        _check_plugin(plugin)
        await _require_read_only(caller, edge, plugin, route)
        return {"answer": await call(caller, edge, plugin, "GET", route, query=urlencode(query or {}))}

    @server.tool(title="Call any plugin route", annotations=CALL)
    async def call_route(
        edge: EdgeName,
        plugin: Annotated[str, Field(description="Plugin name, from describe_edge")],
        method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
        route: Annotated[str, Field(description="The route's path from describe_edge, values filled in; "
                                                "'{sid}' is replaced by your session")],
        ctx: Context,
        query: dict[str, str] | None = None,
        body: Annotated[Any, Field(description="JSON body")] = None,
    ) -> dict[str, Any]:
        """Call any route of any plugin (third-party plugins too), with the plugin's own
        rules; may change state on the edge. Prefer the specific tools where one exists.
        The plugin's JSON answer is in "answer"."""
        caller = await caller_of(ctx, "call_route")
        return {"answer": await call(caller, edge, plugin, method, route, query=urlencode(query or {}), body=body)}

    @server.tool(name=EXT_CALL, title="Call a third-party plugin's tool", annotations=CALL)
    async def ext_call(tool: str, ctx: Context, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        """Internal: carries out the generated tools of third-party plugins (ext.*)."""
        caller = await caller_of(ctx, tool)
        entry = (await plugin_tools(caller, hidden_names())).get(tool)
        if entry is None:
            raise ToolError(f"unknown_tool: no tool '{tool}' on your edges (list the tools again)")
        return await call_plugin_tool(caller, entry, arguments or {})


async def _run_tasks(caller: Caller, ctx: Context, edge: str, tasks: list[TaskSpec], timeout: float,
                     backend: str) -> dict[str, Any]:
    _check_plugin("rhapsody")
    descriptions = [t.model_dump(exclude_none=True) for t in tasks]
    # A session of its own: the tasks live in it, and it is closed when they are done.
    opened = await plugin_call(caller, edge, "rhapsody", "POST", "register_session", body={"backends": [backend]})
    sid = str(opened["sid"])
    try:
        submitted = await plugin_call(caller, edge, "rhapsody", "POST", f"submit/{sid}", body={"tasks": descriptions})
        uids = [t["uid"] for t in submitted]
        deadline = time.monotonic() + timeout
        results: dict[str, dict[str, Any]] = {}
        pending = list(uids)
        while True:
            piece = max(0.0, min(30.0, deadline - time.monotonic()))
            answer = await plugin_call(caller, edge, "rhapsody", "POST", f"wait/{sid}",
                                       body={"uids": pending, "timeout": piece}, timeout=piece + 15)
            results.update((t["uid"], t) for t in answer)
            pending = [t["uid"] for t in answer if t.get("state") not in TASK_FINAL]
            await ctx.report_progress(len(uids) - len(pending), len(uids), f"{len(uids) - len(pending)} of "
                                                                          f"{len(uids)} tasks final")
            if not pending or time.monotonic() >= deadline:
                break
        for uid in pending:
            try:
                await plugin_call(caller, edge, "rhapsody", "POST", f"cancel/{sid}/{uid}")
            except PluginError:
                pass
        keep = ("uid", "state", "exit_code", "stdout", "stderr", "return_value", "error")
        out = [{k: results[uid].get(k) for k in keep} for uid in uids]
        return {"tasks": out, "finished": not pending, "still_running_cancelled": pending}
    finally:
        try:
            await plugin_call(caller, edge, "rhapsody", "POST", f"unregister_session/{sid}")
        except PluginError:
            pass


async def _require_read_only(caller: Caller, edge: str, plugin: str, route: str) -> None:
    entry = await directory.edge(edge)
    found = entry.plugins.get(plugin) if entry is not None and entry.role_for(caller.principal) else None
    if found is None:
        return  # the proxy refuses it with its own words (unknown edge or plugin)
    try:
        matched, _ = found.router.match("GET", route.replace("{sid}", "x"))
    except (RouteNotFound, MethodNotAllowed):
        return
    if not matched.readonly:
        raise ToolError(f"not_read_only: GET {route} of plugin '{plugin}' is not a read-only route; "
                        "use call_route (needs a token and role that may change things)")


def _query(**params: Any) -> str:
    return urlencode({k: ("true" if v is True else v) for k, v in params.items() if v not in (None, False, "")})


def _seg(value: str) -> str:
    if "/" in value or value in (".", ".."):
        raise ToolError(f"bad_argument: {value!r} is not a job id")
    return value


@database_sync_to_async
def _edge_rows(user_id: int) -> list[dict[str, Any]]:
    from django.contrib.auth import get_user_model

    from ..domain.selectors import edge_list_for_user

    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return []
    return [{
        "name": e.name, "online": e.is_online and not e.suspended, "suspended": e.suspended, "host": e.host,
        "description": e.description, "agent_version": e.agent_version,
        "last_seen": e.last_seen.isoformat() if e.last_seen else None,
        "plugins": sorted(p.name for p in e.plugins.all()),
    } for e in edge_list_for_user(user=user).order_by("name")]


async def _edges_for(caller: Caller) -> list[dict[str, Any]]:
    rows = await _edge_rows(caller.principal.user_id)
    for row in rows:
        entry = await directory.edge(row["name"])
        row["role"] = entry.role_for(caller.principal) if entry is not None else None
        row["plugins"] = [p for p in row["plugins"] if not plugin_hidden(p)]
        if caller.principal.read_only and policy.may_write(row["role"]):
            row["token_read_only"] = True
    return rows


@database_sync_to_async
def _edge_detail(name: str) -> dict[str, Any] | None:
    from ..models import Edge

    edge = Edge.objects.filter(name=name).prefetch_related("plugins").first()
    if edge is None:
        return None
    return {
        "name": edge.name, "online": edge.is_online and not edge.suspended, "host": edge.host,
        "description": edge.description, "facts": edge.facts, "agent_version": edge.agent_version,
        "plugins": [{"name": p.name, "version": p.version, "description": p.description,
                     "routes": [{"method": r.get("method"), "path": r.get("path"), "read_only": bool(r.get("readonly"))}
                                for r in (p.routes or []) if isinstance(r, dict)]}
                    for p in edge.plugins.all() if not plugin_hidden(p.name)],
    }


async def _describe(caller: Caller, edge: str) -> dict[str, Any]:
    entry = await directory.edge(edge)
    role = entry.role_for(caller.principal) if entry is not None else None
    detail = await _edge_detail(edge) if role is not None else None
    if detail is None:
        # The proxy's words for unknown and forbidden alike, so names cannot be probed.
        raise PluginError(404, "unknown_edge", f"no edge named '{edge}'")
    return {**detail, "role": role}


# --- resources -----------------------------------------------------------------------------


def _register_resources(server: MCPServer) -> None:
    @server.resource("radical-edge://edges/{edge}", name="edge", title="An edge's description",
                     mime_type="application/json")
    async def edge_resource(edge: str, ctx: Context) -> dict[str, Any]:
        """Host facts, plugins and routes of an edge you may use."""
        caller = await caller_of(ctx, "resource:edge")
        return await _describe(caller, edge)

    @server.resource("radical-edge://jobs/{edge}/{job_id}", name="job", title="A job's status",
                     mime_type="application/json")
    async def job_resource(edge: str, job_id: str, ctx: Context) -> dict[str, Any]:
        """A batch job's state, exit code and history. Listen on it (subscriptions/listen)
        to be told when its state changes."""
        caller = await caller_of(ctx, "resource:job")
        return await call(caller, edge, "psij", "GET", f"status/{{sid}}/{_seg(job_id)}", query="output=false")

    @server.resource("radical-edge://jobs/{edge}/{job_id}/{stream}", name="job_output",
                     title="A job's output file", mime_type="text/plain")
    async def job_output_resource(edge: str, job_id: str, stream: str, ctx: Context) -> str:
        """The beginning of a job's stdout or stderr (at most MCP_MAX_OUTPUT_BYTES); use the
        job_output tool to page through larger files."""
        if stream not in ("stdout", "stderr"):
            raise ToolError("bad_argument: stream is stdout or stderr")
        caller = await caller_of(ctx, "resource:job_output")
        answer = await call(caller, edge, "psij", "GET", f"status/{{sid}}/{_seg(job_id)}",
                            query=_query(max_bytes=edge_settings.MCP_MAX_OUTPUT_BYTES))
        return str(answer.get(stream) or "")


# --- prompts -------------------------------------------------------------------------------


def _register_prompts(server: MCPServer) -> None:
    @server.prompt(title="Find a queue that can run this now")
    def find_queue(edge: str, nodes: str = "1", minutes: str = "30", gpus: str = "0") -> str:
        """Pick the partition where a job of this size can start at once."""
        return (
            f"On the edge '{edge}', find a queue that can start a job of {nodes} node(s) with {gpus} GPU(s) per "
            f"node for {minutes} minutes right now. Call list_queues (force=true for fresh data) and keep the "
            f"queues whose state is up, whose nodes_idle is at least {nodes}, whose gpus_per_node is at least "
            f"{gpus} and whose time_limit (minutes, or UNLIMITED) is at least {minutes}. Then call "
            "list_allocations to find an account to charge. Answer with the queue, the account and why; if no "
            "queue fits now, say which comes closest and what is missing."
        )

    @server.prompt(title="Submit a job and report its output")
    def run_job(edge: str, command: str, executor: str = "local") -> str:
        """Submit one job, wait for it and show its output."""
        return (
            f"Run `{command}` as a batch job on the edge '{edge}' with the {executor} executor: call submit_job "
            "(executable and arguments split from the command, a new UUID as idempotency_key, and the same key "
            "if you must retry), then wait_job until finished is true, then job_output for stdout (and stderr "
            "if the job failed). Report the state, exit code and output."
        )
