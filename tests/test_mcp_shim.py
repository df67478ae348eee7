"""The stdio shim's command line, without a bridge: the agent package stays importable
without the mcp SDK, and the shim refuses what it cannot use before it starts."""

from __future__ import annotations

import os
import subprocess
import sys

from edge_agent import mcp_shim
from edge_agent.cli import tool_main
from tests.support.live import ROOT


def test_agent_package_imports_the_shim_without_the_mcp_sdk():
    code = ("import sys, edge_agent.cli, edge_agent.mcp_shim\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'django'))\n"
            "assert not bad, bad\nprint('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_shim_refuses_a_token_file_others_may_read_and_missing_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RADICAL_BRIDGE_URL", raising=False)
    monkeypatch.delenv("RADICAL_API_TOKEN", raising=False)
    token = tmp_path / "api.token"
    token.write_text("re_api_x\n")
    token.chmod(0o644)
    assert tool_main(["mcp", "--token-file", str(token)]) == 2
    assert "no bridge URL" in capsys.readouterr().err
    assert tool_main(["mcp", "--url", "http://127.0.0.1:9", "--token-file", str(token)]) == 2
    assert "chmod 600" in capsys.readouterr().err
    token.chmod(0o600)
    assert mcp_shim.read_token(str(token)) == "re_api_x"
    assert tool_main(["frobnicate"]) == 2 and "unknown command" in capsys.readouterr().err
