"""The pieces of the compatibility surface, without processes."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from bridge_app.calls.compat import bearer_from_basic, old_agent_refusal, v0_notifications
from edge_agent.client.bridge import EdgeList, _split_token, legacy_callback
from edge_agent.plugins.sysinfo import plugin as sysinfo


def test_first_cpu_reading_on_a_fresh_thread_is_real():
    meter = sysinfo.CpuMeter()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # keep a core busy so that use since the baseline is > 0
        sum(range(1000))
    out: list[dict] = []
    thread = threading.Thread(target=lambda: out.append(meter.percent()))
    thread.start()
    thread.join()
    assert out[0]["percent"] > 0.0 and len(out[0]["per_cpu"]) >= 1
    again = meter.percent()  # at once: within the clock's tick it repeats the last answer
    assert 0.0 <= again["percent"] <= 100.0


def test_gpu_memory_is_in_mib_as_the_original_with_bytes_beside():
    gpu, = sysinfo.parse_nvidia_smi("0, NVIDIA H200, 7, 2, 143771, 1024, 142747, 31, 75.1, 550.54.15, GPU-1a2b\n")
    assert (gpu["id"], gpu["index"], gpu["vendor"], gpu["driver_version"], gpu["uuid"]) == \
        ("0", 0, "NVIDIA", "550.54.15", "GPU-1a2b")
    assert (gpu["mem_total"], gpu["mem_used"], gpu["mem_free"]) == (143771, 1024, 142747)
    assert gpu["mem_total_bytes"] == 143771 * 1024 * 1024
    amd, = sysinfo.parse_rocm_smi(json.dumps({"card0": {
        "Card series": "MI250X", "VRAM Total Memory (B)": str(64 * 2**30), "VRAM Total Used Memory (B)": str(2**30),
        "GPU use (%)": "12", "Unique ID": "0xabc"}, "system": {"Driver version": "6.7.0"}}))
    assert (amd["id"], amd["vendor"], amd["uuid"], amd["driver_version"]) == ("card0", "AMD", "0xabc", "6.7.0")
    assert (amd["mem_total"], amd["mem_used"], amd["mem_free"]) == (65536, 1024, 64512)


def test_smi_paths_come_from_the_environment(tmp_path, monkeypatch):
    fake = tmp_path / "my-nvidia-smi"
    fake.write_text("#!/bin/sh\necho '3, Fake GPU, 1, 1, 100, 10, 90, 30, 50, 1.2, GPU-x'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NVIDIA_SMI_PATH", str(fake))
    assert [g["name"] for g in sysinfo.nvidia_gpus()] == ["Fake GPU"]
    monkeypatch.setenv("ROCM_SMI_PATH", str(tmp_path / "missing"))
    assert sysinfo.rocm_gpus() == []


def test_disk_types_and_kernel_as_the_original():
    assert sysinfo.disk_type("server:/export", "nfs4") == "network"
    assert sysinfo.disk_type("overlay", "overlay") == "unknown"
    assert sysinfo.disk_type("/dev/nosuchdisk1", "ext4") == "unknown"
    plugin = sysinfo.SysInfoPlugin(host=None)
    try:
        system = plugin._system()
        assert system["kernel"].endswith(" " + system["kernel_release"]) and " " in system["kernel"]
    finally:
        plugin._disk_pool.shutdown(wait=False)


def test_list_edges_is_a_list_of_names_that_reads_like_the_dict():
    edges = EdgeList({"a": {"plugins": {"x": {}}}, "b": {"plugins": {}}})
    assert edges == ["a", "b"] and edges[0] == "a" and "b" in edges and list(edges) == ["a", "b"]
    assert edges["a"]["plugins"] == {"x": {}} and edges.get("c") is None
    assert dict(edges.items()) == edges.info and list(edges.keys()) == ["a", "b"]


def test_legacy_callbacks_get_topic_and_data_or_all_four():
    two, four = [], []
    legacy_callback(lambda topic, data: two.append((topic, data)))({"edge": "e", "plugin": "p", "topic": "t",
                                                                     "data": 1})
    legacy_callback(lambda e, p, t, d: four.append((e, p, t, d)))({"edge": "e", "plugin": "p", "topic": "t", "data": 1})
    assert two == [("t", 1)] and four == [("e", "p", "t", 1)]


def test_a_token_in_the_url_and_in_basic_credentials():
    assert _split_token("https://:rda_abc@bridge.example:8443/x") == ("https://bridge.example:8443/x", "rda_abc")
    assert _split_token("https://bridge.example") == ("https://bridge.example", None)
    basic = "Basic " + base64.b64encode(b":rda_abc").decode()
    assert bearer_from_basic(basic) == "rda_abc"
    assert bearer_from_basic("Basic " + base64.b64encode(b"alice:secret").decode()) is None
    assert bearer_from_basic("Basic !!!") is None and bearer_from_basic("Bearer rda_x") is None


def test_rhapsody_batches_become_one_original_notification_per_task():
    lines = v0_notifications({"id": 5, "edge": "e", "plugin": "rhapsody", "topic": "task_status", "ts": 1.0,
                              "data": {"sid": "s", "tasks": [{"uid": "t1", "state": "DONE"},
                                                             {"uid": "t2", "state": "FAILED"}]}})
    assert [json.loads(line[6:]) for line in lines] == [
        {"topic": "notification", "data": {"edge": "e", "plugin": "rhapsody", "topic": "task_status",
                                           "data": {"uid": t, "state": s}}}
        for t, s in (("t1", "DONE"), ("t2", "FAILED"))]


@pytest.mark.parametrize("text", ['{"type": "hello"}', "not json", '{"type": "registered"}', "[]"])
def test_only_a_register_frame_is_an_old_agent(text):
    assert old_agent_refusal(text) is None


def test_an_old_agents_refusal_says_what_it_needs():
    frame = old_agent_refusal('{"type": "register", "edge_name": "hpc1", "endpoint": {"type": "radical.edge"}}')
    assert frame["type"] == "error" and frame["message"] == frame["detail"]
    assert "radical-edge-agent" in frame["message"] and "edge_token_create" in frame["message"]


async def test_basic_credentials_become_a_bearer_token_only_outside_browsers():
    from bridge_app.calls.compat import CompatApp

    seen: list[dict] = []

    async def app(scope, receive, send):
        seen.append(dict(scope["headers"]))

    basic = b"Basic " + base64.b64encode(b":rda_abc")
    await CompatApp(app)({"type": "http", "headers": [(b"authorization", basic)]}, None, None)
    await CompatApp(app)({"type": "http", "headers": [(b"authorization", basic), (b"sec-fetch-site", b"cross-site")]},
                         None, None)
    assert seen[0][b"authorization"] == b"Bearer rda_abc" and seen[0][b"x-radical-edge-format"] == b"v0"
    assert seen[1][b"authorization"] == basic and b"x-radical-edge-format" not in seen[1]
