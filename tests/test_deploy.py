"""The deployment files in deploy/: the nginx configuration the docs show, the systemd units
(checked by ``systemd-analyze verify``) and the batch-job wrapper that runs an agent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from radical_edge_site.nginx import DOCS, SITE_CONF, Nginx, docs_with_site_conf, nginx_binary, render_site
from tests.support.live import free_port, wait_for

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = DEPLOY / "systemd"
WRAPPER = DEPLOY / "batch" / "radical-edge-agent-job.sh"
VENV_BIN = Path(sys.executable).parent
HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "User=radical-edge", "EnvironmentFile=/etc/radical-edge/bridge.env", "CapabilityBoundingSet=\n")


def test_the_docs_show_the_nginx_configuration_verbatim():
    text = DOCS.read_text()
    assert docs_with_site_conf(text) == text, (
        "docs/OPERATIONS.md differs from deploy/nginx/radical-edge.conf: run python -m radical_edge_site.nginx")


def test_rendering_refuses_a_configuration_it_cannot_substitute(tmp_path):
    rendered = render_site(https_port=1443, http_port=1080, upstreams=[9001, 9002, 9003], cert=tmp_path / "c.pem",
                           key=tmp_path / "k.pem")
    assert "listen 127.0.0.1:1443 ssl http2;" in rendered and "bridge.example.org" not in rendered
    assert [line.split()[1] for line in rendered.splitlines() if line.strip().startswith("server 127.0.0.1:")] == [
        "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
    changed = SITE_CONF.read_text().replace("listen 443 ssl http2;", "listen 443 ssl;")
    with pytest.raises(ValueError, match="listen 443 ssl http2"):
        render_site(https_port=1443, http_port=1080, upstreams=[9001], cert=tmp_path / "c.pem",
                    key=tmp_path / "k.pem", text=changed)


@pytest.mark.nginx
def test_nginx_accepts_the_configuration(tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    import trustme

    cert = trustme.CA().issue_cert("localhost")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    nginx = Nginx(tmp_path / "nginx", https_port=free_port(), http_port=free_port(), upstreams=[8001, 8002],
                  cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    nginx.write()
    assert "test is successful" in nginx.test_config()


def _units_for_verify(tmp_path: Path) -> Path:
    """The units with their commands pointing into this virtualenv: ``verify`` insists that
    ExecStart binaries exist."""
    out = tmp_path / "units"
    out.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text().replace("/opt/radical-edge/venv/bin/", f"{VENV_BIN}/")
        text = text.replace("%h/.radical/venv/bin/", f"{VENV_BIN}/")
        (out / unit.name).write_text(text)
    return out


def _verify(args: list[str], cwd: Path, env: dict | None = None) -> None:
    result = subprocess.run(["systemd-analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                            env=env)
    # verify exits 0 on unknown or misspelt settings and only says so: any word is a failure.
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        f"systemd-analyze {' '.join(args)}:\n{result.stdout}\n{result.stderr}")


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run installs it)")
    units = _units_for_verify(tmp_path)
    _verify(["verify", "./radical-edge-bridge@8001.service", "./radical-edge-prune.service",
             "./radical-edge-prune.timer"], units)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    _verify(["--user", "verify", "./radical-edge-agent.service"], units,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    # A misspelt value is caught (so the check above is worth something).
    broken = units / "radical-edge-broken@.service"
    broken.write_text((units / "radical-edge-bridge@.service").read_text().replace(
        "ProtectSystem=strict", "ProtectSystem=strickt"))
    with pytest.raises(AssertionError, match="strickt"):
        _verify(["verify", "./radical-edge-broken@8001.service"], units)


@pytest.mark.parametrize("unit", ["radical-edge-bridge@.service", "radical-edge-prune.service"])
def test_bridge_side_units_run_hardened_as_a_dedicated_user(unit):
    text = (UNITS / unit).read_text()
    for option in HARDENING:
        assert option in text, f"{unit} lacks {option.strip()}"


def test_the_bridge_unit_gives_the_drain_time_to_finish():
    text = (UNITS / "radical-edge-bridge@.service").read_text()
    stop_timeout = int(text.split("TimeoutStopSec=")[1].split()[0])
    assert stop_timeout > 30  # docs/OPERATIONS.md: drain (20 s) plus the server's own shutdown
    assert "--port %i" in text and "--host 127.0.0.1" in text


@pytest.mark.e2e
def test_the_batch_wrapper_runs_an_agent_and_stops_it_cleanly_on_sigterm(edge_setup, tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    site = edge_setup()  # an agent already serves site.edge; the wrapper's agent gets its own edge
    name = site.edge + "b"
    token = site.bridge.edge_token(name, owner="owner")
    token_file = tmp_path / "batch.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {**os.environ, "RADICAL_BRIDGE_URL": site.bridge.url, "RADICAL_EDGE_TOKEN_FILE": str(token_file),
           "RADICAL_EDGE_AGENT": f"{sys.executable} -m edge_agent", "RADICAL_EDGE_PLUGINS": "sysinfo",
           "RADICAL_EDGE_STATE_DIR": str(tmp_path / "state"), "SLURM_JOB_ID": "4242",
           "PYTHONPATH": str(DEPLOY.parent)}
    log = tmp_path / "job.out"
    with open(log, "wb") as out:
        job = subprocess.Popen(["bash", str(WRAPPER)], env=env, stdout=out, stderr=subprocess.STDOUT,
                               cwd=tmp_path)
    try:
        wait_for(lambda: site.bridge.edge_online(site.token, name), 30, what="the batch agent online")
        with site.bridge.client(site.token) as c:
            assert c.get(f"/{name}/sysinfo/version").json()["plugin"] == "sysinfo"
        job.send_signal(signal.SIGTERM)  # what scancel and Slurm's --signal=B:TERM do
        assert job.wait(30) == 0, log.read_text()
    finally:
        if job.poll() is None:
            job.kill()
    assert not site.bridge.edge_online(site.token, name)  # it said bye, not just vanished
    text = log.read_text()
    assert "job 4242" in text and "agent exited with 0" in text
    assert (tmp_path / "state").is_dir()
