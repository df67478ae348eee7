"""Job templates end to end: a real bridge with two users, a real agent, the SDK, and the
real Slurm. Alice saves a private and a shared template; Bob, with whom the edge is shared,
sees and submits only the shared one; a third user with no access sees nothing."""

from __future__ import annotations

import uuid

import pytest

from edge_agent.client import BadRequest, BridgeClient, Forbidden, NotFound
from tests.fixtures.psij.harness import slurm_running
from tests.support.live import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slurm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_a_shared_template_is_used_by_a_second_user_and_a_private_one_is_not(bridge_factory, agent_factory):
    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)
    edge = f"tpl-{uuid.uuid4().hex[:6]}"
    bridge = bridge_factory()
    seeded = bridge.seed(users=["alice", "bob", "carol"], api_tokens=["alice", "bob", "carol"],
                         edge_tokens=[(edge, "alice")])
    bridge.manage("edge_grant", edge, "bob", "user")
    agent_factory(bridge, seeded["edge"][edge], plugins="psij", options=["psij.poll_interval=1"])
    wait_for(lambda: bridge.edge_online(seeded["api"]["alice"], edge), 30, what="edge online")
    tag = uuid.uuid4().hex[:6]
    spec = {"executable": "/bin/sh", "arguments": ["-c", "echo hello from $WHO on $SLURM_JOB_PARTITION"],
            "environment": {"WHO": "template"}, "name": f"tpl-{tag}",
            "attributes": {"queue_name": "debug", "duration": 120}}
    with BridgeClient(bridge.url, token=seeded["api"]["alice"]) as alice_bc, \
            BridgeClient(bridge.url, token=seeded["api"]["bob"]) as bob_bc:
        alice = alice_bc.get_edge_client(edge).get_plugin("psij")
        bob = bob_bc.get_edge_client(edge).get_plugin("psij")
        shared = alice.save_template(f"hello-{tag}", spec, executor="slurm", shared=True)
        private = alice.save_template(f"secret-{tag}", {"executable": "/bin/true"}, executor="slurm")
        assert shared["shared"] is True and private["shared"] is False
        # Saving a name again replaces that template and keeps its id.
        again = alice.save_template(f"hello-{tag}", spec, executor="slurm", shared=True)
        assert again["template_id"] == shared["template_id"]
        with pytest.raises(BadRequest) as bad:
            alice.save_template("broken", {"executable": "/bin/true", "attributes": {"queue": "debug"}})
        assert bad.value.error == "invalid_job_spec" and "queue_name" in bad.value.detail

        assert {(t["name"], t["mine"]) for t in alice.list_templates()} == {
            (f"hello-{tag}", True), (f"secret-{tag}", True)}
        seen = bob.list_templates()
        assert [(t["name"], t["owner"], t["mine"]) for t in seen] == [(f"hello-{tag}", "alice", False)]
        with pytest.raises(NotFound):
            bob.submit_template(private["template_id"])
        job = bob.submit_template(shared["template_id"], job_spec={"environment": {"WHO": "bob"}})
        final = bob.wait_job(job["job_id"], timeout=240, interval=0.5)
        assert (final["state"], final["stdout"]) == ("COMPLETED", "hello from bob on debug\n")
        assert final["owner"] == "bob" and final["name"] == f"tpl-{tag}"
        # The job is Bob's (Alice, the edge's owner, sees it as his); only Alice may delete her template.
        assert {j["job_id"]: j["owner"] for j in alice.list_jobs()["jobs"]}[job["job_id"]] == "bob"
        with pytest.raises(Forbidden):
            bob.delete_template(shared["template_id"])
        alice.delete_template(shared["template_id"])
        assert bob.list_templates() == []
    # Carol has no access to the edge at all.
    with BridgeClient(bridge.url, token=seeded["api"]["carol"]) as carol_bc, pytest.raises((Forbidden, NotFound)):
        carol_bc.get_edge_client(edge).get_plugin("psij").list_templates()
