"""The agent installs and imports on an HPC node without Django."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_edge_agent_never_imports_django():
    code = (
        "import sys\n"
        "import edge_agent, edge_agent.service, edge_agent.cli, edge_agent.client, edge_agent.registry\n"
        "from edge_agent.registry import available_plugins, load_plugin\n"
        "from edge_agent.client.plugin import CLIENTS, client_class\n"
        "for spec in available_plugins().values():\n"
        "    try:\n"
        "        load_plugin(spec)\n"
        "    except ImportError:\n"
        "        pass\n"
        "for name in CLIENTS:\n"
        "    client_class(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'channels', 'rest_framework'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_original_import_path_is_the_sdk_without_django():
    code = (
        "import sys, warnings\n"
        "from radical.edge import BridgeClient, EdgeClient, PluginClient\n"
        "from radical.edge.client import BridgeClient as B\n"
        "import edge_agent.client as ours\n"
        "assert BridgeClient is B is ours.BridgeClient and EdgeClient is ours.EdgeClient\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'channels', 'rest_framework')]\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.e2e
@pytest.mark.timeout(660)  # a fresh venv and pip install from the index (pip itself may take 600 s)
def test_agent_pip_installs_alone_and_runs(tmp_path):
    """`pip install ./edge_agent` in a fresh venv gives a working radical-edge-service and
    SDK, with no Django. Dependencies come from the local pip cache/index as for users."""
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(target)
    pip = target / "bin" / "pip"
    result = subprocess.run([str(pip), "install", "-q", str(ROOT / "edge_agent")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = subprocess.run([str(target / "bin" / "radical-edge-service"), "--list-plugins"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "sysinfo" in listed.stdout and "psij" in listed.stdout
    check = subprocess.run(
        [str(target / "bin" / "python"), "-c",
         "import importlib.util, edge_agent.client, edge_agent.plugins.sysinfo.plugin; "
         "from radical.edge import BridgeClient; from radical.edge.client import EdgeClient; "
         "assert BridgeClient is edge_agent.client.BridgeClient; "
         "assert importlib.util.find_spec('django') is None; print('ok')"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert check.stdout.strip() == "ok", check.stderr
    usage = subprocess.run([str(target / "bin" / "radical-edge-service")], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert usage.returncode == 2 and "no bridge URL" in usage.stderr
