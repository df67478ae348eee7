"""Submit scripts of the batch executors, rendered by psij's own templates, no scheduler.

There is no PBS, LSF or Flux here (Debian 12 packages none of them): what can be checked for
them is the script psij would hand to qsub/bsub, through the plugin's ``preview`` route, which
renders exactly what ``submit`` would. The same route for Slurm is checked against a real
Slurm in test_psij_slurm.py. Also here: how the plugin behaves without psij, and that it
imports psij off the main thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fixtures.psij.harness import PsijHarness

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "executable": "/bin/echo", "arguments": ["hello world", "$HOME"], "name": "my-job",
    "environment": {"FOO": "bar baz"},
    "attributes": {"queue_name": "debug", "account": "proj1", "duration": 3600, "node_count": 2, "process_count": 4,
                   "reservation_id": "resv1",
                   # the seed README's form: scheduler options straight in attributes
                   "slurm.constraint": "cpu", "pbs.l": "filesystems=home", "lsf.alloc_flags": "smt4"},
}


@pytest.fixture
async def psij(tmp_path):
    harness = await PsijHarness(tmp_path / "state").start()
    yield harness
    await harness.cleanup()


async def preview(psij, executor: str, spec: dict | None = None) -> dict:
    code, answer = await psij.call("POST", f"preview/{await psij.sid()}",
                                   {"job_spec": spec or SPEC, "executor": executor})
    assert code == 200, answer
    return answer


def directives(script: str, prefix: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.startswith(prefix)]


def assert_valid_bash(script: str) -> None:
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def assert_runs_the_job_into_private_files(psij, answer: dict, script: str, executor: str, native_var: str) -> None:
    state = psij.state_dir / "psij"
    assert answer["stdout_path"].startswith(str(state / "output")) and answer["stdout_path"].endswith("/stdout")
    assert answer["stdout_path"] in script and answer["stderr_path"] in script
    assert "/bin/echo 'hello world' '$HOME'" in script  # arguments are quoted, not expanded
    work = state / "work" / executor
    assert f'echo "$?" > "{work}/${native_var}.ec"' in script
    assert f'exec &>> "{work}/${native_var}.out"' in script


async def test_slurm_script(psij):
    answer = await preview(psij, "slurm")
    script = answer["script"]
    assert_valid_bash(script)
    sbatch = directives(script, "#SBATCH")
    for expected in ('--nodes=2', '--ntasks=4', '--ntasks-per-node=2', '--time=1:0:0', '--partition="debug"',
                     '--account="proj1"', '--reservation="resv1"', '--constraint="cpu"', '--job-name="my-job"',
                     '--export=ALL', f'--chdir="{answer["directory"]}"'):
        assert f"#SBATCH {expected}" in sbatch, (expected, sbatch)
    assert not any("pbs" in d or "alloc_flags" in d for d in sbatch)  # other schedulers' options stay out
    assert "export FOO='bar baz'" in script
    assert_runs_the_job_into_private_files(psij, answer, script, "slurm", "SLURM_JOB_ID")


async def test_pbs_pro_script(psij):
    answer = await preview(psij, "pbs")
    script = answer["script"]
    assert_valid_bash(script)
    pbs = directives(script, "#PBS")
    for expected in ("-l select=2:ncpus=2:mpiprocs=2", "-l walltime=1:0:0", "-A proj1", "-q debug",
                     '-l "filesystems=home"', '-N "my-job"', "-V"):
        assert f"#PBS {expected}" in pbs, (expected, pbs)
    assert f'cd "{answer["directory"]}"' in script
    assert "export FOO='bar baz'" in script
    assert_runs_the_job_into_private_files(psij, answer, script, "pbs", "PBS_JOBID")


async def test_pbs_classic_torque_script(psij):
    answer = await preview(psij, "torque")  # alias of pbs_classic
    assert answer["executor"] == "pbs_classic"
    script = answer["script"]
    assert_valid_bash(script)
    pbs = directives(script, "#PBS")
    for expected in ("-l nodes=2:ppn=2", "-l walltime=1:0:0", "-A proj1", "-q debug", '-N "my-job"'):
        assert f"#PBS {expected}" in pbs, (expected, pbs)
    assert_runs_the_job_into_private_files(psij, answer, script, "pbs_classic", "PBS_JOBID")


async def test_lsf_script(psij):
    answer = await preview(psij, "lsf")
    script = answer["script"]
    assert_valid_bash(script)
    bsub = directives(script, "#BSUB")
    for expected in ('-nnodes 2', '-n 4', '-W 1:0', '-q "debug"', '-P "proj1"', '-alloc_flags "smt4"',
                     '-J "my-job"', f'-cwd "{answer["directory"]}"', "-env FOO='bar baz'"):
        assert f"#BSUB {expected}" in bsub, (expected, bsub)
    assert_runs_the_job_into_private_files(psij, answer, script, "lsf", "LSB_JOBID")


async def test_minimal_spec_gets_the_defaults_psij_documents(psij):
    answer = await preview(psij, "slurm", {"executable": "/bin/hostname"})
    sbatch = directives(answer["script"], "#SBATCH")
    assert "#SBATCH --time=0:10:0" in sbatch  # psij's default duration
    assert "#SBATCH --nodes=1" in sbatch
    # Without a name the job would be called after the script file (gotcha 1); without a
    # directory it runs in its private job directory, not wherever the agent was started.
    assert not any("--job-name" in d for d in sbatch)
    assert answer["directory"].startswith(str(psij.state_dir / "psij" / "output"))


async def test_preview_submits_nothing_and_flux_is_reported_unavailable(psij):
    await preview(psij, "pbs")
    assert (await psij.list_jobs())["total"] == 0
    assert not any((psij.state_dir / "psij" / "output").rglob("*"))
    code, answer = await psij.call("POST", f"preview/{await psij.sid()}", {"job_spec": SPEC, "executor": "flux"})
    assert code == 400 and answer["error"] == "executor_unavailable" and "flux" in answer["detail"]
    local = await preview(psij, "local", {"executable": "/bin/echo", "arguments": ["x"]})
    assert local["command"][0] == "/bin/bash" and local["command"][-2:] == ["/bin/echo", "x"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


HOST_SCRIPT = """
import asyncio, json, sys, tempfile
from pathlib import Path
{prelude}
from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.psij.plugin import PsijPlugin

ME = Caller(user="alice", uid=7, role="user", scope="full")

async def main():
    host = PluginHost([PsijPlugin], state_dir=Path(tempfile.mkdtemp()), config={{"psij": {{"poll_interval": 1}}}})
    await host.start()
    plugin = host.plugins["psij"]
    async def call(method, path, body=None):
        r = await plugin.handle(Request(method, path, body=json.dumps(body).encode() if body else b"", caller=ME))
        return [r.status, json.loads(r.body)]
    sid = (await call("POST", "register_session", {{}}))[1]["sid"]
    out = {{}}
    out["submit"] = await call("POST", f"submit/{{sid}}", {{"job_spec": {{"executable": "/bin/true"}}}})
    out["list"] = await call("GET", f"list_jobs/{{sid}}")
    out["executors"] = await call("GET", "executors")
    out["health"] = await call("GET", "health")
    {epilogue}
    await host.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_without_psij_the_plugin_loads_and_answers_503():
    prelude = textwrap.dedent("""
        import importlib.abc
        class NoPsij(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "psij" or name.startswith("psij."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, NoPsij())
    """)
    result = run_python(HOST_SCRIPT.format(prelude=prelude, epilogue=""))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    status, answer = out["submit"]
    assert status == 503 and answer["error"] == "psij_unavailable" and "pip install" in answer["detail"]
    assert out["list"] == [200, {"jobs": [], "total": 0}]
    assert out["executors"][0] == 200 and out["executors"][1]["psij"]["available"] is False
    assert out["health"][1]["status"] == "degraded"


def test_psij_is_imported_off_the_main_thread_and_leaves_sigchld_alone():
    epilogue = textwrap.dedent("""
        import signal, threading
        out["sigchld_default"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        out["psij_loaded"] = "psij.executors.local" in sys.modules
    """).replace("\n", "\n    ")
    result = run_python(HOST_SCRIPT.format(prelude="", epilogue=epilogue))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["submit"][0] == 200
    assert out["psij_loaded"] is True and out["sigchld_default"] is True
    assert "non-main thread" not in result.stderr  # psij's expected warning is not noise in the logs


async def test_squeue_lines_psij_does_not_know_do_not_break_the_poll(psij):
    # ``squeue --me`` lists all of the agent user's jobs; psij 0.9.11 asserts on reasons it
    # does not know, which would fail every poll and then every followed job.
    ex = psij.plugin.manager.backend.executor("slurm")
    out = ("JOBID               ST                  REASON              \n"
           "41                  R                   None                \n"
           "42                  OOM                 OutOfMemory         \n"
           "43                  F                   NonZeroExitCode     \n"
           "44                  ZZ                  None                \n")
    statuses = ex.parse_status_output(0, out)
    assert {k: str(v.state) for k, v in statuses.items()} == {"41": "ACTIVE", "42": "FAILED", "43": "FAILED"}
    assert statuses["42"].message == "OutOfMemory"
    assert statuses["43"].message.startswith("The job terminated with a non-zero exit code")
    with pytest.raises(RuntimeError):  # a failing squeue is still an error
        ex.parse_status_output(1, "slurm_load_jobs error: Unable to contact slurm controller")
