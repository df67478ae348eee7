"""Issue 20, finding 4, on PostgreSQL (which refuses NUL in text and jsonb): rogue hellos
with NULs arriving together with genuine agents' hellos (as after a bridge restart, when
every agent reconnects at once and registrations are written in shared batches) cost the
genuine agents nothing. Before the fix, 13 of 15 genuine agents failed to register."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from edge_agent import protocol

from .rogue import MANIFEST, ws_url

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

GENUINE = 15
NUL = "\u0000"


def rogue_hellos() -> list[dict]:
    """Hellos with a NUL where each would be stored: a column, the facts (jsonb), a plugin
    description (text), a route table and a UI schema (jsonb)."""
    base = {"type": "hello", "protocol": 1, "agent_version": "1.0", "host": {"hostname": "rogue"},
            "plugins": MANIFEST}
    plugin = MANIFEST[0]
    return [
        {**base, "agent_version": f"1{NUL}"},
        {**base, "host": {"hostname": f"rogue{NUL}"}},
        {**base, "host": {"hostname": "rogue", "facts": {f"k{NUL}": f"v{NUL}"}}},
        {**base, "plugins": [{**plugin, "description": f"d{NUL}"}]},
        {**base, "plugins": [{**plugin, "routes": [{"method": "GET", "path": f"p{NUL}", "readonly": True}]}]},
        {**base, "plugins": [{**plugin, "ui_schema": {"title": f"t{NUL}"}}]},
    ]


async def greet(url: str, token: str, hello: dict, start: asyncio.Event) -> dict:
    """Connect, wait until every socket is open, send the hello; the bridge's first answer
    (a closed socket without one counts as ``{"type": "closed"}``)."""
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  compression=None, ping_interval=None, open_timeout=60) as ws:
        await start.wait()
        await ws.send(json.dumps(hello))
        try:
            answer = protocol.decode(await asyncio.wait_for(ws.recv(), 60))
        except websockets.ConnectionClosed as exc:
            return {"type": "closed", "code": exc.rcvd.code if exc.rcvd else None}
        if answer["type"] == "welcome":
            await asyncio.sleep(0.5)  # stay connected while the others register
        return answer


def test_rogue_hellos_with_nul_do_not_stop_genuine_agents_registering(bridge_factory, unique_name):
    bridge = bridge_factory("scaled")
    rogues = rogue_hellos()
    genuine = [f"{unique_name}-g{i}" for i in range(GENUINE)]
    rogue_edges = [f"{unique_name}-r{i}" for i in range(len(rogues))]
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"],
                         edge_tokens=[(name, "olga") for name in genuine + rogue_edges])
    genuine_hello = {"type": "hello", "protocol": 1, "agent_version": "1.0", "host": {"hostname": "node"},
                     "plugins": MANIFEST}

    async def main() -> list[dict]:
        start = asyncio.Event()
        # Rogue and genuine hellos interleaved, all sent in the same moment.
        jobs = []
        for i, name in enumerate(genuine):
            jobs.append(greet(ws_url(bridge.url), seeded["edge"][name], genuine_hello, start))
            if i < len(rogues):
                jobs.append(greet(ws_url(bridge.url), seeded["edge"][rogue_edges[i]], rogues[i], start))
        tasks = [asyncio.ensure_future(job) for job in jobs]
        await asyncio.sleep(2)  # every socket open (accepted before its hello is read)
        start.set()
        return await asyncio.gather(*tasks)

    answers = asyncio.run(main())
    genuine_answers = answers[0::2][:len(rogues)] + answers[2 * len(rogues):]
    rogue_answers = answers[1:2 * len(rogues):2]
    assert [a["type"] for a in genuine_answers] == ["welcome"] * GENUINE, genuine_answers
    # Each rogue is told why; one whose only NUL was in its UI schema connects without it.
    for hello, answer in zip(rogues[:-1], rogue_answers[:-1]):
        assert answer["type"] == "bye" and answer["reason"] == "bad_hello", (hello, answer)
        assert "NUL" in answer["detail"], (hello, answer)
    assert rogue_answers[-1]["type"] == "welcome"
    stored = json.loads(bridge.manage("shell", "-c", (
        "import json; from bridge_app.models import PluginRegistration as P; "
        f"print(json.dumps(P.objects.get(edge__name={rogue_edges[-1]!r}).ui_schema))")).stdout.strip().splitlines()[-1])
    assert "NUL" in stored["refused"]
    # And registration goes on working for whoever comes next.
    async def again() -> dict:
        start = asyncio.Event()
        start.set()
        return await greet(ws_url(bridge.url), seeded["edge"][genuine[0]], genuine_hello, start)

    assert asyncio.run(again())["type"] == "welcome"
