"""Soak with faults: a scaled-out site under load while its processes die (run by hand).

    python -m bench.soak_faults --minutes 75 [--seed N] [--bridges 3] [--agents 3] [--interval 5]

Builds a site of its own on 127.0.0.1: a private Redis (``redis-server`` child process) and a
private PostgreSQL cluster (``initdb`` into a temporary directory, run as the ``postgres``
user), ``--bridges`` bridge processes (``radical-edge-bridge``, uvicorn) on them behind the
test load balancer (``tests/support/lb.py``), and ``--agents`` real agents dialing through the
balancer, each with sysinfo, psij (local executor), rhapsody (concurrent backend) and the echo
test plugin. The machine's shared PostgreSQL and Redis are never touched.

For the whole run, at once:

* cheap calls (sysinfo version, echo ping and echo bodies, checked) from a few clients;
* psij jobs: submitted with an idempotency key (a submit without an answer is repeated with
  the same key), followed until final, their output checked;
* rhapsody batches (executables and functions), waited for and checked;
* numbered events: ``echo/emit/{n}?tag=T`` every two seconds on every edge;
* SSE subscribers on ``GET /events`` that resume with ``Last-Event-ID`` whenever their stream
  ends (and now and then on purpose).

Clients call the bridge processes directly, spread round-robin (a refused connection goes to
the next process), so that every answer is known to come from one process; every call
carries an ``X-Request-ID``. Meanwhile, at random (seeded; the seed is printed) every
``--fault-gap`` seconds one fault: a bridge process killed with SIGKILL or stopped with
SIGTERM and started again on the same port, an agent killed with SIGKILL and started again,
Redis restarted, PostgreSQL restarted. ``--stable`` bridge processes (default 1) are never
killed, so that one memory curve spans the whole run.

Every ``--interval`` minutes a row: calls, errors, latency, faults, jobs, tasks, events and
audit records checked so far, RSS of each bridge process. At the end (also on SIGINT or
SIGTERM, with what was gathered): every lost job record (accepted but never found final),
every lost event (emitted by an agent, according to its answer, against what ``EventRecord``
holds and what each resuming subscriber received), every lost audit record (calls answered
with an ``X-Request-ID`` against ``CallRecord`` after the bridges were stopped gracefully),
errors by kind (HTTP status and error code, or the client's exception) inside and outside
fault windows, and RSS per process over time with its slope per hour. Each loss is set beside
the faults that may explain it (a process killed with SIGKILL loses what it buffered); a loss
no fault explains is a bug. Logs of every process are kept in ``--out`` (default
``bench/results/soak-faults-<time>/``) with ``report.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.proxy import rss_mb
from tests.support.lb import TcpBalancer
from tests.support.live import AgentProcess, LiveBridge, wait_for
from tests.support.services import PrivatePostgres, PrivateRedis

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = "sysinfo,psij,rhapsody,tests.plugins.echo:EchoPlugin"
FINAL_JOB_STATES = {"COMPLETED", "FAILED", "CANCELED"}
FINAL_TASK_STATES = {"DONE", "FAILED", "CANCELED"}
FAULT_KINDS = {"bridge_kill": 3, "bridge_term": 2, "agent_kill": 2, "redis_restart": 1, "pg_restart": 1}
# Seconds after a fault ends during which errors still count as "in a fault window".
FAULT_TAIL = 15.0
# A process killed with SIGKILL loses the audit records it buffered: written every 30 s.
AUDIT_BUFFER_SECONDS = 30.0
# ... and the events it buffered or that were still on their way to it.
EVENT_KILL_WINDOW = 5.0


def now() -> float:
    return time.time()


def hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


# -- records ------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    rid: str
    what: str  # e.g. "echo/ping"
    edge: str
    port: int
    t0: float
    t1: float = 0.0
    status: int = 0  # 0: no HTTP answer
    error: str = ""  # the bridge's error code, or the client's exception


@dataclass
class Fault:
    kind: str
    target: str
    t0: float
    t1: float = 0.0
    detail: str = ""
    held: list[str] = field(default_factory=list)  # edges a killed bridge process held


@dataclass
class Emit:
    tag: str
    edge: str
    n: int
    t: float
    answered: bool  # the agent said it emitted n events


@dataclass
class Job:
    key: str
    edge: str
    t_submit: float
    job_id: str = ""
    state: str = ""
    exit_code: int | None = None
    message: str = ""
    output_ok: bool = False
    t_final: float = 0.0
    submit_error: str = ""


@dataclass
class Batch:
    edge: str
    t: float
    uids: list[str]
    final: dict[str, str] = field(default_factory=dict)  # uid -> state
    bad: list[str] = field(default_factory=list)  # tasks whose result was wrong
    lost_reason: str = ""  # why the rest never came back


@dataclass
class Subscriber:
    name: str
    connects: int = 0
    ended_by_server: int = 0
    resumed_on_purpose: int = 0
    first_high: int | None = None  # the high-water mark of its first stream
    last_id: int = 0
    ids: set[int] = field(default_factory=set)
    duplicates: int = 0
    out_of_order: int = 0
    ticks: set[tuple[str, int]] = field(default_factory=set)
    refusals: collections.Counter = field(default_factory=collections.Counter)


class Ledger:
    """Everything the soak saw, in memory (a 75-minute run keeps ~100k calls)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.emits: list[Emit] = []
        self.jobs: list[Job] = []
        self.batches: list[Batch] = []
        self.subs: list[Subscriber] = []
        self.rss: dict[str, list[tuple[float, int, float]]] = collections.defaultdict(list)  # name -> (t, pid, MB)
        self.failovers = 0
        self.started = now()
        self.bridge_starts: dict[int, list[float]] = collections.defaultdict(list)  # port -> start times
        self.agent_starts: dict[str, list[float]] = collections.defaultdict(list)


# -- the site -------------------------------------------------------------------------------


class Site:
    def __init__(self, out: Path, n_bridges: int, n_agents: int, stable: int) -> None:
        self.out = out
        self.redis = PrivateRedis()
        self.pg = PrivatePostgres()
        self.db_url = f"postgresql://postgres@127.0.0.1:{self.pg.port}/radical_soak"
        self.env = {
            "DATABASE_URL": self.db_url, "REDIS_URL": self.redis.url,
            "DJANGO_SECRET_KEY": "soak-" + "x" * 60,
            "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0", "RADICAL_LOG_LEVEL": "INFO",
        }
        self.bridges = [LiveBridge(out / f"bridge{i}", env=self.env) for i in range(n_bridges)]
        self.stable = {b.port for b in self.bridges[:stable]}
        self.edges = [f"soak{i}" for i in range(n_agents)]
        self.agents: dict[str, AgentProcess] = {}
        self.lb: TcpBalancer | None = None
        self.token = ""
        self.uid: int | None = None

    def start(self, ledger: Ledger) -> None:
        self.redis.start()
        self.pg.init().start()
        self.pg.wait_ready()
        import psycopg

        with psycopg.connect(self.pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE radical_soak")
        first = self.bridges[0]
        first.migrate()
        seeded = first.seed(users=["soak"], api_tokens=["soak"], edge_tokens=[(e, "soak") for e in self.edges])
        self.token = seeded["api"]["soak"]
        with psycopg.connect(self.db_url) as conn:
            self.uid = conn.execute("SELECT id FROM auth_user WHERE username = 'soak'").fetchone()[0]
        threads = [threading.Thread(target=b.start) for b in self.bridges]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for b in self.bridges:
            ledger.bridge_starts[b.port].append(now())
        self.lb = TcpBalancer([b.port for b in self.bridges]).start()
        for edge in self.edges:
            agent = AgentProcess(self.lb.url, seeded["edge"][edge], self.out, plugins=PLUGINS,
                                 options=["psij.poll_interval=1"])
            agent.cmd.remove("-v")  # INFO, not DEBUG: the logs of a long run stay small
            self.agents[edge] = agent.start()
            ledger.agent_starts[edge].append(now())
        wait_for(lambda: all(self.edge_online(e) for e in self.edges), 60, interval=0.5, what="all edges online")

    def edge_online(self, edge: str) -> bool:
        for b in self.bridges:
            if b.proc is not None and b.proc.poll() is None:
                try:
                    return b.edge_online(self.token, edge)
                except httpx.HTTPError:
                    continue
        return False

    def holder(self, bridge: LiveBridge) -> list[str]:
        """Edges whose socket this bridge process's log says it holds now."""
        log = bridge.log()
        return [e for e in self.edges if log.rfind(f"edge {e} connected") > log.rfind(f"edge {e} disconnected")]

    def alive(self) -> list[int]:
        return [b.port for b in self.bridges if b.proc is not None and b.proc.poll() is None]

    def stop(self) -> None:
        for agent in self.agents.values():
            with contextlib.suppress(Exception):
                agent.stop(timeout=15)
        for b in self.bridges:
            with contextlib.suppress(Exception):
                b.stop(timeout=40)
        if self.lb is not None:
            with contextlib.suppress(Exception):
                self.lb.stop()
        with contextlib.suppress(Exception):
            self.redis.stop()
        with contextlib.suppress(Exception):
            shutil.copyfile(self.pg.dir / "log", self.out / "postgres.log")
        with contextlib.suppress(Exception):
            self.pg.destroy()


# -- the client side ------------------------------------------------------------------------


class Api:
    """Calls spread over the bridge processes; a refused connection tries the next one."""

    def __init__(self, site: Site, ledger: Ledger, run: str) -> None:
        self.site = site
        self.ledger = ledger
        self.run = run
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self.client = httpx.AsyncClient(headers={"Authorization": f"Bearer {site.token}"}, timeout=75,
                                        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))

    def ports(self) -> list[int]:
        ports = [b.port for b in self.site.bridges]
        start = next(self._rr) % len(ports)
        return ports[start:] + ports[:start]

    async def call(self, method: str, edge: str, path: str, *, json_body: Any = None, content: bytes | None = None,
                   params: dict | None = None, timeout: float = 75.0,
                   headers: dict | None = None) -> tuple[Call, Any]:
        """One proxied call; returns its record and the decoded JSON (or bytes) answer."""
        rid = f"sk{self.run}-{next(self._ids)}"
        hdrs = {"X-Request-ID": rid, **(headers or {})}
        what = "/".join(path.split("/")[:2])
        ports = self.ports()
        for i, port in enumerate(ports):
            call = Call(rid, what, edge, port, now())
            try:
                r = await self.client.request(method, f"http://127.0.0.1:{port}/{edge}/{path}", json=json_body,
                                              content=content, params=params, headers=hdrs, timeout=timeout)
            except httpx.ConnectError:
                if i + 1 < len(ports):
                    self.ledger.failovers += 1
                    continue  # never reached that process: safe to send elsewhere
                call.t1, call.error = now(), "client:ConnectError"
                self.ledger.calls.append(call)
                return call, None
            except httpx.HTTPError as exc:
                call.t1, call.error = now(), f"client:{type(exc).__name__}"
                self.ledger.calls.append(call)
                return call, None
            call.t1, call.status = now(), r.status_code
            body: Any = r.content
            if r.headers.get("content-type", "").startswith("application/json"):
                with contextlib.suppress(ValueError):
                    body = r.json()
            if r.status_code >= 400:
                call.error = body.get("error", "?") if isinstance(body, dict) else "?"
            self.ledger.calls.append(call)
            return call, body
        raise AssertionError("unreachable")


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True if stopped."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def cheap_calls(api: Api, edges: list[str], rng: random.Random, stop: asyncio.Event, bad: list) -> None:
    while not stop.is_set():
        edge = rng.choice(edges)
        kind = rng.randrange(3)
        if kind == 0:
            call, body = await api.call("GET", edge, "sysinfo/version")
            if call.status == 200 and body != {"plugin": "sysinfo", "version": body.get("version")}:
                bad.append((call.rid, "sysinfo/version", str(body)[:200]))
        elif kind == 1:
            call, body = await api.call("GET", edge, "echo/ping")
            if call.status == 200 and body != {"pong": True}:
                bad.append((call.rid, "echo/ping", str(body)[:200]))
        else:
            payload = rng.randbytes(rng.randrange(1, 4096))
            call, body = await api.call("POST", edge, "echo/echo", content=payload)
            if call.status == 200 and body != payload:
                bad.append((call.rid, "echo/echo", "body differs"))
        await pause(stop, 0.05)


async def emitter(api: Api, ledger: Ledger, edge: str, stop: asyncio.Event, n: int = 20) -> None:
    for k in itertools.count():
        if await pause(stop, 2.0):
            return
        tag = f"{edge}.{k}"
        t = now()
        call, body = await api.call("POST", edge, f"echo/emit/{n}", params={"tag": tag})
        ledger.emits.append(Emit(tag, edge, n, t, call.status == 200 and body == {"emitted": n}))


class Sessions:
    """A plugin session per (edge, plugin), opened again after an agent restart."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.sids: dict[tuple[str, str], str] = {}

    async def get(self, edge: str, plugin: str, body: dict | None = None) -> str | None:
        sid = self.sids.get((edge, plugin))
        if sid is None:
            call, answer = await self.api.call("POST", edge, f"{plugin}/register_session", json_body=body or {})
            if call.status != 200:
                return None
            sid = self.sids[(edge, plugin)] = answer["sid"]
        return sid

    def forget(self, edge: str, plugin: str, sid: str) -> None:
        if self.sids.get((edge, plugin)) == sid:
            del self.sids[(edge, plugin)]


SESSION_GONE = {"unknown_session", "session_expired"}


async def psij_jobs(api: Api, sessions: Sessions, ledger: Ledger, edge: str, rng: random.Random,
                    stop: asyncio.Event, hard: asyncio.Event, max_running: int = 4) -> None:
    watchers: set[asyncio.Task] = set()
    for k in itertools.count():
        if await pause(stop, rng.uniform(2, 5)):
            break
        if len(watchers) >= max_running:
            continue
        job = Job(f"{api.run}-{edge}-job{k}", edge, now())
        ledger.jobs.append(job)
        task = asyncio.create_task(one_job(api, sessions, job, rng, hard))
        watchers.add(task)
        task.add_done_callback(watchers.discard)
    if watchers:
        await asyncio.gather(*watchers, return_exceptions=True)


async def one_job(api: Api, sessions: Sessions, job: Job, rng: random.Random, hard: asyncio.Event) -> None:
    seconds = rng.choice([0.5, 1, 2, 4])
    spec = {"job_spec": {"executable": "/bin/sh", "arguments": ["-c", f"sleep {seconds}; echo {job.key}"]},
            "executor": "local", "idempotency_key": job.key}
    deadline = job.t_submit + 120
    while not job.job_id:  # submit, again with the same key until it is answered
        if now() > deadline or hard.is_set():
            job.submit_error = job.submit_error or "no answer"
            return
        sid = await sessions.get(job.edge, "psij")
        if sid is None:
            await asyncio.sleep(1)
            continue
        call, body = await api.call("POST", job.edge, f"psij/submit/{sid}", json_body=spec)
        if call.status == 200:
            job.job_id = body["job_id"]
            break
        if call.error in SESSION_GONE:
            sessions.forget(job.edge, "psij", sid)
        elif 400 <= call.status < 500 and call.status not in (404, 409, 429):
            job.submit_error = f"{call.status} {call.error}"
            return
        job.submit_error = f"{call.status} {call.error}"  # kept only if it never succeeds
        await asyncio.sleep(1)
    job.submit_error = ""
    await follow_job(api, sessions, job, deadline=job.t_submit + 300, hard=hard)


async def follow_job(api: Api, sessions: Sessions, job: Job, *, deadline: float, hard: asyncio.Event | None) -> None:
    while now() < deadline and not (hard is not None and hard.is_set()):
        await asyncio.sleep(1.5)
        sid = await sessions.get(job.edge, "psij")
        if sid is None:
            continue
        call, body = await api.call("GET", job.edge, f"psij/status/{sid}/{job.job_id}")
        if call.error in SESSION_GONE:
            sessions.forget(job.edge, "psij", sid)
            continue
        if call.status != 200:
            if call.error == "unknown_job":
                job.state = "UNKNOWN_JOB"
            continue
        job.state, job.exit_code, job.message = body["state"], body.get("exit_code"), body.get("message") or ""
        if job.state in FINAL_JOB_STATES:
            job.t_final = now()
            job.output_ok = body.get("stdout") == f"{job.key}\n"
            return


async def rhapsody_batches(api: Api, sessions: Sessions, ledger: Ledger, edge: str, rng: random.Random,
                           stop: asyncio.Event, size: int = 10) -> None:
    for k in itertools.count():
        if await pause(stop, rng.uniform(3, 6)):
            return
        if k % 20 == 19 and (old := sessions.sids.get((edge, "rhapsody"))):
            # a fresh session now and then: a session keeps its tasks, and the agent's
            # memory should not grow with them over a long run
            sessions.forget(edge, "rhapsody", old)
            await api.call("POST", edge, f"rhapsody/unregister_session/{old}")
        sid = await sessions.get(edge, "rhapsody", {"backends": ["concurrent"]})
        if sid is None:
            continue
        tasks = []
        for i in range(size):
            word = f"{edge}-b{k}-t{i}"
            tasks.append({"executable": "/bin/echo", "arguments": [word], "name": word} if i % 2 == 0 else
                         {"function": "add", "args": [k, i], "name": word})
        call, body = await api.call("POST", edge, f"rhapsody/submit/{sid}", json_body={"tasks": tasks})
        if call.error in SESSION_GONE:
            sessions.forget(edge, "rhapsody", sid)
        if call.status != 200:
            continue  # not accepted (or unknown): nothing to follow
        batch = Batch(edge, now(), [t["uid"] for t in body])
        ledger.batches.append(batch)
        expected = {t["uid"]: tasks[i] for i, t in enumerate(body)}
        deadline = now() + 120
        while len(batch.final) < len(batch.uids) and now() < deadline:
            pending = [u for u in batch.uids if u not in batch.final]
            call, answer = await api.call("POST", edge, f"rhapsody/wait/{sid}",
                                          json_body={"uids": pending, "timeout": 20}, timeout=40)
            if call.error in SESSION_GONE:
                sessions.forget(edge, "rhapsody", sid)
                batch.lost_reason = f"session gone ({call.error}): agent restarted, rhapsody keeps tasks in memory"
                break
            if call.status != 200:
                await asyncio.sleep(1)
                continue
            for t in answer:
                if t["state"] in FINAL_TASK_STATES:
                    batch.final[t["uid"]] = t["state"]
                    want = expected[t["uid"]]
                    ok = t["state"] == "DONE" and (
                        t.get("stdout") == want["arguments"][0] + "\n" if "executable" in want
                        else t.get("return_value") == sum(want["args"]))
                    if not ok:
                        batch.bad.append(f"{t['uid']} {t['state']} {t.get('error')}")
        if len(batch.final) < len(batch.uids) and not batch.lost_reason:
            batch.lost_reason = "not final within 120 s"


async def subscriber(site: Site, ledger: Ledger, sub: Subscriber, rng: random.Random, stop: asyncio.Event) -> None:
    """GET /events for ever, resuming with Last-Event-ID; now and then it hangs up on purpose."""
    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {site.token}"},
                               timeout=httpx.Timeout(10, read=45))
    rr = itertools.count(rng.randrange(len(site.bridges)))
    try:
        while not stop.is_set():
            port = site.bridges[next(rr) % len(site.bridges)].port
            headers = {"Last-Event-ID": str(sub.last_id)} if sub.first_high is not None else {}
            hang_up_at = now() + rng.uniform(60, 240)
            event: dict[str, str] = {}
            try:
                async with client.stream("GET", f"http://127.0.0.1:{port}/events", headers=headers) as r:
                    if r.status_code != 200:
                        body = (await r.aread())[:200]
                        err = "?"
                        with contextlib.suppress(ValueError):
                            err = json.loads(body).get("error", "?")
                        sub.refusals[f"{r.status_code} {err}"] += 1
                        await pause(stop, 1)
                        continue
                    sub.connects += 1
                    async for line in r.aiter_lines():
                        if line == "":
                            handle_event(sub, event)
                            event = {}
                            if stop.is_set() or now() > hang_up_at:
                                sub.resumed_on_purpose += not stop.is_set()
                                break
                            continue
                        if line.startswith(":"):
                            continue
                        key, _, value = line.partition(":")
                        event[key] = value[1:] if value.startswith(" ") else value
                    else:
                        sub.ended_by_server += 1
            except httpx.HTTPError as exc:
                sub.refusals[f"client:{type(exc).__name__}"] += 1
            await pause(stop, rng.uniform(0.2, 2.0))
    finally:
        await client.aclose()


def handle_event(sub: Subscriber, event: dict[str, str]) -> None:
    if "id" not in event:
        return
    eid = int(event["id"])
    if "data" not in event:  # the id-only block: the stream's high-water mark
        if sub.first_high is None:
            sub.first_high = eid
        sub.last_id = max(sub.last_id, eid)
        return
    if sub.first_high is None:
        sub.first_high = eid - 1
    if eid in sub.ids:
        sub.duplicates += 1
        return
    if eid < sub.last_id:
        sub.out_of_order += 1
    sub.ids.add(eid)
    sub.last_id = max(sub.last_id, eid)
    if event.get("event") == "notification":
        data = json.loads(event["data"])
        inner = data.get("data") or {}
        if data.get("plugin") == "echo" and isinstance(inner, dict) and "tag" in inner:
            sub.ticks.add((inner["tag"], inner["i"]))


# -- faults -----------------------------------------------------------------------------------


class Faults:
    def __init__(self, site: Site, ledger: Ledger, rng: random.Random, weights: dict[str, float]) -> None:
        self.site, self.ledger, self.rng, self.weights = site, ledger, rng, weights

    def run_one(self, kind: str) -> None:
        site, rng = self.site, self.rng
        fault = Fault(kind, "", now())
        try:
            if kind in ("bridge_kill", "bridge_term"):
                alive = site.alive()
                victims = [b for b in site.bridges if b.port not in site.stable and b.port in alive]
                if len(alive) < 2 or not victims:
                    fault.detail = "skipped: no other process alive"
                    return
                victim = rng.choice(victims)
                fault.target = f"bridge:{victim.port}"
                fault.held = site.holder(victim)
                if kind == "bridge_kill":
                    victim.proc.kill()
                    victim.proc.wait(10)
                    fault.detail = "SIGKILL"
                else:
                    t = now()
                    victim.proc.send_signal(signal.SIGTERM)
                    try:
                        code = victim.proc.wait(45)
                        fault.detail = f"SIGTERM: exited {code} after {now() - t:.1f}s"
                    except Exception:
                        victim.proc.kill()
                        victim.proc.wait(10)
                        fault.detail = f"SIGTERM: still running after {now() - t:.1f}s, killed"
                time.sleep(rng.uniform(1, 5))
                self._start_bridge(victim, fault)
            elif kind == "agent_kill":
                edge = rng.choice(site.edges)
                agent = site.agents[edge]
                fault.target = f"agent:{edge}"
                agent.proc.kill()
                agent.proc.wait(10)
                time.sleep(rng.uniform(1, 5))
                agent.start()
                self.ledger.agent_starts[edge].append(now())
                fault.detail = "SIGKILL, started again"
            elif kind == "redis_restart":
                fault.target = "redis"
                site.redis.stop()
                down = rng.uniform(2, 6)
                time.sleep(down)
                site.redis.start()
                fault.detail = f"down {down:.1f}s"
            elif kind == "pg_restart":
                fault.target = "postgres"
                site.pg.stop()
                down = rng.uniform(2, 6)
                time.sleep(down)
                site.pg.start()
                site.pg.wait_ready()
                fault.detail = f"down {down:.1f}s (fast shutdown)"
        except Exception as exc:  # a fault that went wrong is reported, not fatal
            fault.detail += f" ERROR {type(exc).__name__}: {exc}"
        finally:
            fault.t1 = now()
            self.ledger.faults.append(fault)
            print(f"  fault {hms(fault.t0)} {fault.kind:13s} {fault.target:12s} {fault.t1 - fault.t0:5.1f}s "
                  f"{fault.detail}" + (f" (held {','.join(fault.held)})" if fault.held else ""), flush=True)

    def _start_bridge(self, bridge: LiveBridge, fault: Fault) -> None:
        for attempt in range(5):
            try:
                bridge.start()
                self.ledger.bridge_starts[bridge.port].append(now())
                fault.detail += ", started again" + (f" (attempt {attempt + 1})" if attempt else "")
                return
            except Exception as exc:
                fault.detail += f", start failed ({str(exc).splitlines()[0][:80]})"
                with contextlib.suppress(Exception):
                    bridge.proc.kill()
                time.sleep(3)

    async def loop(self, stop: asyncio.Event, gap: tuple[float, float]) -> None:
        kinds, weights = list(self.weights), list(self.weights.values())
        while not await pause(stop, self.rng.uniform(*gap)):
            kind = self.rng.choices(kinds, weights)[0]
            await asyncio.to_thread(self.run_one, kind)


async def sample_rss(site: Site, ledger: Ledger, stop: asyncio.Event) -> None:
    while True:
        t = now()
        for b in site.bridges:
            if b.proc is not None and b.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    ledger.rss[f"bridge:{b.port}"].append((t, b.proc.pid, rss_mb(b.proc.pid)))
        for edge, a in site.agents.items():
            if a.proc is not None and a.proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    mb = psutil.Process(a.proc.pid).memory_info().rss / 2**20
                    ledger.rss[f"agent:{edge}"].append((t, a.proc.pid, mb))
        if await pause(stop, 10):
            return


# -- checks -----------------------------------------------------------------------------------


def db_rows(site: Site, rids_like: str) -> tuple[dict[str, int], list[tuple]] | None:
    """(request id -> status of every CallRecord of this run, every EventRecord row) or None."""
    import psycopg

    try:
        with psycopg.connect(site.db_url, connect_timeout=3) as conn:
            calls = dict(conn.execute("SELECT request_id, status FROM bridge_app_callrecord "
                                      "WHERE request_id LIKE %s", [rids_like]).fetchall())
            events = conn.execute("SELECT id, kind, edge, plugin, topic, data, extract(epoch from at)::float8 "
                                  "FROM bridge_app_eventrecord ORDER BY id").fetchall()
        return calls, events
    except Exception as exc:
        print(f"  (database not readable now: {type(exc).__name__})", flush=True)
        return None


def explain_audit(call: Call, ledger: Ledger) -> str:
    for f in ledger.faults:
        # (- 1 s: the answer may reach the client just after the kill was sent)
        if f.target == f"bridge:{call.port}" and call.t1 - 1 <= f.t0 <= call.t1 + AUDIT_BUFFER_SECONDS + 5:
            return f"{f.target} {f.detail.split(',')[0].split(':')[0]} at {hms(f.t0)}"
    return ""


def explain_event(emit: Emit, ledger: Ledger) -> str:
    for f in ledger.faults:
        if not (emit.t - 1 <= f.t0 <= emit.t + EVENT_KILL_WINDOW):
            continue
        if f.kind == "agent_kill" and f.target == f"agent:{emit.edge}":
            return f"agent {emit.edge} SIGKILL {f.t0 - emit.t:+.1f}s (its queue)"
        if f.kind == "bridge_kill" and emit.edge in f.held:
            return f"{f.target} holding {emit.edge} SIGKILL {f.t0 - emit.t:+.1f}s (its buffer)"
    return ""


def analyse(site: Site, ledger: Ledger, run: str, *, cutoff: float, final: bool,
            subs_cutoff: float | None = None) -> dict[str, Any]:
    """Losses among what is older than ``cutoff`` (everything younger may still be on its way);
    subscribers are held to the events stored before ``subs_cutoff`` (when they stopped)."""
    subs_cutoff = cutoff if subs_cutoff is None else subs_cutoff
    rows = db_rows(site, f"sk{run}-%")
    out: dict[str, Any] = {"db": rows is not None}
    # audit: every call answered by the proxy (any status) must have its record
    answered = [c for c in ledger.calls if c.status and c.t1 < cutoff]
    if rows is not None:
        records, events = rows
        lost_audit = [c for c in answered if c.rid not in records]
        wrong_status = [c for c in answered if c.rid in records and records[c.rid] != c.status]
        out["audit"] = {"answered": len(answered), "recorded": len(answered) - len(lost_audit),
                        "lost": [dict(asdict(c), explained=explain_audit(c, ledger)) for c in lost_audit],
                        "status_differs": [dict(asdict(c), recorded=records[c.rid]) for c in wrong_status]}
        ticks: set[tuple[str, int]] = set()
        final_job_events: dict[str, str] = {}
        for _eid, kind, _edge, plugin, topic, data, _at in events:
            if kind != "notification" or not isinstance(data, dict):
                continue
            if plugin == "echo" and topic == "tick" and "tag" in data:
                ticks.add((data["tag"], data["i"]))
            elif plugin == "psij" and topic == "job_status" and data.get("state") in FINAL_JOB_STATES:
                final_job_events[data.get("job_id")] = data["state"]
        emitted = [e for e in ledger.emits if e.answered and e.t < cutoff]
        lost_ev = []
        for e in emitted:
            missing = [i for i in range(e.n) if (e.tag, i) not in ticks]
            if missing:
                lost_ev.append({"tag": e.tag, "edge": e.edge, "t": e.t, "missing": len(missing),
                                "explained": explain_event(e, ledger)})
        known = {e.tag for e in ledger.emits}
        stray = sum(1 for tag, _ in ticks if tag not in known)
        out["events"] = {"emitted": sum(e.n for e in emitted), "stored": sum(e.n for e in emitted) -
                         sum(x["missing"] for x in lost_ev), "lost": lost_ev, "stray_in_db": stray,
                         "unanswered_emits": sum(1 for e in ledger.emits if not e.answered and e.t < cutoff)}
        # subscribers: every stored event (any kind) of our edges above the first high-water mark
        subs = []
        for sub in ledger.subs:
            if sub.first_high is None:
                continue
            limit = max(sub.last_id, 0) if not final else None
            expected = [r for r in events if r[0] > sub.first_high and r[2] in site.edges and r[6] < subs_cutoff
                        and (limit is None or r[0] <= limit)]
            missed = [r for r in expected if r[0] not in sub.ids]
            subs.append({"name": sub.name, "expected": len(expected), "received": len(expected) - len(missed),
                         "missed": [{"id": r[0], "kind": r[1], "edge": r[2], "plugin": r[3], "topic": r[4],
                                     "at": r[6], "data": str(r[5])[:120]} for r in missed],
                         "connects": sub.connects, "ended_by_server": sub.ended_by_server,
                         "resumed_on_purpose": sub.resumed_on_purpose, "duplicates": sub.duplicates,
                         "out_of_order": sub.out_of_order, "refusals": dict(sub.refusals),
                         "ticks_missing": len({t for e in emitted for t in ((e.tag, i) for i in range(e.n))
                                               if t in ticks and t not in sub.ticks})})
        out["subscribers"] = subs
    else:
        final_job_events = None
    # jobs: accepted and never found final = lost record
    jobs = [j for j in ledger.jobs if j.t_submit < cutoff - (0 if final else 300)]
    out["jobs"] = {
        "submitted": len(jobs), "accepted": sum(1 for j in jobs if j.job_id),
        "completed_ok": sum(1 for j in jobs if j.state == "COMPLETED" and j.exit_code == 0 and j.output_ok),
        "lost": [asdict(j) for j in jobs if j.job_id and j.state not in FINAL_JOB_STATES],
        "not_ok": [asdict(j) for j in jobs if j.state in FINAL_JOB_STATES
                   and not (j.state == "COMPLETED" and j.exit_code == 0 and j.output_ok)],
        "submit_unresolved": [asdict(j) for j in jobs if not j.job_id],
        "final_event_missing": ([j.job_id for j in jobs if j.state in FINAL_JOB_STATES
                                 and j.job_id not in final_job_events] if final_job_events is not None else None),
    }
    batches = [b for b in ledger.batches if b.t < cutoff - (0 if final else 150)]
    out["tasks"] = {"submitted": sum(len(b.uids) for b in batches),
                    "final": sum(len(b.final) for b in batches),
                    "bad": [x for b in batches for x in b.bad],
                    "lost": [{"edge": b.edge, "t": b.t, "lost": len(b.uids) - len(b.final), "reason": b.lost_reason}
                             for b in batches if len(b.final) < len(b.uids)]}
    return out


ERROR_COLUMNS = [*FAULT_KINDS, "outside"]


def window_of(call: Call, faults: list[Fault]) -> str:
    """The kind of the latest fault whose window (start to FAULT_TAIL s after its end) the
    call overlaps (a call in flight when a process is killed started before the fault)."""
    t1 = call.t1 or call.t0
    for f in reversed(faults):  # the fault the call started in
        if f.t0 <= call.t0 <= (f.t1 or now()) + FAULT_TAIL:
            return f.kind
    for f in faults:  # or the first one that hit it while in flight
        if call.t0 <= f.t0 <= t1:
            return f.kind
    return "outside"


def error_kinds(calls: list[Call], faults: list[Fault]) -> dict[str, dict[str, int]]:
    """error kind -> {fault kind whose window the call started in, or "outside": count}."""
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in calls:
        if c.status and c.status < 400:
            continue
        kind = f"{c.status} {c.error}" if c.status else c.error
        kinds[kind][window_of(c, faults)] += 1
    return {k: dict(v) for k, v in kinds.items()}


def error_calls(calls: list[Call], faults: list[Fault]) -> list[dict[str, Any]]:
    return [dict(asdict(c), window=window_of(c, faults)) for c in calls if not c.status or c.status >= 400]


def log_summary(site: Site) -> dict[str, list[tuple[str, int]]]:
    """Each bridge log's WARNING and ERROR lines, counted by message with numbers masked."""
    import re

    out = {}
    stamp = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ (WARNING|ERROR|CRITICAL)\s+(.*)$")
    for b in site.bridges:
        counts: collections.Counter = collections.Counter()
        for line in b.log().splitlines():
            m = stamp.match(line)
            if m:
                counts[f"{m.group(1)} " + re.sub(r"\d+", "#", m.group(2))[:200]] += 1
        out[f"bridge:{b.port}"] = counts.most_common()
    return out


def recovery(faults: list[dict[str, Any]], error_calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many faults, how many of them cost callers errors, and the time
    from the fault's end (the process, agent or server back) to the last error in its
    window: how long callers felt it after it was over."""
    out: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(faults):
        end = faults[i + 1]["t0"] if i + 1 < len(faults) else float("inf")
        errs = [c for c in error_calls if f["t0"] <= c["t0"] < min(f["t1"] + FAULT_TAIL, end)]
        row = out.setdefault(f["kind"], {"faults": 0, "with_errors": 0, "errors": 0, "after_end": []})
        row["faults"] += 1
        if errs:
            row["with_errors"] += 1
            row["errors"] += len(errs)
            row["after_end"].append(max(c["t1"] for c in errs) - f["t1"])
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3 or points[-1][0] - points[0][0] < 60:
        return None
    xs = [(t - points[0][0]) / 3600 for t, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def rss_summary(ledger: Ledger, warmup: float = 120.0) -> list[dict[str, Any]]:
    out = []
    for name, samples in sorted(ledger.rss.items()):
        by_pid: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
        for t, pid, mb in samples:
            by_pid[pid].append((t, mb))
        for pid, pts in by_pid.items():
            steady = [p for p in pts if p[0] - pts[0][0] >= warmup]
            half = [p for p in pts if p[0] >= pts[0][0] + (pts[-1][0] - pts[0][0]) / 2]
            out.append({"process": name, "pid": pid, "from": pts[0][0], "minutes": (pts[-1][0] - pts[0][0]) / 60,
                        "first_mb": pts[0][1], "last_mb": pts[-1][1], "max_mb": max(p[1] for p in pts),
                        "slope_mb_per_h": slope_per_hour(steady),
                        "slope_second_half_mb_per_h": slope_per_hour(half)})
    return out


# -- the report -------------------------------------------------------------------------------


class Reporter:
    def __init__(self, site: Site, ledger: Ledger, run: str, interval: float) -> None:
        self.site, self.ledger, self.run, self.interval = site, ledger, run, interval
        self.rows: list[str] = []
        self.t_last = ledger.started
        self.n = 0
        self.seen = {"audit": 0, "events": 0, "jobs": 0, "tasks": 0}

    def header(self) -> list[str]:
        rss = " | ".join(f"RSS {b.port}" for b in self.site.bridges)
        return [f"| # | until | calls | errors (in/out of faults) | p50 ms | p99 ms | faults | jobs ok/lost/not ok "
                f"| tasks ok/lost | events emitted/lost (unexplained)/missed by subs | audit lost (unexplained) "
                f"| {rss} | errors by kind |",
                "|" + "---:|" * (11 + len(self.site.bridges)) + "---|"]

    def row(self, t_end: float, final: bool = False, subs_cutoff: float | None = None) -> str:
        try:
            return self._row(t_end, final, subs_cutoff)
        except Exception as exc:  # a report that fails must not end the run
            self.t_last = t_end
            return f"| {self.n} | {hms(t_end)} | report failed: {type(exc).__name__}: {exc} |"

    def _row(self, t_end: float, final: bool, subs_cutoff: float | None) -> str:
        ledger = self.ledger
        self.n += 1
        calls = [c for c in ledger.calls if self.t_last <= c.t0 < t_end]
        errs = [c for c in calls if not c.status or c.status >= 400]
        inside = sum(1 for c in errs if window_of(c, ledger.faults) != "outside")
        by_kind = collections.Counter(f"{c.status} {c.error}" if c.status else c.error for c in errs)
        kinds = ", ".join(f"{k} {n}" for k, n in by_kind.most_common())
        lat = sorted((c.t1 - c.t0) * 1000 for c in calls if c.status == 200 and c.what in
                     ("sysinfo/version", "echo/ping", "echo/echo"))
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)] if lat else float("nan")
        faults = collections.Counter(f.kind for f in ledger.faults if self.t_last <= f.t0 < t_end)
        short = {"bridge_kill": "K", "bridge_term": "T", "agent_kill": "A", "redis_restart": "R", "pg_restart": "P"}
        fstr = " ".join(f"{short[k]}{n}" for k, n in sorted(faults.items())) or "-"
        # Audit records are written every 30 s, and a write that fails (PostgreSQL restarting)
        # is retried 30 s later: what is younger than that may still be on its way.
        grace = 0 if final else 75
        a = analyse(self.site, ledger, self.run, cutoff=t_end - grace, final=final, subs_cutoff=subs_cutoff)
        self.last = a
        jobs = a["jobs"]
        tasks = a["tasks"]
        if a["db"]:
            ev = a["events"]
            lost_ev = sum(x["missing"] for x in ev["lost"])
            missed = sum(len(s["missed"]) for s in a["subscribers"])
            unexpl = sum(x["missing"] for x in ev["lost"] if not x["explained"])
            evs = f"{ev['emitted']}/{lost_ev} ({unexpl})/{missed}"
            aud = f"{len(a['audit']['lost'])} ({sum(1 for x in a['audit']['lost'] if not x['explained'])})"
        else:
            evs, aud = "db down", "db down"
        rss = []
        for b in self.site.bridges:
            pts = [mb for t, _, mb in ledger.rss.get(f"bridge:{b.port}", []) if self.t_last <= t < t_end]
            rss.append(f"{pts[-1]:.0f}" if pts else "-")
        line = (f"| {self.n} | {hms(t_end)} | {len(calls)} | {len(errs)} ({inside}/{len(errs) - inside}) | "
                f"{p50:.1f} | {p99:.1f} | {fstr} | {jobs['completed_ok']}/{len(jobs['lost'])}/{len(jobs['not_ok'])} | "
                f"{tasks['final']}/{sum(x['lost'] for x in tasks['lost'])} | {evs} | {aud} | {' | '.join(rss)} | "
                f"{kinds or '-'} |")
        self.t_last = t_end
        self.rows.append(line)
        return line


def print_final(report: dict[str, Any], ledger: Ledger, site: Site, rows: list[str], header: list[str]) -> None:
    a = report["analysis"]
    p = lambda *s: print(*s, flush=True)  # noqa: E731
    p("\n## Soak with faults: result\n")
    p(f"seed {report['seed']}, ran {report['minutes_run']:.1f} min "
      f"({hms(report['started'])} to {hms(report['ended'])} UTC)"
      f"{' — stopped early by a signal' if report['interrupted'] else ''}; {len(site.bridges)} bridge processes "
      f"(stable: {sorted(site.stable)}), {len(site.edges)} agents; {len(ledger.faults)} faults; "
      f"{len(ledger.calls)} calls ({ledger.failovers} refused connections sent to another process)\n")
    p("\n".join(header + rows))
    fk = collections.Counter(f.kind for f in ledger.faults)
    p("\nfaults: " + ", ".join(f"{k} {n}" for k, n in sorted(fk.items())))
    bad_faults = [f for f in ledger.faults if "ERROR" in f.detail or "failed" in f.detail or "killed" in f.detail]
    for f in bad_faults:
        p(f"  fault with trouble: {hms(f.t0)} {f.kind} {f.target}: {f.detail}")
    p("\n### Lost job records (accepted, never found final)")
    jobs = a["jobs"]
    p(f"submitted {jobs['submitted']}, accepted {jobs['accepted']}, completed with the right output "
      f"{jobs['completed_ok']}, lost {len(jobs['lost'])}, final but not ok {len(jobs['not_ok'])}, "
      f"submit never answered {len(jobs['submit_unresolved'])}, final job_status event missing in EventRecord: "
      f"{len(jobs['final_event_missing']) if jobs['final_event_missing'] is not None else 'db down'}")
    for j in jobs["lost"]:
        p(f"  LOST {j['edge']} {j['job_id']} key {j['key']} submitted {hms(j['t_submit'])} last state {j['state']!r}")
    for j in jobs["not_ok"]:
        why = [f"{f.target} {f.kind} at {hms(f.t0)}" for f in ledger.faults
               if f.target == f"agent:{j['edge']}" and j["t_submit"] - 1 <= f.t0 <= (j["t_final"] or now())]
        p(f"  not ok {j['edge']} {j['job_id']} {j['state']} exit {j['exit_code']} output ok {j['output_ok']}: "
          f"{j['message'][:120]} — {', '.join(why) or 'NOT EXPLAINED by an agent kill'}")
    for j in jobs["submit_unresolved"]:
        p(f"  submit unresolved {j['edge']} key {j['key']} at {hms(j['t_submit'])}: {j['submit_error']}")
    for jid in (jobs["final_event_missing"] or [])[:50]:
        p(f"  final job_status event missing: {jid}")
    tasks = a["tasks"]
    p(f"\n### rhapsody tasks\nsubmitted {tasks['submitted']}, final {tasks['final']}, wrong result {len(tasks['bad'])}")
    for x in tasks["lost"]:
        p(f"  {x['lost']} tasks of a batch on {x['edge']} at {hms(x['t'])}: {x['reason']}")
    for x in tasks["bad"][:30]:
        p(f"  wrong: {x}")
    if a["db"]:
        ev = a["events"]
        p(f"\n### Events\nemitted (answered emit calls) {ev['emitted']}, in EventRecord {ev['stored']}, "
          f"unanswered emit calls {ev['unanswered_emits']}, echo events in the database from no known call "
          f"{ev['stray_in_db']}")
        for x in ev["lost"]:
            p(f"  LOST {x['missing']} of emit {x['tag']} at {hms(x['t'])}: "
              f"{x['explained'] or 'NOT EXPLAINED by any fault'}")
        for s in a["subscribers"]:
            p(f"  subscriber {s['name']}: expected {s['expected']} (every stored event of the site's edges after its "
              f"first high-water mark), received {s['received']}, missed {len(s['missed'])}; stored echo ticks it "
              f"missed {s['ticks_missing']}; connects {s['connects']}, ended by the server {s['ended_by_server']}, "
              f"hung up on purpose {s['resumed_on_purpose']}, duplicates {s['duplicates']}, out of order "
              f"{s['out_of_order']}, refusals {s['refusals']}")
            for m in s["missed"][:40]:
                p(f"    missed id {m['id']} {m['kind']} {m['edge']} {m['plugin']}/{m['topic']} at {hms(m['at'])} "
                  f"{m['data']}")
        au = a["audit"]
        p(f"\n### Audit\ncalls answered with an X-Request-ID {au['answered']}, CallRecord rows {au['recorded']}, "
          f"lost {len(au['lost'])} (explained by a SIGKILL within {AUDIT_BUFFER_SECONDS:.0f} s: "
          f"{sum(1 for x in au['lost'] if x['explained'])}), status differs {len(au['status_differs'])}")
        unexplained = [x for x in au["lost"] if not x["explained"]]
        for x in unexplained[:60]:
            p(f"  LOST, NOT EXPLAINED: {x['rid']} {x['what']} port {x['port']} at {hms(x['t1'])} status {x['status']} "
              f"{x['error']}")
        by_fault: dict[str, list[float]] = collections.defaultdict(list)
        for x in au["lost"]:
            if x["explained"]:
                by_fault[x["explained"]].append(x["t1"])
        for why, ts in sorted(by_fault.items(), key=lambda kv: min(kv[1])):
            p(f"  lost {len(ts)}: answered {hms(min(ts))} to {hms(max(ts))}, then {why}")
        for x in au["status_differs"][:20]:
            p(f"  status differs: {x['rid']} client {x['status']} record {x['recorded']}")
    else:
        p("\n(the database could not be read: events and audit not checked)")
    p(f"\n### Errors by kind, by the fault whose window the call started in (a fault's start to "
      f"{FAULT_TAIL:.0f} s after its end)")
    p("| kind | " + " | ".join(ERROR_COLUMNS) + " |\n|---|" + "---:|" * len(ERROR_COLUMNS))
    for kind, by in sorted(report["errors"].items(), key=lambda kv: -sum(kv[1].values())):
        p(f"| {kind} | " + " | ".join(str(by.get(c, 0)) for c in ERROR_COLUMNS) + " |")
    p("\n| fault | count | with errors | errors | last error after the fault ended, s (median, max) |")
    p("|---|---:|---:|---:|---|")
    for kind, r in report["recovery"].items():
        after = sorted(r["after_end"])
        span = f"{statistics.median(after):+.1f}, {after[-1]:+.1f}" if after else "-"
        p(f"| {kind} | {r['faults']} | {r['with_errors']} | {r['errors']} | {span} |")
    outside = [c for c in report["error_calls"] if c["window"] == "outside"]
    for c in outside[:30]:
        p(f"  outside any fault: {hms(c['t0'])} {c['rid']} {c['edge']}/{c['what']} port {c['port']} {c['status']} "
          f"{c['error']} after {c['t1'] - c['t0']:.2f}s")
    slow = [c for c in report["error_calls"] if c["t1"] - c["t0"] > 10]
    for c in slow[:30]:
        p(f"  slow failure: {hms(c['t0'])} {c['rid']} {c['edge']}/{c['what']} port {c['port']} {c['status']} "
          f"{c['error']} after {c['t1'] - c['t0']:.1f}s ({c['window']})")
    if report["bad_answers"]:
        p(f"\nwrong answers (status 200, body not what was sent): {len(report['bad_answers'])}")
        for x in report["bad_answers"][:20]:
            p(f"  {x}")
    p("\n### Bridge logs: WARNING and ERROR lines by message (numbers replaced by #)")
    for name, counts in report["logs"].items():
        p(f"{name}:")
        for msg, n in counts[:25]:
            p(f"  {n:6d}  {msg}")
    p("\n### Memory (RSS, MB) per process incarnation; slope by least squares after 2 min of warm-up")
    p("| process | pid | started | minutes | first | last | max | MB/h | MB/h 2nd half |")
    p("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in report["rss"]:
        if r["minutes"] < 1:
            continue
        s = f"{r['slope_mb_per_h']:+.1f}" if r["slope_mb_per_h"] is not None else "-"
        s2 = f"{r['slope_second_half_mb_per_h']:+.1f}" if r["slope_second_half_mb_per_h"] is not None else "-"
        p(f"| {r['process']} | {r['pid']} | {hms(r['from'])} | {r['minutes']:.1f} | {r['first_mb']:.0f} | "
          f"{r['last_mb']:.0f} | {r['max_mb']:.0f} | {s} | {s2} |")


# -- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    run_id = f"{seed % 100000:05d}"
    out = Path(args.out or ROOT / "bench" / "results" / time.strftime("soak-faults-%Y%m%dT%H%M%S", time.gmtime()))
    out = out.resolve()  # agents get state directories below it: a relative one fails every psij job
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak with faults: seed {seed}, {args.minutes} min, {args.bridges} bridge processes "
          f"({args.stable} never killed), {args.agents} agents, a fault every {args.fault_gap[0]:.0f} to "
          f"{args.fault_gap[1]:.0f} s; logs in {out}", flush=True)

    stop = asyncio.Event()  # the load winds down
    hard = asyncio.Event()  # a second signal: skip the drains
    interrupted = False

    def on_signal(signame: str) -> None:
        nonlocal interrupted
        if stop.is_set():
            hard.set()
        interrupted = True
        print(f"\n{signame}: stopping, the report follows", flush=True)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)

    ledger = Ledger()
    site = Site(out, args.bridges, args.agents, args.stable)
    report: dict[str, Any] = {"seed": seed, "args": vars(args), "out": str(out)}
    try:
        await asyncio.to_thread(site.start, ledger)
        print(f"site up: bridges {[b.port for b in site.bridges]} behind {site.lb.url}, redis {site.redis.port}, "
              f"postgres {site.pg.port}, edges {site.edges}", flush=True)
        ledger.started = now()
        api = Api(site, ledger, run_id)
        sessions = Sessions(api)
        bad: list = []
        load_stop = asyncio.Event()
        fault_stop = asyncio.Event()
        sub_stop = asyncio.Event()
        ledger.subs = [Subscriber(f"sse{i}") for i in range(args.subscribers)]
        sub_tasks = [asyncio.create_task(subscriber(site, ledger, s, random.Random(rng.random()), sub_stop))
                     for s in ledger.subs]
        rss_task = asyncio.create_task(sample_rss(site, ledger, sub_stop))
        await pause(stop, 3)  # subscribers have their high-water marks before the first event
        load = [asyncio.create_task(cheap_calls(api, site.edges, random.Random(rng.random()), load_stop, bad))
                for _ in range(args.clients)]
        for edge in site.edges:
            load += [asyncio.create_task(emitter(api, ledger, edge, load_stop)),
                     asyncio.create_task(psij_jobs(api, sessions, ledger, edge, random.Random(rng.random()),
                                                   load_stop, hard)),
                     asyncio.create_task(rhapsody_batches(api, sessions, ledger, edge, random.Random(rng.random()),
                                                          load_stop))]
        faults = Faults(site, ledger, random.Random(rng.random()), args.faults)
        fault_task = asyncio.create_task(faults.loop(fault_stop, tuple(args.fault_gap)))
        reporter = Reporter(site, ledger, run_id, args.interval)
        for line in reporter.header():
            print(line, flush=True)
        end = ledger.started + args.minutes * 60
        while not stop.is_set() and now() < end:
            t_next = min(end, reporter.t_last + args.interval * 60)
            if await pause(stop, max(0.0, t_next - now())):
                break
            print(await asyncio.to_thread(reporter.row, now()), flush=True)

        # wind down: no new faults (the one under way finishes), no new work; let jobs end
        print(f"{hms(now())} winding down: faults stop, no new work", flush=True)
        fault_stop.set()
        load_stop.set()
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(fault_task), 90)
        # every bridge process up again, every edge online, before the last calls
        for b in site.bridges:
            if b.proc is None or b.proc.poll() is not None:
                await asyncio.to_thread(faults._start_bridge, b, Fault("final", "", now()))
        with contextlib.suppress(TimeoutError):
            await asyncio.to_thread(wait_for, lambda: all(site.edge_online(e) for e in site.edges), 60, 0.5,
                                    "edges online")
        _, pending = await asyncio.wait(load, timeout=30 if interrupted else 330)
        hard.set()
        for task in pending:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        # jobs still not final: one more look each, now that everything is up
        for job in ledger.jobs:
            if job.job_id and job.state not in FINAL_JOB_STATES:
                await follow_job(api, sessions, job, deadline=now() + 5, hard=None)
        await asyncio.sleep(3 if interrupted else 15)  # subscribers catch up
        subs_end = now()
        sub_stop.set()
        await asyncio.gather(*sub_tasks, rss_task, return_exceptions=True)
        await api.client.aclose()
        # agents first (their edges leave), then the bridges, gracefully: the bridges write
        # their buffered audit records and events as they stop
        print(f"{hms(now())} stopping agents, then bridges (SIGTERM: buffers are written)", flush=True)
        await asyncio.to_thread(lambda: [a.stop(timeout=20) for a in site.agents.values()])
        stoppers = [asyncio.to_thread(b.stop, signal.SIGTERM, 45) for b in site.bridges]
        codes = await asyncio.gather(*stoppers, return_exceptions=True)
        print(f"  bridges exited with {codes}", flush=True)
        t_end = now()
        print(await asyncio.to_thread(reporter.row, t_end, True, subs_end - 2), flush=True)
        report.update(started=ledger.started, ended=t_end, minutes_run=(t_end - ledger.started) / 60,
                      interrupted=interrupted, analysis=reporter.last,
                      errors=error_kinds(ledger.calls, ledger.faults), rss=rss_summary(ledger),
                      error_calls=error_calls(ledger.calls, ledger.faults),
                      faults=[asdict(f) for f in ledger.faults], rows=reporter.rows, bad_answers=bad,
                      logs=log_summary(site))
        report["recovery"] = recovery(report["faults"], report["error_calls"])
        print_final(report, ledger, site, reporter.rows, reporter.header())
        (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        print(f"\nreport: {out / 'report.json'}", flush=True)
    finally:
        await asyncio.to_thread(site.stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=120)
    p.add_argument("--seed", type=int, default=None, help="random seed (printed; default: a fresh one)")
    p.add_argument("--bridges", type=int, default=3, help="bridge processes (at least 2)")
    p.add_argument("--stable", type=int, default=1, help="bridge processes never killed (their RSS spans the run)")
    p.add_argument("--agents", type=int, default=3)
    p.add_argument("--clients", type=int, default=3, help="concurrent loops of cheap calls")
    p.add_argument("--subscribers", type=int, default=2)
    p.add_argument("--interval", type=float, default=5, help="minutes per row of the table")
    p.add_argument("--fault-gap", type=float, nargs=2, default=[20, 40], metavar=("MIN", "MAX"),
                   help="seconds between faults")
    p.add_argument("--faults", default=",".join(f"{k}={v}" for k, v in FAULT_KINDS.items()),
                   help="fault kinds and their weights (default: %(default)s)")
    p.add_argument("--out", default=None, help="directory for logs and report.json")
    args = p.parse_args(argv)
    try:
        args.faults = {k: float(v) for k, v in (kv.split("=") for kv in args.faults.split(",") if kv)}
    except ValueError:
        p.error("--faults: kind=weight,...")
    if not args.faults or set(args.faults) - set(FAULT_KINDS):
        p.error(f"--faults: kinds are {', '.join(FAULT_KINDS)}")
    if args.bridges < 2 or args.stable >= args.bridges:
        p.error("need at least 2 bridge processes and at least one that may be killed")
    if os.geteuid() != 0:
        p.error("needs root: the private PostgreSQL runs as the postgres user (runuser)")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
