"""Parameter sweeps in the SDK (edge_agent/plugins/psij/sweep.py).

The script that picks a task's argument set is run by a real ``sh``; the rhapsody path runs
the SDK's own clients against real psij and rhapsody plugins in this process (HostEdge: no
bridge, no HTTP). The array path on the real Slurm is in test_psij_arrays_slurm.py.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugins.psij.plugin import PsijPlugin
from edge_agent.plugins.psij.sweep import check_params, is_small, sweep_script
from edge_agent.plugins.rhapsody.plugin import RhapsodyPlugin
from tests.fixtures.psij.harness import HostEdge

PRINT = ["-c", 'printf "%s|" "$@"; printf "%s\\n" "${MODE:-}"', "prog"]
PARAMS = [["a b", "$HOME"], ["'quoted'", ";", "echo", "no"], {"MODE": "from env"}]


def run_task(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script, "sweep"], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)


def test_each_array_task_runs_its_own_argument_set_as_given():
    script = sweep_script("/bin/sh", PRINT, PARAMS)
    outputs = [run_task(script, {"SLURM_ARRAY_TASK_ID": str(i)}).stdout for i in range(3)]
    assert outputs == ["a b|$HOME|\n", "'quoted'|;|echo|no|\n", "|from env\n"]
    assert run_task(script, {"PBS_ARRAY_INDEX": "1"}).stdout == outputs[1]  # PBS Professional's variable
    missing = run_task(script, {"SLURM_ARRAY_TASK_ID": "3"})
    assert missing.returncode == 64 and "no argument set for array task 3" in missing.stderr


def test_bad_sweeps_are_refused_before_anything_is_submitted():
    for params, words in (([], "non-empty"), ([["a"], 5], r"params\[1\]: a list"),
                          ([{"1X": "v"}], "not an environment")):
        with pytest.raises(ValueError, match=words):
            check_params(params)
    with pytest.raises(ValueError, match="split the sweep"):
        sweep_script("/bin/echo", [], [["x" * 100] for _ in range(1000)])


@pytest.mark.parametrize(("spec", "small"), [
    ({"attributes": {"duration": 30}}, True),
    ({"attributes": {"duration": 600}}, False),
    ({}, False),  # no stated duration: it may be long
    ({"attributes": {"duration": 30, "queue_name": "debug"}}, False),
    ({"attributes": {"duration": 30, "node_count": 2}}, False),
    ({"attributes": {"duration": 30}, "custom_attributes": {"slurm.qos": "x"}}, False),
])
def test_small_tasks_are_those_rhapsody_can_run_without_the_scheduler(spec, small):
    assert is_small({"executable": "x", **spec}, 60) is small


@pytest.fixture
async def host(tmp_path):
    host = PluginHost([PsijPlugin, RhapsodyPlugin], state_dir=tmp_path / "state",
                      config={"psij": {"poll_interval": 1}, "rhapsody": {}})
    await host.start()
    yield host
    await host.stop()


async def test_a_small_sweep_runs_as_rhapsody_tasks_and_results_come_back_in_order(host):
    psij = HostEdge(host, asyncio.get_running_loop()).get_plugin("psij")
    spec = {"executable": "/bin/sh", "arguments": PRINT, "attributes": {"duration": 30}, "name": "small"}

    def run():
        sweep = psij.submit_sweep(spec, [*PARAMS, ["fail"]], executor="local")
        return sweep, sweep.wait(timeout=60)

    sweep, results = await asyncio.to_thread(run)
    assert sweep.via == "rhapsody" and len(sweep.uids) == 4
    assert [r["stdout"] for r in results[:3]] == ["a b|$HOME|\n", "'quoted'|;|echo|no|\n", "|from env\n"]
    assert [r["params"] for r in results] == [*PARAMS, ["fail"]]
    assert {r["state"] for r in results} == {"COMPLETED"} and [r["index"] for r in results] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="only an array sweep"):
        sweep.retry_failed()
    # Asked for an array on the local executor: refused with the way out.
    with pytest.raises(ValueError, match="needs a batch scheduler"):
        await asyncio.to_thread(psij.submit_sweep, spec, PARAMS, executor="local", via="array")
