"""ProcessRun (the rhapsody plugin's child processes) on both of its paths, and bounded output."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from edge_agent.plugins.rhapsody.output import BoundedOutput, clip_text
from edge_agent.plugins.rhapsody.runner import USE_PIDFD, ProcessRun

PATHS = [pytest.param(False, id="asyncio"),
         pytest.param(True, id="pidfd", marks=pytest.mark.skipif(not USE_PIDFD, reason="no pidfd_open here"))]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("use_pidfd", PATHS)
async def test_output_and_exit_code_are_collected(use_pidfd):
    run = await ProcessRun.start(["sh", "-c", "echo out; echo err >&2; exit 5"], use_pidfd=use_pidfd)
    await run.done
    assert run.returncode == 5 and run.stdout.text() == "out\n" and run.stderr.text() == "err\n"
    run.close()


@pytest.mark.parametrize("use_pidfd", PATHS)
async def test_terminate_kills_the_whole_process_group(use_pidfd):
    run = await ProcessRun.start(["sh", "-c", "sleep 300 & sleep 300; wait"], use_pidfd=use_pidfd)
    for _ in range(500):
        kids = psutil.Process(run.pid).children()
        if len(kids) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(kids) == 2
    assert await run.terminate(grace=5) == 15  # SIGTERM sufficed
    await run.done
    assert run.returncode == -15 and gone(run.pid) and all(gone(k.pid) for k in kids)
    assert await run.terminate(grace=5) is None  # already gone: nothing sent
    run.close()


@pytest.mark.parametrize("use_pidfd", PATHS)
async def test_spawn_failures_raise(use_pidfd, tmp_path):
    with pytest.raises(FileNotFoundError):
        await ProcessRun.start(["/no/such/program"], use_pidfd=use_pidfd)
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # no x bit: even root may not exec it
    with pytest.raises(PermissionError):
        await ProcessRun.start([str(script)], use_pidfd=use_pidfd)


@pytest.mark.skipif(not USE_PIDFD, reason="no pidfd_open here")
async def test_spawning_in_threads_keeps_output_and_exit_codes():
    with ThreadPoolExecutor(2) as spawner:
        runs = await asyncio.gather(*[
            ProcessRun.start(["sh", "-c", f"echo {i}; exit {i % 3}"], spawner=spawner) for i in range(40)])
        await asyncio.gather(*[r.done for r in runs])
    assert [r.stdout.text() for r in runs] == [f"{i}\n" for i in range(40)]
    assert [r.returncode for r in runs] == [i % 3 for i in range(40)]
    for r in runs:
        r.close()


def test_bounded_output_keeps_head_and_tail():
    out = BoundedOutput(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"):
        out.add(chunk)
    assert out.truncated and out.total == 26
    assert out.text() == "abcde\n[... 16 bytes truncated ...]\nvwxyz"
    small = BoundedOutput(10)
    small.add(b"0123456789")
    assert not small.truncated and small.text() == "0123456789"
    assert clip_text("x" * 20, 10) == ("xxxxx\n[... 10 characters truncated ...]\nxxxxx", True)
    assert clip_text("short", 10) == ("short", False) and clip_text(None, 10) == (None, False)
