"""Issue 20, "Also": the user role is effectively the agent's OS account, and a shared user
read the agent's ``edge.token`` through a job.

Jobs run as the agent's account, so nothing stops a job from reading what the agent can
read. What the agent does keep from them, and from other accounts:

* it refuses a token file that its group or others may read (like ssh with a private key);
* it warns when the token file sits in its state directory, where jobs' default working
  directories are;
* a token passed in ``RADICAL_EDGE_TOKEN`` is taken out of the environment jobs inherit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_agent import cli
from tests.support.live import ROOT, wait_for

FINAL = {"COMPLETED", "FAILED", "CANCELED"}


def run_agent(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RADICAL_EDGE_")}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    # Nobody listens on port 9: an agent that does not refuse keeps retrying until the timeout.
    return subprocess.run([sys.executable, "-m", "edge_agent", "--url", "http://127.0.0.1:9", *args],
                          capture_output=True, text=True, env=full_env, timeout=60)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
def test_the_agent_refuses_a_token_file_others_can_read(tmp_path, mode):
    token_file = tmp_path / "edge.token"
    token_file.write_text("re_secret\n")
    token_file.chmod(mode)
    done = run_agent("--token-file", str(token_file), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(token_file) in done.stderr and "chmod 600" in done.stderr
    assert "re_secret" not in done.stderr + done.stdout


def test_a_private_token_file_outside_the_state_dir_passes_the_checks(tmp_path):
    token_file = tmp_path / "edge.token"
    token_file.write_text("re_secret\n")
    token_file.chmod(0o600)
    assert cli.check_token_file(token_file, state_dir=tmp_path / "state") == []


def test_a_token_file_in_the_jobs_working_tree_is_warned_about(tmp_path):
    state = tmp_path / "state"
    token_file = state / "edge.token"
    state.mkdir()
    token_file.write_text("re_secret\n")
    token_file.chmod(0o600)
    [warning] = cli.check_token_file(token_file, state_dir=state)
    assert str(token_file) in warning and "state directory" in warning
    # A symlink does not hide where the token really is.
    link = tmp_path / "link.token"
    link.symlink_to(token_file)
    assert len(cli.check_token_file(link, state_dir=state)) == 1



def test_a_token_file_others_could_replace_is_warned_about(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may swap the file (no sticky bit)
    token_file = shared / "edge.token"
    token_file.write_text("re_secret\n")
    token_file.chmod(0o600)
    [warning] = cli.check_token_file(token_file, state_dir=tmp_path / "state")
    assert "replace" in warning and str(shared) in warning
    shared.chmod(0o1777)  # like /tmp: only the owner may remove or rename it
    assert cli.check_token_file(token_file, state_dir=tmp_path / "state") == []

@pytest.mark.e2e
def test_jobs_do_not_inherit_the_token_from_the_agents_environment(bridge_factory, agent_factory, unique_name):
    bridge = bridge_factory()
    seeded = bridge.seed(users=["owner"], api_tokens=["owner"], edge_tokens=[(unique_name, "owner")])
    edge_token = seeded["edge"][unique_name]
    agent_factory(bridge, edge_token, plugins="psij,rhapsody", env={"RADICAL_EDGE_TOKEN": edge_token})
    with bridge.client(seeded["api"]["owner"], timeout=60) as c:
        wait_for(lambda: bridge.edge_online(seeded["api"]["owner"], unique_name), 30, what="edge online")
        base = f"/{unique_name}"
        # A batch job through psij's local executor, with the agent's environment.
        sid = c.post(f"{base}/psij/register_session").json()["sid"]
        job = c.post(f"{base}/psij/submit/{sid}", json={"executor": "local",
                                                        "job_spec": {"executable": "/usr/bin/env"}}).json()

        def finished() -> dict | None:
            answer = c.get(f"{base}/psij/status/{sid}/{job['job_id']}").json()
            return answer if answer["state"] in FINAL else None

        status = wait_for(finished, 60, interval=0.2, what="psij job finished")
        assert status["state"] == "COMPLETED", status
        assert "PATH=" in status["stdout"]  # it did inherit the environment
        assert edge_token not in status["stdout"] and "RADICAL_EDGE_TOKEN" not in status["stdout"]
        # A rhapsody task, which inherits the agent's environment too.
        rsid = c.post(f"{base}/rhapsody/register_session").json()["sid"]
        [task] = c.post(f"{base}/rhapsody/submit/{rsid}", json={"tasks": [{"executable": "/usr/bin/env"}]}).json()
        [done] = c.post(f"{base}/rhapsody/wait/{rsid}", json={"uids": [task["uid"]], "timeout": 50}).json()
        assert done["state"] == "DONE" and "PATH=" in done["stdout"], done
        assert edge_token not in done["stdout"] and "RADICAL_EDGE_TOKEN" not in done["stdout"]
    # The agent itself still has it: it is connected, and stays so after a reconnect.
    assert bridge.edge_online(seeded["api"]["owner"], unique_name)

