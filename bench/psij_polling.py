"""How fresh psij job states are, and how often the scheduler is asked, per poll interval.

    python -m bench.psij_polling                          # intervals 1,5,15 s; 10 jobs each
    python -m bench.psij_polling --intervals 2,30 --jobs 20
    python -m bench.psij_polling --markdown docs/BENCHMARKS.md   # rewrite that section

Needs the real Slurm (``bash ../shared/scripts/slurm-up.sh``). The psij plugin runs in this
process (no bridge: the bridge adds nothing to polling) with ``poll_interval`` set; ``squeue``
is wrapped by a script on ``PATH`` that logs every call and runs the real one. Each job writes
the time it ended (``date +%s.%N``) as its last command; the lag is from then to the plugin's
final state. "squeue calls per interval" is calls over the run's wall time, in intervals: the
plugin asks once per interval for all jobs of the executor, however many there are.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.sections import write_section
from tests.fixtures.psij.harness import PsijHarness

SECTION = "## psij status polling"


async def run(interval: float, jobs: int, seconds: float, root: Path) -> dict:
    work = root / f"i{interval:g}"
    work.mkdir()
    calls = work / "squeue-calls"
    wrapper = work / "bin"
    wrapper.mkdir()
    real = shutil.which("squeue")
    (wrapper / "squeue").write_text(f'#!/bin/sh\necho "$(date +%s.%N)" >> "{calls}"\nexec {real} "$@"\n')
    (wrapper / "squeue").chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{wrapper}:{old_path}"
    harness = await PsijHarness(work / "state", {"executors": "slurm", "poll_interval": interval,
                                                 "initial_poll_delay": min(interval, 2)}).start()
    try:
        started = time.time()
        submitted = []
        for i in range(jobs):
            done = work / f"done-{i}"
            job = await harness.submit({"executable": "/bin/sh", "name": f"bench-poll-{uuid.uuid4().hex[:6]}",
                                        "arguments": ["-c", f"sleep {seconds}; date +%s.%N > {done}"],
                                        "attributes": {"duration": 300}}, executor="slurm")
            submitted.append((job["job_id"], done))
        lags = []
        for job_id, done in submitted:
            await harness.wait_state(job_id, timeout=900)
            seen = time.time()  # upper bound of when the plugin saw it (polled every 0.1 s below)
            final = next(e for e in reversed(harness.events(job_id)) if e["state"] in ("COMPLETED", "FAILED"))
            ended = float(done.read_text().strip()) if done.exists() else None
            if ended is not None:
                lags.append(max(final.get("time") or seen, ended) - ended)
        elapsed = time.time() - started
        stamps = [float(v) for v in calls.read_text().split()] if calls.exists() else []
        count = len(stamps)
        gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # after the early first poll
    finally:
        await harness.cleanup()
        os.environ["PATH"] = old_path
    return {"interval": interval, "jobs": jobs, "elapsed": elapsed, "calls": count,
            "per_interval": count / (elapsed / interval), "min_gap": min(gaps) if gaps else None,
            "lag_p50": statistics.median(lags) if lags else None,
            "lag_max": max(lags) if lags else None}


def table(rows: list[dict]) -> str:
    lines = ["| poll interval s | jobs | run s | squeue calls | calls per interval | shortest gap s | lag p50 s "
             "| lag max s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gap = "-" if r["min_gap"] is None else f"{r['min_gap']:.2f}"
        lines.append(f"| {r['interval']:g} | {r['jobs']} | {r['elapsed']:.1f} | {r['calls']} | {r['per_interval']:.2f} "
                     f"| {gap} | {r['lag_p50']:.2f} | {r['lag_max']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", default="1,5,15")
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each job runs")
    parser.add_argument("--markdown", help="rewrite the section of this file")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        for interval in [float(v) for v in args.intervals.split(",")]:
            rows.append(asyncio.run(run(interval, args.jobs, args.seconds, Path(tmp))))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        body = (f"{SECTION}\n\nOne psij plugin on the real single-node Slurm, `{args.jobs}` jobs of {args.seconds:g} s "
                f"submitted at once per row (`python -m bench.psij_polling`).\n\n{text}\n\nHow to read it: the "
                "plugin polls `squeue` once per interval for all of an executor's jobs (one `squeue --me` "
                "whatever the number of jobs), so the shortest gap between two calls is the interval; the "
                "first poll comes early (`initial_poll_delay`, at most 2 s), which is why short runs show a "
                "little over one call per interval. The lag from a job's end to its final state is at most "
                "about one interval; psij's own default interval is 30 s. `poll_interval` goes from 1 s to "
                "minutes (`--option psij.poll_interval=…`).\n")
        write_section(args.markdown, SECTION, body)


if __name__ == "__main__":
    main()
