"""The MCP server end to end: a real bridge process and a real agent, driven by the
official MCP client SDK over Streamable HTTP (and through the stdio shim).

Everything a tool does must be what the token's user could do over REST, refused in the
same words, and in the audit trail with the MCP client named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

mcp = pytest.importorskip("mcp")

import httpx2  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp_types import Implementation  # noqa: E402

from tests.support.live import ROOT, start_all, wait_for  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

READ_TOOLS = {"list_edges", "describe_edge", "edge_status", "list_queues", "list_allocations", "job_status",
              "wait_job", "job_output", "list_jobs", "read_route", "array_tasks",
              # files (bridge_app/mcp/files.py; tests/test_mcp_files_e2e.py)
              "file_roots", "list_files", "stat_file", "read_file", "checksum_file", "find_files", "job_files"}
WRITE_TOOLS = {"submit_job", "cancel_job", "run_tasks", "call_route", "retry_failed_tasks",
               "write_file", "make_directory", "move_file", "copy_file", "delete_file"}
CLIENT = Implementation(name="pytest-assistant", version="9.9")


@asynccontextmanager
async def mcp_client(url: str, token: str | None, *, mode: str = "auto", progress=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, read=120)) as http:
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        async with Client(transport, client_info=CLIENT, mode=mode) as client:
            yield client


def structured(result) -> dict:
    assert not result.is_error, result.content
    data = result.structured_content
    if isinstance(data, dict) and set(data) == {"result"}:
        data = data["result"]
    return data


def error_text(result) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


def audit_rows(bridge, edge: str) -> list[dict]:
    out = bridge.manage("shell", "-c", (
        "import json; from bridge_app.observability import audit; from bridge_app.models import CallRecord as C; "
        f"print(json.dumps(list(C.objects.filter(edge={edge!r}).order_by('id')"
        ".values('username', 'plugin', 'method', 'path', 'status', 'client'))))"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def test_tools_answer_for_real_and_are_audited_with_the_mcp_client(edge_setup):
    s = edge_setup(plugins="sysinfo,psij,tests.plugins.echo:EchoPlugin", options=["psij.poll_interval=1"])
    key = uuid.uuid4().hex

    async def session():
        async with mcp_client(s.bridge.url, s.token) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) >= READ_TOOLS | WRITE_TOOLS
            submit = tools["submit_job"]
            assert submit.title and submit.description and "idempotency_key" in submit.input_schema["required"]
            assert submit.annotations.read_only_hint is False and submit.annotations.idempotent_hint is True
            assert tools["cancel_job"].annotations.destructive_hint is True
            assert tools["edge_status"].annotations.read_only_hint is True

            edges = structured(await client.call_tool("list_edges", {}))["edges"]
            mine = next(e for e in edges if e["name"] == s.edge)
            assert mine["online"] is True and mine["role"] == "owner" and "psij" in mine["plugins"]

            status = structured(await client.call_tool("edge_status", {"edge": s.edge}))
            assert status["system"]["hostname"] and status["cpu"]["cores_logical"] >= 1

            spec = {"edge": s.edge, "executable": "/bin/sh", "arguments": ["-c", "echo hello mcp; echo oops >&2"],
                    "idempotency_key": key}
            job = structured(await client.call_tool("submit_job", spec))
            assert job["replayed"] is False and job["job_id"]
            again = structured(await client.call_tool("submit_job", spec))
            assert again["job_id"] == job["job_id"] and again["replayed"] is True

            done = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": job["job_id"],
                                                                  "timeout": 60}))
            assert done["finished"] is True and done["state"] == "COMPLETED" and done["exit_code"] == 0
            out = structured(await client.call_tool("job_output", {"edge": s.edge, "job_id": job["job_id"]}))
            assert out["text"] == "hello mcp\n" and out["next_offset"] == len("hello mcp\n")
            tail = structured(await client.call_tool("job_output", {"edge": s.edge, "job_id": job["job_id"],
                                                                    "tail": 4}))
            assert tail["text"] == "mcp\n"
            rest = structured(await client.call_tool("job_output", {"edge": s.edge, "job_id": job["job_id"],
                                                                    "offset": out["next_offset"]}))
            assert rest["text"] == "" and rest["truncated"] is False
            err = structured(await client.call_tool("job_output", {"edge": s.edge, "job_id": job["job_id"],
                                                                   "stream": "stderr"}))
            assert err["text"] == "oops\n"

            long = structured(await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sleep", "arguments": ["300"], "idempotency_key": key + "-2"}))
            for _ in range(200):
                st = structured(await client.call_tool("job_status", {"edge": s.edge, "job_id": long["job_id"]}))
                if st["state"] == "ACTIVE":
                    break
                await anyio.sleep(0.1)
            cancelled = structured(await client.call_tool("cancel_job", {"edge": s.edge, "job_id": long["job_id"]}))
            assert cancelled["job_id"] == long["job_id"]
            final = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": long["job_id"],
                                                                   "timeout": 60}))
            assert final["state"] == "CANCELED"

            # Errors a model can act on, not stack traces.
            bad = error_text(await client.call_tool("job_status", {"edge": s.edge, "job_id": "no-such-job"}))
            assert "404" in bad
            bad = error_text(await client.call_tool("edge_status", {"edge": "no-such-edge"}))
            assert "unknown_edge" in bad and "no-such-edge" in bad
            bad = error_text(await client.call_tool("submit_job", {"edge": s.edge, "executable": "/bin/true"}))
            assert "idempotency_key" in bad

            # A third-party plugin through the generic tools.
            described = structured(await client.call_tool("describe_edge", {"edge": s.edge}))
            assert "echo" in {p["name"] for p in described["plugins"]}
            who = structured(await client.call_tool("read_route", {"edge": s.edge, "plugin": "echo",
                                                                   "route": "whoami", "query": {"q": "hi"}}))["answer"]
            assert who["caller"]["user"] == "owner" and who["query"] == "q=hi"
            bad = error_text(await client.call_tool("read_route", {"edge": s.edge, "plugin": "echo",
                                                                   "route": "echo"}))
            assert "method_not_allowed" in bad and "POST" in bad

            # ... and as tools of their own, generated from the routes the agent announced.
            whoami = tools.get("ext.echo.get.whoami")
            assert whoami is not None and whoami.annotations.read_only_hint is True
            assert whoami.input_schema["properties"]["edge"]["enum"] == [s.edge]
            assert tools["ext.echo.post.echo"].annotations.read_only_hint is False
            assert tools["ext.echo.get.sleep.seconds"].input_schema["required"] == ["edge", "seconds"]
            assert "ext_call" not in tools
            who = structured(await client.call_tool("ext.echo.get.whoami", {"edge": s.edge, "query": {"q": "x"}}))
            assert who["answer"]["caller"]["user"] == "owner" and who["answer"]["query"] == "q=x"
            echoed = structured(await client.call_tool("ext.echo.post.echo", {"edge": s.edge, "body": {"a": [1]}}))
            assert echoed["answer"] == {"a": [1]}
            bad = error_text(await client.call_tool("ext.echo.get.sleep.seconds", {"edge": s.edge}))
            assert "bad_argument" in bad and "seconds" in bad
            bad = error_text(await client.call_tool("ext.echo.get.whoami", {"edge": "not-an-edge-of-mine"}))
            assert "bad_argument" in bad and "edge" in bad

            # Resources and prompts.
            text = await client.read_resource(f"radical-edge://jobs/{s.edge}/{job['job_id']}/stdout")
            assert text.contents[0].text == "hello mcp\n"
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            assert {"find_queue", "run_job"} <= prompts
            prompt = await client.get_prompt("find_queue", {"edge": s.edge, "nodes": "2"})
            assert "list_queues" in prompt.messages[0].content.text

    run(session)

    def audited():
        rows = audit_rows(s.bridge, s.edge)
        return rows if any("tool=cancel_job" in r["client"] for r in rows) else None

    rows = wait_for(audited, 20, what="MCP calls in the audit trail")
    # Two jobs and one replayed submit.
    submits = [r for r in rows if "tool=submit_job" in r["client"] and r["path"].startswith("submit/")]
    assert len(submits) == 3 and all(r["username"] == "owner" and r["method"] == "POST" for r in submits)
    assert all(r["client"].startswith("mcp pytest-assistant 9.9 tool=") for r in rows if r["client"])
    assert any(r["client"].endswith("tool=edge_status") and r["plugin"] == "sysinfo" for r in rows)
    assert any(r["client"].endswith("tool=ext.echo.get.whoami") and r["path"] == "whoami" for r in rows)


def test_read_only_tokens_viewers_and_strangers_are_refused_as_over_rest(edge_setup):
    s = edge_setup(plugins="sysinfo,psij", options=["psij.poll_interval=1"])
    s.bridge.seed(users=["viewer", "stranger"])
    s.bridge.manage("edge_grant", s.edge, "viewer", "viewer")
    tokens = {"read_only": s.bridge.api_token("owner", "--read-only"), "viewer": s.bridge.api_token("viewer"),
              "stranger": s.bridge.api_token("stranger")}
    s.bridge.wait_edge_visible(tokens["viewer"], s.edge)
    spec = {"job_spec": {"executable": "/bin/true"}, "executor": "local"}

    def rest_submit(token: str) -> tuple[int, dict]:
        with s.bridge.client(token) as c:
            sid = c.post(f"/{s.edge}/psij/register_session")
            if sid.status_code != 200:
                return sid.status_code, sid.json()
            r = c.post(f"/{s.edge}/psij/submit/{sid.json()['sid']}", json=spec, headers={"Idempotency-Key": "k1"})
            return r.status_code, r.json()

    async def session(who: str):
        async with mcp_client(s.bridge.url, tokens[who]) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            edges = structured(await client.call_tool("list_edges", {}))["edges"]
            submit = await client.call_tool("submit_job", {"edge": s.edge, "executable": "/bin/true",
                                                           "idempotency_key": "k1"})
            status = await client.call_tool("edge_status", {"edge": s.edge})
            return names, edges, submit, status

    names, edges, submit, status = run(session, "read_only")
    assert names == READ_TOOLS  # a read-only token is shown only the read tools
    assert [e["name"] for e in edges] == [s.edge]
    code, body = rest_submit(tokens["read_only"])
    assert code == 403 and body["detail"] in error_text(submit)
    assert structured(status)["system"]["hostname"]

    names, edges, submit, status = run(session, "viewer")
    assert names >= WRITE_TOOLS and edges[0]["role"] == "viewer"
    code, body = rest_submit(tokens["viewer"])
    assert code == 403 and body["error"] in error_text(submit) and body["detail"] in error_text(submit)
    assert structured(status)["system"]["hostname"]  # a viewer may read

    names, edges, submit, status = run(session, "stranger")
    assert edges == []  # sees none of another user's edges
    code, body = rest_submit(tokens["stranger"])
    assert code == 404 and body["detail"] in error_text(submit) and body["detail"] in error_text(status)


def test_mcp_needs_a_valid_token_and_publishes_its_protected_resource_metadata(bridge_factory, agent_factory,
                                                                               unique_name):
    bridge = bridge_factory(env={"RADICAL_AUTH_FAILURE_BURST": "3", "RADICAL_AUTH_FAILURE_RATE": "0.001",
                                 "RADICAL_CORS_ALLOWED_ORIGINS": "https://app.example"})
    seeded = bridge.seed(users=["owner"], api_tokens=["owner"], edge_tokens=[(unique_name, "owner")])
    token = seeded["api"]["owner"]
    agent_factory(bridge, seeded["edge"][unique_name], plugins="sysinfo")
    wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
    s = type("S", (), {"bridge": bridge, "token": token, "edge": unique_name})
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    r = httpx.post(f"{s.bridge.url}/mcp", json=listing, headers={"user-agent": "no-token-client"})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
    meta_url = challenge.split('resource_metadata="')[1].split('"')[0]
    assert meta_url == f"{s.bridge.url}/.well-known/oauth-protected-resource/mcp"
    meta = httpx.get(meta_url).json()
    assert meta["resource"] == f"{s.bridge.url}/mcp" and meta["bearer_methods_supported"] == ["header"]
    assert meta["authorization_servers"] == [s.bridge.url]

    # Browser-based clients of a listed origin may call it (and read the challenge).
    pre = httpx.options(f"{s.bridge.url}/mcp", headers={"Origin": "https://app.example",
                                                       "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in pre.headers["access-control-allow-headers"]
    r = httpx.post(f"{s.bridge.url}/mcp", json=listing, headers={"Origin": "https://app.example"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert "www-authenticate" in r.headers["access-control-expose-headers"]
    other = httpx.options(f"{s.bridge.url}/mcp", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers

    async def legacy():  # the initialize handshake (clients of earlier protocol versions) works too
        async with mcp_client(s.bridge.url, s.token, mode="legacy") as client:
            return structured(await client.call_tool("list_edges", {}))["edges"]

    assert [e["name"] for e in run(legacy)] == [s.edge]

    # Guessing tokens is slowed as on the proxy: after the burst, 429 before any lookup.
    codes = [httpx.post(f"{s.bridge.url}/mcp", json=listing, headers={"Authorization": f"Bearer rda_guess{i}"})
             .status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    # Refusals are in the audit trail, as the proxy's are.
    def refusals():
        out = s.bridge.manage("shell", "-c", (
            "import json; from bridge_app.models import CallRecord as C; "
            "print(json.dumps(sorted(C.objects.filter(client__startswith='mcp ', edge='')"
            ".values_list('status', flat=True))))"))
        statuses = json.loads(out.stdout.strip().splitlines()[-1])
        return statuses if len(statuses) >= 6 else None

    assert wait_for(refusals, 20, what="refusals audited") == [401, 401, 401, 401, 401, 429]


def test_stdio_shim_and_the_example_session_work_end_to_end(edge_setup, tmp_path):
    from mcp import StdioServerParameters

    s = edge_setup(plugins="sysinfo,psij", options=["psij.poll_interval=1"])  # local jobs, Slurm or not
    token_file = tmp_path / "api.token"
    token_file.write_text(s.token + "\n")
    token_file.chmod(0o600)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-c", "import sys; from edge_agent.cli import tool_main; sys.exit(tool_main())",
              "mcp", "--url", s.bridge.url, "--token-file", str(token_file)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))

    async def session():
        async with Client(params, client_info=Implementation(name="stdio-assistant", version="1.0")) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            status = structured(await client.call_tool("edge_status", {"edge": s.edge}))
            missing = await client.call_tool("edge_status", {"edge": "nope"})
            return names, status, missing

    names, status, missing = run(session)

    # The scripted assistant session of examples/ (MCP only), as a user runs it.
    env = {**os.environ, "RADICAL_BRIDGE_URL": s.bridge.url, "RADICAL_API_TOKEN": s.token, "PYTHONPATH": str(ROOT)}
    script = subprocess.run([sys.executable, str(ROOT / "examples" / "mcp_assistant_session.py"), s.edge, "--",
                             "/bin/echo", "from the example"], env=env, capture_output=True, text=True, timeout=120)
    assert script.returncode == 0, script.stderr
    assert "COMPLETED exit code 0" in script.stdout and script.stdout.endswith("from the example\n")
    assert names >= READ_TOOLS | WRITE_TOOLS
    assert status["system"]["hostname"]
    assert "unknown_edge" in error_text(missing)

    def audited():
        rows = audit_rows(s.bridge, s.edge)
        return [r for r in rows if r["client"].endswith("tool=edge_status")] or None

    rows = wait_for(audited, 20, what="the shim's call in the audit trail")
    assert "stdio-assistant" in rows[0]["client"]


@pytest.mark.redis
@pytest.mark.postgres
def test_scaled_mode_serves_mcp_from_either_process(bridge_factory, agent_factory, unique_name):
    first, second = start_all([bridge_factory("scaled", start=False), bridge_factory("scaled", start=False)])
    # A user of its own: the scaled database is shared by the session's tests, which count
    # the edges their "owner" has.
    owner = f"o-{unique_name}"
    seeded = first.seed(users=[owner], api_tokens=[owner], edge_tokens=[(unique_name, owner)])
    token = seeded["api"][owner]
    agent_factory(first, seeded["edge"][unique_name], plugins="sysinfo,psij", options=["psij.poll_interval=1"])
    wait_for(lambda: second.edge_online(token, unique_name), 30, what="edge online")
    key = uuid.uuid4().hex

    async def on(bridge, submit: bool):
        async with mcp_client(bridge.url, token) as client:
            status = structured(await client.call_tool("edge_status", {"edge": unique_name}))
            job = None
            if submit:
                job = structured(await client.call_tool("submit_job", {
                    "edge": unique_name, "executable": "/bin/echo", "arguments": ["scaled"],
                    "idempotency_key": key}))
            return status, job

    status_second, job = run(on, second, True)  # the edge's socket is held by the first process
    assert status_second["system"]["hostname"] and job["replayed"] is False
    status_first, _ = run(on, first, False)
    assert status_first["system"]["hostname"] == status_second["system"]["hostname"]

    async def follow(bridge):
        async with mcp_client(bridge.url, token) as client:
            again = structured(await client.call_tool("submit_job", {
                "edge": unique_name, "executable": "/bin/echo", "arguments": ["scaled"], "idempotency_key": key}))
            done = structured(await client.call_tool("wait_job", {"edge": unique_name, "job_id": again["job_id"],
                                                                  "timeout": 60}))
            out = structured(await client.call_tool("job_output", {"edge": unique_name, "job_id": again["job_id"]}))
            return again, done, out

    again, done, out = run(follow, first)
    assert again["job_id"] == job["job_id"] and again["replayed"] is True
    assert done["state"] == "COMPLETED" and out["text"] == "scaled\n"


def test_run_tasks_waits_with_progress_and_wait_job_reports_progress(edge_setup):
    s = edge_setup(plugins="rhapsody,psij", options=["psij.poll_interval=1"])
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total, message))

    async def session():
        async with mcp_client(s.bridge.url, s.token) as client:
            ran = structured(await client.call_tool("run_tasks", {"edge": s.edge, "timeout": 60, "tasks": [
                {"executable": "/bin/echo", "arguments": ["one"]},
                {"executable": "echo two; exit 3", "shell": True},
                {"function": "add", "args": [2, 3]},
            ]}, progress_callback=progress))
            task_progress = list(seen)
            seen.clear()
            job = structured(await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sleep", "arguments": ["1"], "idempotency_key": uuid.uuid4().hex}))
            done = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": job["job_id"],
                                                                  "timeout": 60}, progress_callback=progress))
            too_many = await client.call_tool("run_tasks", {"edge": s.edge,
                                                            "tasks": [{"executable": "/bin/true"}] * 101})
            return ran, task_progress, done, list(seen), too_many

    ran, task_progress, done, job_progress, too_many = run(session)
    assert ran["finished"] is True and ran["still_running_cancelled"] == []
    one, two, add = ran["tasks"]
    assert (one["state"], one["stdout"]) == ("DONE", "one\n")
    assert (two["state"], two["exit_code"], two["stdout"]) == ("FAILED", 3, "two\n")
    assert (add["state"], add["return_value"]) == ("DONE", 5)
    assert task_progress and task_progress[-1][:2] == (3, 3)
    assert done["state"] == "COMPLETED" and job_progress[-1][2].endswith("COMPLETED")
    assert "too_many_tasks" in error_text(too_many) and "100" in error_text(too_many)


def test_an_admin_can_hide_tools_and_plugins_from_mcp(bridge_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_MCP_HIDDEN": "call_route,plugin:sysinfo"})
    token = bridge.seed(users=["owner"], api_tokens=["owner"], edge_tokens=[(unique_name, "owner")])["api"]["owner"]

    async def session():
        async with mcp_client(bridge.url, token) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            hidden = await client.call_tool("edge_status", {"edge": unique_name})
            return names, hidden

    names, hidden = run(session)
    assert "call_route" not in names and "submit_job" in names
    assert "plugin_hidden" in error_text(hidden) and "sysinfo" in error_text(hidden)


def test_tool_calls_are_rate_limited_like_rest_calls(bridge_factory, agent_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_USER_RATE": "0.001", "RADICAL_USER_BURST": "3"})
    seeded = bridge.seed(users=["owner"], api_tokens=["owner"], edge_tokens=[(unique_name, "owner")])
    token = seeded["api"]["owner"]
    agent_factory(bridge, seeded["edge"][unique_name], plugins="sysinfo")
    wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")

    async def session():
        async with mcp_client(bridge.url, token) as client:
            # register_session + metrics, then metrics: the burst of three is spent.
            first = await client.call_tool("edge_status", {"edge": unique_name})
            second = await client.call_tool("edge_status", {"edge": unique_name})
            third = await client.call_tool("edge_status", {"edge": unique_name})
            return first, second, third

    first, second, third = run(session)
    assert structured(first)["system"] and structured(second)["system"]
    assert "rate_limited" in error_text(third) and "429" in error_text(third)
    with bridge.client(token) as c:
        assert c.get(f"/{unique_name}/sysinfo/health").status_code == 429


@pytest.mark.slurm
def test_an_assistant_finds_a_free_queue_and_runs_a_slurm_job(edge_setup):
    from tests.fixtures.psij.harness import slurm_running

    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)
    s = edge_setup(plugins="psij,queue_info", options=["psij.poll_interval=1"])

    async def session():
        async with mcp_client(s.bridge.url, s.token) as client:
            queues = structured(await client.call_tool("list_queues", {"edge": s.edge, "force": True}))["queues"]
            assert {"debug", "batch"} <= {q["name"] for q in queues}
            # Most idle nodes first (the node may be busy with other tests' jobs: then it waits).
            assert [q["nodes_idle"] for q in queues] == sorted((q["nodes_idle"] for q in queues), reverse=True)
            queue = queues[0]["name"]
            prompt = await client.get_prompt("find_queue", {"edge": s.edge})
            job = structured(await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sh", "arguments": ["-c", "echo on $SLURM_JOB_PARTITION"],
                "executor": "slurm", "attributes": {"queue_name": queue, "duration": 60},
                "idempotency_key": uuid.uuid4().hex}))
            done = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": job["job_id"],
                                                                  "timeout": 240}))
            if not done["finished"]:
                await client.call_tool("cancel_job", {"edge": s.edge, "job_id": job["job_id"]})
            out = structured(await client.call_tool("job_output", {"edge": s.edge, "job_id": job["job_id"]}))
            bad = await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/true", "executor": "slurm",
                "attributes": {"queue_name": "nosuch"}, "idempotency_key": uuid.uuid4().hex})
            # A job array of three tasks, task 1 failing; then its failed task again.
            array = structured(await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sh", "executor": "slurm", "array": "0-2",
                "arguments": ["-c", "echo task $SLURM_ARRAY_TASK_ID; test $SLURM_ARRAY_TASK_ID != 1"],
                "attributes": {"queue_name": queue, "duration": 60}, "idempotency_key": uuid.uuid4().hex}))
            array_done = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": array["job_id"],
                                                                        "timeout": 240}))
            tasks = structured(await client.call_tool("array_tasks", {"edge": s.edge, "job_id": array["job_id"]}))
            for _ in range(30):  # the tasks' states follow the array's own poll
                if sum(tasks["counts"].values()) == 3 and not {"QUEUED", "ACTIVE", "NEW"} & set(tasks["counts"]):
                    break
                await anyio.sleep(1)
                tasks = structured(await client.call_tool("array_tasks", {"edge": s.edge,
                                                                          "job_id": array["job_id"]}))
            task0 = structured(await client.call_tool("array_tasks", {"edge": s.edge, "job_id": array["job_id"],
                                                                      "task": 0}))
            retry = structured(await client.call_tool("retry_failed_tasks", {
                "edge": s.edge, "job_id": array["job_id"], "idempotency_key": uuid.uuid4().hex}))
            await client.call_tool("cancel_job", {"edge": s.edge, "job_id": retry["job_id"]})
            bad_array = await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/true", "executor": "slurm", "array": "5-1",
                "idempotency_key": uuid.uuid4().hex})
            return queue, prompt, done, out, bad, (array, array_done, tasks, task0, retry, bad_array)

    queue, prompt, done, out, bad, (array, array_done, tasks, task0, retry, bad_array) = run(session)
    assert "list_queues" in prompt.messages[0].content.text
    assert (done["state"], done["exit_code"], out["text"]) == ("COMPLETED", 0, f"on {queue}\n")
    assert "invalid partition" in error_text(bad).lower()  # the scheduler's words reach the model
    assert array_done["finished"], array_done
    assert tasks["counts"] == {"COMPLETED": 2, "FAILED": 1}, tasks
    assert {t["index"]: t["state"] for t in tasks["tasks"]} == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED"}
    assert task0["stdout"] == "task 0\n", task0
    assert retry["retry_of"] == array["job_id"] and retry["tasks"] == [1], retry
    assert "a range goes up" in error_text(bad_array)


def test_job_state_changes_arrive_as_resource_updates(edge_setup):
    s = edge_setup(plugins="psij", options=["psij.poll_interval=1"])
    s.bridge.seed(users=["viewer"])
    s.bridge.manage("edge_grant", s.edge, "viewer", "viewer")
    viewer_token = s.bridge.api_token("viewer")
    s.bridge.wait_edge_visible(viewer_token, s.edge)

    async def session():
        async with mcp_client(s.bridge.url, s.token) as owner, mcp_client(s.bridge.url, viewer_token) as viewer:
            job = structured(await owner.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sleep", "arguments": ["1"], "idempotency_key": uuid.uuid4().hex}))
            uri = f"radical-edge://jobs/{s.edge}/{job['job_id']}"
            seen_by_viewer: list = []

            async def viewer_listens(sub) -> None:
                async for event in sub:
                    seen_by_viewer.append(event)

            async with owner.listen(resource_subscriptions=[uri]) as sub, \
                    viewer.listen(resource_subscriptions=[uri]) as viewer_sub, anyio.create_task_group() as tg:
                tg.start_soon(viewer_listens, viewer_sub)
                states = []
                async for event in sub:
                    assert event.uri == uri
                    read = await owner.read_resource(uri)
                    states.append(json.loads(read.contents[0].text)["state"])
                    if states[-1] == "COMPLETED":
                        break
                tg.cancel_scope.cancel()
            return states, seen_by_viewer

    states, seen_by_viewer = run(session)
    assert states[-1] == "COMPLETED"
    assert seen_by_viewer == []  # another user's job: the viewer may not follow it
