"""Child processes of executable tasks, owned by the agent from start to end.

rhapsody's own process handling cannot be used for this: its ``cancel_task`` cancels an
asyncio task and leaves the process running, and it reads all output into memory. A
:class:`ProcessRun` instead

* starts the child in a new session (its own process group), so that the task and
  everything it spawned can be signalled at once;
* keeps stdout/stderr bounded (:class:`~.output.BoundedOutput`);
* on :meth:`terminate` sends SIGTERM to the group, then SIGKILL after a grace period, and
  returns only when the child is gone;
* when the child exits, kills what it left running in its group (which would otherwise
  hold the output pipes open and outlive the task).

On Linux 5.3+ the exit is watched with a pidfd on the event loop (no thread per child, and
the group can be signalled before the child is reaped, so its id cannot have been reused);
elsewhere asyncio's subprocess machinery is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import IO, Any

from .output import BoundedOutput

log = logging.getLogger("edge_agent.plugins.rhapsody")

# How long to keep reading a pipe after the child exited, in case a process that escaped
# the group (setsid) still holds it open.
PIPE_GRACE = 2.0
READ_SIZE = 65536


def _pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # kernel older than 5.3
        return False
    os.close(fd)
    return True


USE_PIDFD = _pidfd_supported()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ProcessRun:
    """One child process: its pid, bounded output, exit code and the signals sent to it.

    Create with :meth:`start`. ``exited`` resolves with the exit code (negative: killed by
    that signal); ``done`` resolves once the child exited and its output was collected.
    """

    def __init__(self, output_limit: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.pid: int | None = None
        self.returncode: int | None = None
        self.stdout = BoundedOutput(output_limit)
        self.stderr = BoundedOutput(output_limit)
        self.exited: asyncio.Future[int] = self._loop.create_future()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.signals: list[int] = []
        self.pipes_abandoned = False
        self._open_pipes = 2
        self._popen: subprocess.Popen | None = None
        self._pidfd: int | None = None
        self._streams: list[IO[bytes]] = []
        self._transport: asyncio.SubprocessTransport | None = None
        self._grace_handle: asyncio.TimerHandle | None = None

    @classmethod
    async def start(cls, argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                    output_limit: int = 65536, spawner: Executor | None = None,
                    use_pidfd: bool | None = None) -> ProcessRun:
        """Start ``argv`` (no shell). Raises OSError if it cannot be started (missing
        executable or cwd, permission denied, out of processes or file descriptors).

        With ``spawner`` (a thread pool) the fork/exec happens in its threads: it blocks
        the calling thread until the child has exec'd, so doing it off the event loop
        keeps the loop responsive, and several threads overlap spawns (measured on 2
        cores, agent alone: about 600-900 ``/bin/true`` tasks per second spawned on the
        loop, 1,100-1,200 with three spawn threads)."""
        run = cls(output_limit)
        if USE_PIDFD if use_pidfd is None else use_pidfd:
            await run._start_pidfd(argv, cwd, env, spawner)
        else:
            await run._start_asyncio(argv, cwd, env)
        return run

    # -- starting ------------------------------------------------------------------------

    async def _start_pidfd(self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None,
                           spawner: Executor | None) -> None:
        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True, close_fds=True)

        popen: subprocess.Popen[bytes]
        if spawner is None:
            popen = spawn()
        else:
            future = self._loop.run_in_executor(spawner, spawn)
            try:
                popen = await asyncio.shield(future)
            except asyncio.CancelledError:
                future.add_done_callback(_kill_orphan)  # the spawn goes on in its thread
                raise
        self._popen = popen
        self.pid = popen.pid
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except OSError:
            # Out of file descriptors: do not leave a child we cannot watch.
            popen.kill()
            popen.wait()
            for stream in (popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()
            raise
        for stream, buf in ((popen.stdout, self.stdout), (popen.stderr, self.stderr)):
            assert stream is not None
            os.set_blocking(stream.fileno(), False)
            self._streams.append(stream)
            self._loop.add_reader(stream.fileno(), self._on_readable, stream, buf)
        self._loop.add_reader(self._pidfd, self._on_pidfd)

    async def _start_asyncio(self, argv: Sequence[str], cwd: str | None, env: Mapping[str, str] | None) -> None:
        transport, _ = await self._loop.subprocess_exec(
            lambda: _Protocol(self), *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
        )
        self._transport = transport
        self.pid = transport.get_pid()

    # -- pidfd path ----------------------------------------------------------------------

    def _on_readable(self, stream: IO[bytes], buf: BoundedOutput) -> None:
        try:
            data = os.read(stream.fileno(), READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            buf.add(data)
            return
        self._loop.remove_reader(stream.fileno())
        stream.close()
        self._streams.remove(stream)
        self._pipe_closed()

    def _on_pidfd(self) -> None:
        assert self._popen is not None and self._pidfd is not None
        # The child is a zombie now: its pid (= the group id) cannot be reused until it is
        # reaped, so signalling the group here cannot hit an unrelated process.
        self._signal_group(signal.SIGKILL, record=False)
        returncode = self._popen.poll()
        if returncode is None:
            return  # spurious wake-up
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._on_exit(returncode)

    # -- shared --------------------------------------------------------------------------

    def _on_exit(self, returncode: int) -> None:
        if self.returncode is not None:
            return
        self.returncode = returncode
        if self._transport is not None:
            # asyncio reaped the child already; best effort for what it left behind.
            self._signal_group(signal.SIGKILL, record=False)
        if not self.exited.done():
            self.exited.set_result(returncode)
        if self._open_pipes:
            self._grace_handle = self._loop.call_later(PIPE_GRACE, self._abandon_pipes)
        self._maybe_done()

    def _pipe_closed(self) -> None:
        self._open_pipes = max(0, self._open_pipes - 1)
        self._maybe_done()

    def _abandon_pipes(self) -> None:
        """A process outside the task's group still holds the output pipes: stop reading."""
        self.pipes_abandoned = True
        for stream in list(self._streams):
            self._loop.remove_reader(stream.fileno())
            stream.close()
        self._streams.clear()
        if self._transport is not None:
            self._transport.close()
        self._open_pipes = 0
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.returncode is None or self._open_pipes > 0 or self.done.done():
            return
        if self._grace_handle is not None:
            self._grace_handle.cancel()
        if self._transport is not None:
            self._transport.close()
        self.done.set_result(None)

    def _signal_group(self, signum: int, *, record: bool = True) -> bool:
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        except PermissionError as exc:  # a setuid program in the group
            log.warning("rhapsody: cannot signal process group %s: %s", self.pid, exc)
            return False
        if record:
            self.signals.append(signum)
        return True

    # -- public --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.returncode is None

    async def terminate(self, grace: float) -> int | None:
        """SIGTERM the task's process group, SIGKILL it after ``grace`` seconds; return once
        the child exited. Returns the last signal sent, or None if it had already exited."""
        if self.returncode is not None:
            return None
        assert self.pid is not None
        deadline = time.monotonic() + grace
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), grace)
        except asyncio.TimeoutError:
            self._signal_group(signal.SIGKILL)
            await asyncio.shield(self.exited)
        # The leader is gone; the rest of its group got the same signals (and SIGKILL when
        # the leader exited): return only once none of them runs any more.
        while group_alive(self.pid):
            if time.monotonic() > deadline and signal.SIGKILL not in self.signals:
                self._signal_group(signal.SIGKILL)
            if time.monotonic() > deadline + 5:
                log.warning("rhapsody: processes of group %s outlived SIGKILL", self.pid)
                break
            await asyncio.sleep(0.01)
        return self.signals[-1] if self.signals else None

    def close(self) -> None:
        """Release file descriptors and loop readers (after ``done``, or on shutdown)."""
        for stream in list(self._streams):
            try:
                self._loop.remove_reader(stream.fileno())
            except (ValueError, RuntimeError):
                pass
            stream.close()
        self._streams.clear()
        if self._pidfd is not None:
            try:
                self._loop.remove_reader(self._pidfd)
            except RuntimeError:
                pass
            os.close(self._pidfd)
            self._pidfd = None
        if self._transport is not None:
            self._transport.close()


def _kill_orphan(future: asyncio.Future) -> None:
    """A process spawned for a task that was canceled during the spawn: end it at once."""
    if future.cancelled() or future.exception() is not None:
        return
    popen: subprocess.Popen = future.result()
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except OSError:
        pass
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()
    popen.wait()  # SIGKILLed: returns at once


class _Protocol(asyncio.SubprocessProtocol):
    """Feeds asyncio's subprocess events into a ProcessRun (the path without pidfd)."""

    def __init__(self, run: ProcessRun) -> None:
        self.run = run
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run._transport = transport  # type: ignore[assignment]
        self.run.pid = transport.get_pid()  # type: ignore[attr-defined]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        (self.run.stdout if fd == 1 else self.run.stderr).add(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.run._pipe_closed()

    def process_exited(self) -> None:
        assert self.transport is not None
        returncode = self.transport.get_returncode()
        assert returncode is not None  # the process has exited
        self.run._on_exit(returncode)


def run_blocking(argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
                 output_limit: int = 65536, pid_file: str | None = None, timeout: float | None = None,
                 kill_grace: float = 3.0) -> dict:
    """Run ``argv`` to the end in the calling thread: the executable-task runner of backends
    that run tasks elsewhere (a dask worker). Same rules as :class:`ProcessRun`: own process
    group, bounded output, leftovers killed at exit. While it runs, its pid is in
    ``pid_file`` (if that can be written), so that the agent can kill the group on cancel.

    Returns ``{"returncode", "stdout", "stderr", "truncated": [...], "timed_out"}``;
    raises OSError if it cannot start.
    """
    import selectors

    popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=cwd, env=env, start_new_session=True, close_fds=True)
    if pid_file:
        try:
            tmp = f"{pid_file}.tmp"
            with open(tmp, "w") as fh:
                fh.write(str(popen.pid))
            os.replace(tmp, pid_file)
        except OSError:
            pid_file = None  # a remote worker without the agent's directory: not killable from there
    assert popen.stdout is not None and popen.stderr is not None
    buffers: dict[Any, BoundedOutput] = {popen.stdout: BoundedOutput(output_limit),
                                         popen.stderr: BoundedOutput(output_limit)}
    timed_out = False
    deadline = None if timeout is None else time.monotonic() + timeout
    exited_at: float | None = None
    try:
        with selectors.DefaultSelector() as selector:
            for stream in buffers:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select(timeout=0.1):
                    data = os.read(key.fd, READ_SIZE)
                    if data:
                        buffers[key.fileobj].add(data)
                    else:
                        selector.unregister(key.fileobj)
                now = time.monotonic()
                if exited_at is None and popen.poll() is not None:
                    exited_at = now
                    _killpg(popen.pid, signal.SIGKILL)  # what it left running in its group
                if exited_at is not None and now - exited_at > PIPE_GRACE:
                    break  # a process outside the group holds the pipes
                if deadline is not None and not timed_out and exited_at is None and now > deadline:
                    timed_out = True
                    _killpg(popen.pid, signal.SIGTERM)
                    try:
                        popen.wait(kill_grace)
                    except subprocess.TimeoutExpired:
                        _killpg(popen.pid, signal.SIGKILL)
        returncode = popen.wait()
    finally:
        for stream in buffers:
            stream.close()
        if popen.poll() is None:
            _killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        if pid_file:
            try:
                os.unlink(pid_file)
            except OSError:
                pass
    out, err = buffers[popen.stdout], buffers[popen.stderr]
    return {"returncode": returncode, "stdout": out.text(), "stderr": err.text(),
            "truncated": [k for k, b in (("stdout", out), ("stderr", err)) if b.truncated], "timed_out": timed_out}


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, which only wait to be
    reaped, do not count). Reads /proc; elsewhere, whether the group can be signalled."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return _killpg(pgid, 0)
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _killpg(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def kill_group(pgid: int, grace: float) -> int | None:
    """SIGTERM process group ``pgid`` (not our child: a dask worker's), SIGKILL it after
    ``grace`` seconds; return the last signal sent once the group is gone (None if it was
    gone already)."""
    if not _killpg(pgid, signal.SIGTERM):
        return None
    sent = signal.SIGTERM
    deadline = time.monotonic() + grace
    # A process stuck in the kernel (D state, a dead NFS server) ignores even SIGKILL.
    give_up = deadline + 5.0
    while group_alive(pgid) and time.monotonic() < give_up:
        if sent == signal.SIGTERM and time.monotonic() > deadline:
            _killpg(pgid, signal.SIGKILL)
            sent = signal.SIGKILL
        await asyncio.sleep(0.02)
    return int(sent)
