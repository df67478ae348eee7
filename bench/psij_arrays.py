"""One job array against the same number of single jobs, on the real Slurm.

    python -m bench.psij_arrays                       # 20 tasks of 1 s, poll interval 1 s
    python -m bench.psij_arrays --tasks 50 --markdown docs/BENCHMARKS.md

Needs the real Slurm (``bash ../shared/scripts/slurm-up.sh``). The psij plugin runs in this
process (no bridge). ``sbatch``, ``squeue`` and ``sacct`` are wrapped by scripts on ``PATH``
that log every call and run the real command. Each row submits N tasks (each ``sleep`` for
``--seconds`` and then writes the time it ended) either as N jobs or as one array, and waits
until the plugin has every one final: how long the submits took, how many scheduler commands
ran, and the lag from the last task's end to the plugin's final state of the job(s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from bench.sections import write_section
from tests.fixtures.psij.harness import PsijHarness

SECTION = "## psij job arrays"
COMMANDS = ("sbatch", "squeue", "sacct")


async def run(mode: str, tasks: int, seconds: float, interval: float, root: Path) -> dict:
    work = root / mode
    work.mkdir()
    wrapper = work / "bin"
    wrapper.mkdir()
    for name in COMMANDS:
        real = shutil.which(name)
        (wrapper / name).write_text(f'#!/bin/sh\necho "$(date +%s.%N)" >> "{work}/{name}-calls"\nexec {real} "$@"\n')
        (wrapper / name).chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{wrapper}:{old_path}"
    done = work / "done"
    done.mkdir()
    script = f"sleep {seconds}; date +%s.%N > {done}/$1"
    harness = await PsijHarness(work / "state", {"executors": "slurm", "poll_interval": interval,
                                                 "initial_poll_delay": min(interval, 2)}).start()
    try:
        started = time.time()
        name = f"bench-array-{uuid.uuid4().hex[:6]}"
        if mode == "array":
            job = await harness.submit({"executable": "/bin/sh", "name": name, "array": f"0-{tasks - 1}",
                                        "arguments": ["-c", script.replace("$1", "$SLURM_ARRAY_TASK_ID")],
                                        "attributes": {"duration": 300}}, executor="slurm")
            ids = [job["job_id"]]
        else:
            ids = []
            for i in range(tasks):
                job = await harness.submit({"executable": "/bin/sh", "name": name,
                                            "arguments": ["-c", script, "sh", str(i)],
                                            "attributes": {"duration": 300}}, executor="slurm")
                ids.append(job["job_id"])
        submitted = time.time() - started
        for job_id in ids:
            await harness.wait_state(job_id, timeout=1800)
        seen = time.time()
        finals = [next(e for e in reversed(harness.events(j)) if e["state"] in ("COMPLETED", "FAILED"))["time"]
                  for j in ids]
        ended = max(float(p.read_text()) for p in done.iterdir())
        states = {harness.events(j)[-1]["state"] for j in ids}
    finally:
        await harness.cleanup()
        os.environ["PATH"] = old_path
    calls = {name: len((work / f"{name}-calls").read_text().split()) if (work / f"{name}-calls").exists() else 0
             for name in COMMANDS}
    return {"mode": mode, "tasks": tasks, "submit_s": submitted, "total_s": seen - started,
            "lag_s": max(max(finals) - ended, 0.0), "states": ",".join(sorted(states)), **calls}


def table(rows: list[dict]) -> str:
    lines = ["| as | tasks | submit s | until all final s | lag after the last task s | sbatch | squeue | sacct "
             "| final |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['tasks']} | {r['submit_s']:.2f} | {r['total_s']:.1f} | {r['lag_s']:.2f} "
                     f"| {r['sbatch']} | {r['squeue']} | {r['sacct']} | {r['states']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each task runs")
    parser.add_argument("--interval", type=float, default=1.0, help="psij.poll_interval")
    parser.add_argument("--markdown", help="rewrite the section of this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-array-") as tmp:
        for mode in ("jobs", "array"):
            rows.append(asyncio.run(run(mode, args.tasks, args.seconds, args.interval, Path(tmp))))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        body = (f"{SECTION}\n\nOne psij plugin on the real single-node Slurm (2 cores, shared with other work), "
                f"{args.tasks} tasks of {args.seconds:g} s as {args.tasks} jobs and as one array, poll interval "
                f"{args.interval:g} s (`python -m bench.psij_arrays`).\n\n{text}\n\nHow to read it: an array is "
                "one `sbatch` however many tasks it has, and the plugin follows all arrays of the edge with one "
                "`squeue` per interval (psij's own poller asks once more, early, and then forgets the array); "
                "the lag from the last task's end to the array's final state is about one interval, as for "
                "single jobs. `sacct` runs only for arrays `squeue` has forgotten.\n")
        write_section(args.markdown, SECTION, body)


if __name__ == "__main__":
    main()
