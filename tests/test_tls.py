"""TLS between agent and bridge, for real: the bridge serves TLS itself (RADICAL_BRIDGE_CERT
and RADICAL_BRIDGE_KEY) with a certificate from a throwaway CA, and real agents connect."""

from __future__ import annotations

import re
import ssl
import time

import httpx
import pytest
import trustme

from tests.support.live import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def tls_bridge(bridge_factory, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=i > 0)
    bridge = bridge_factory(start=False, env={"RADICAL_BRIDGE_CERT": str(cert_file),
                                              "RADICAL_BRIDGE_KEY": str(key_file)})
    bridge.url = f"https://127.0.0.1:{bridge.port}"
    bridge.start(wait=False)
    trusted = ssl.create_default_context(cafile=str(ca_file))
    wait_for(lambda: httpx.get(f"{bridge.url}/healthz", verify=trusted, timeout=1).status_code == 200, 30,
             what="TLS bridge /healthz")
    bridge.create_user("owner")
    token = bridge.api_token("owner")
    return type("TLSBridge", (), {"bridge": bridge, "ca_file": ca_file, "token": token})


def online(setup, name: str) -> bool:
    with httpx.Client(base_url=setup.bridge.url, verify=ssl.create_default_context(cafile=str(setup.ca_file)),
                      headers={"Authorization": f"Bearer {setup.token}"}) as c:
        return any(e["name"] == name and e["connected"] for e in c.get("/edges").json()["edges"])


def test_agent_with_the_site_ca_connects_over_tls(tls_bridge, agent_factory, unique_name):
    edge_token = tls_bridge.bridge.edge_token(unique_name, owner="owner")
    agent_factory(tls_bridge.bridge, edge_token, extra_args=["--ca-cert", str(tls_bridge.ca_file)])
    wait_for(lambda: online(tls_bridge, unique_name), 20, what="edge online over TLS")
    with httpx.Client(base_url=tls_bridge.bridge.url, verify=ssl.create_default_context(cafile=str(tls_bridge.ca_file)),
                      headers={"Authorization": f"Bearer {tls_bridge.token}"}) as c:
        assert c.get(f"/{unique_name}/sysinfo/version").json()["plugin"] == "sysinfo"
    # Plain HTTP to the TLS port gets nowhere.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_bridge.bridge.port}/healthz", timeout=2)


def test_agent_without_the_ca_refuses_the_bridge_clearly_and_backs_off(tls_bridge, agent_factory, unique_name):
    edge_token = tls_bridge.bridge.edge_token(unique_name, owner="owner")
    agent = agent_factory(tls_bridge.bridge, edge_token)
    time.sleep(6)
    log = agent.log()
    attempts = re.findall(r"TLS error: the bridge's certificate is not trusted", log)
    assert attempts, log[-3000:]
    assert "--ca-cert" in log and "unable to get local issuer certificate" in log
    # Exponential backoff (0.5, 1, 2, 4 s …), not a tight loop.
    assert 2 <= len(attempts) <= 6, len(attempts)
    assert not online(tls_bridge, unique_name)
    assert agent.proc.poll() is None  # it keeps trying, slowly, in case the bridge's cert is fixed


def test_insecure_agent_connects_but_warns_loudly(tls_bridge, agent_factory, unique_name):
    edge_token = tls_bridge.bridge.edge_token(unique_name, owner="owner")
    agent = agent_factory(tls_bridge.bridge, edge_token, extra_args=["--insecure"])
    wait_for(lambda: online(tls_bridge, unique_name), 20, what="edge online with --insecure")
    assert "TLS VERIFICATION IS DISABLED" in agent.log()
