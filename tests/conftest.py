"""Shared fixtures. See tests/support/live.py for the real bridge and agent processes.

Tests that need a service (Redis, PostgreSQL, Slurm, Chromium) skip with a reason where it
is missing. ``RADICAL_EDGE_STRICT=1`` (set by .ci/run) turns every such skip into a
failure, so CI cannot pass by skipping; only tests marked ``optional`` may still skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.live import POSTGRES_URL, REDIS_URL, AgentProcess, LiveBridge, ScaledBackends, wait_for

STRICT = os.environ.get("RADICAL_EDGE_STRICT", "") not in ("", "0", "false", "no")

# Per-test time limits: pytest-timeout's default is in pyproject.toml ([tool.pytest.ini_options]
# timeout). Tests that wait for a real scheduler may wait minutes for a job to leave a busy
# shared node's queue, so tests marked slurm get longer unless they set their own.
MARKER_TIMEOUTS = {"slurm": 900}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("timeout") is not None:
            continue
        for marker, seconds in MARKER_TIMEOUTS.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.timeout(seconds))
                break
    if XDIST_WORKER:
        _longest_modules_first(items)


# -- parallel runs ------------------------------------------------------------------------------
# `make test` runs the suite on pytest-xdist workers with ``--dist loadfile
# --no-loadscope-reorder`` (Makefile): each module is one unit of work, so its module-scoped
# bridges, agents and browsers start once, on one worker. Isolation: each worker has a Redis
# database of its own (tests/support/live.py: worker_redis_url), its own temporary directory,
# SQLite test database (per process) and PostgreSQL databases (unique names); ports are free
# ones; and the tests that use the real Slurm take turns, two at a time (slurm_tests_share_the_node).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def _longest_modules_first(items) -> None:
    """Hand out the modules that take longest first, as far as their markers tell (browser or
    Slurm, then other end-to-end tests, then the rest), so that no long module starts last
    and leaves the other workers idle at the end. Modules and the tests in them keep their
    order otherwise. Every worker sorts alike (xdist requires the same collection)."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def weight(name: str) -> int:
        members = modules[name]
        if any(i.get_closest_marker("browser") or i.get_closest_marker("slurm") for i in members):
            return 0
        return 1 if any(i.get_closest_marker("e2e") for i in members) else 2

    items[:] = [item for name in sorted(modules, key=weight) for item in modules[name]]


# Slurm tests run two at a time, one per CPU of the single node (``scontrol show node``).
SLURM_SLOTS = 2


@pytest.fixture(autouse=True)
def slurm_tests_share_the_node(request, tmp_path_factory):
    """Tests marked slurm take turns across the workers of a parallel run, two at a time:
    each holds one of SLURM_SLOTS lock files in the run's temporary directory (which the
    workers share). Two such tests' jobs only ever wait for each other's CPU, as they would
    for another engineer's on a shared cluster. A test that needs the node to itself, because
    it needs both CPUs at once or asserts what the scheduler says of a pending job or of the
    node's load, is also marked ``slurm_alone`` and holds every slot, as in a serial run."""
    if not XDIST_WORKER or request.node.get_closest_marker("slurm") is None:
        yield
        return
    folder = tmp_path_factory.getbasetemp().parent
    with contextlib.ExitStack() as files:  # closing a lock file releases its lock
        slots = [files.enter_context(open(folder / f"slurm-slot-{i}.lock", "a")) for i in range(SLURM_SLOTS)]
        _take_slurm_slots(slots, alone=request.node.get_closest_marker("slurm_alone") is not None)
        yield


def _take_slurm_slots(slots: list, *, alone: bool) -> None:
    """Lock every slot in order (``alone``; taking them in one order cannot deadlock), or
    the first free one, waiting for any to come free."""
    if alone:
        for slot in slots:
            fcntl.flock(slot, fcntl.LOCK_EX)
        return
    while True:
        for slot in slots:
            try:
                fcntl.flock(slot, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
        time.sleep(0.2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if STRICT and report.skipped and item.get_closest_marker("optional") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in strict mode (RADICAL_EDGE_STRICT=1), which CI forbids: {reason}"


def _port_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available() -> bool:
    return _port_open(POSTGRES_URL, 5432)


def redis_available() -> bool:
    return _port_open(REDIS_URL, 6379)


@pytest.fixture(scope="session")
def scaled_backends(tmp_path_factory):
    """A fresh, migrated PostgreSQL database and a Redis database for the scaled-out mode."""
    if not postgres_available():
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")
    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    backends = ScaledBackends()
    backends.create()
    LiveBridge(tmp_path_factory.mktemp("scaled-migrate"), env=backends.env()).migrate()
    yield backends
    backends.drop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite database, copied for each embedded bridge instead of migrating."""
    var = tmp_path_factory.mktemp("sqlite-template")
    LiveBridge(var).migrate()
    return var / "db.sqlite3"


@pytest.fixture
def tmp_var(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture
def bridge_factory(tmp_path: Path, request):
    """Start bridges: ``bridge_factory(mode="embedded"|"scaled", **LiveBridge kwargs)``."""
    started: list[LiveBridge] = []

    def make(mode: str = "embedded", *, migrate: bool = True, start: bool = True, var_dir: Path | None = None,
             env: dict[str, str] | None = None, **kwargs) -> LiveBridge:
        extra = dict(env or {})
        if mode == "scaled":
            extra = {**request.getfixturevalue("scaled_backends").env(), **extra}
        bridge = LiveBridge(var_dir or tmp_path / f"bridge-{len(started)}", env=extra, **kwargs)
        started.append(bridge)
        if migrate and mode != "scaled":  # the scaled database is migrated once per session
            bridge.migrate(template=request.getfixturevalue("sqlite_template"))
        if start:
            bridge.start()
        return bridge

    yield make
    failed = _failed(request)
    for bridge in started:
        bridge.stop()
        if failed:
            print(f"--- bridge log {bridge.url} ---\n{bridge.log()[-6000:]}")


def _failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return bool(rep is not None and rep.failed)


@pytest.fixture
def agent_factory(tmp_path: Path, request):
    """Start real agents: ``agent_factory(bridge, token, plugins="sysinfo", ...)``."""
    started: list[AgentProcess] = []

    def make(bridge: LiveBridge, token: str, **kwargs) -> AgentProcess:
        agent = AgentProcess(bridge.url, token, tmp_path, **kwargs)
        started.append(agent)
        return agent.start()

    yield make
    failed = _failed(request)
    for agent in started:
        agent.stop()
        if failed:
            print(f"--- agent log {agent.state_dir} ---\n{agent.log()[-6000:]}")


@pytest.fixture
def unique_name() -> str:
    return f"e{uuid.uuid4().hex[:10]}"


@pytest.fixture
def edge_setup(bridge_factory, agent_factory, unique_name):
    """A started embedded bridge, an owner with an API token, and a connected agent.

    Returns a namespace with ``bridge``, ``agent``, ``edge``, ``token`` (API token)."""

    def make(mode: str = "embedded", plugins: str = "sysinfo,tests.plugins.echo:EchoPlugin", **agent_kwargs):
        bridge = bridge_factory(mode)
        # The scaled database is shared by the session's tests: a user of its own there, so
        # that what this owner sees is this test's alone.
        owner = "owner" if mode == "embedded" else f"owner-{unique_name}"
        seeded = bridge.seed(users=[owner], api_tokens=[owner], edge_tokens=[(unique_name, owner)])
        token, edge_token = seeded["api"][owner], seeded["edge"][unique_name]
        agent = agent_factory(bridge, edge_token, plugins=plugins, **agent_kwargs)
        wait_for(lambda: bridge.edge_online(token, unique_name), 20, what=f"edge {unique_name} online")
        return type("EdgeSetup", (), {"bridge": bridge, "agent": agent, "edge": unique_name, "token": token,
                                      "edge_token": edge_token, "owner": owner})

    return make


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for the module's browser tests (tests/support/browser.py)."""
    from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, _playwright

    sync_playwright = _playwright()
    manager = sync_playwright().start()
    chromium = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    manager.stop()


def have_executable(name: str) -> bool:
    return shutil.which(name) is not None


def pytest_unconfigure(config):
    """Remove the WAL side files of this run's SQLite test database (see settings)."""
    import glob
    import tempfile

    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"radical-edge-test-{os.getpid()}.sqlite3*")):
        try:
            os.remove(path)
        except OSError:
            pass

