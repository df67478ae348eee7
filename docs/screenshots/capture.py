"""Take the README's screenshots of the portal: ``python docs/screenshots/capture.py``.

Starts a throwaway bridge and a local agent with every built-in plugin plus the demo
third-party plugin (tests/plugins/portal_demo.py), puts some work on it (local jobs, a Slurm
job if Slurm runs here, rhapsody tasks), and photographs the main pages in headless
Chromium at a laptop's 1366x900, and some at a phone's 390 px (``phone_*.png``). Needs
/usr/bin/chromium and Playwright for Python. The agent runs as whoever runs this script: as
root, every page flags it, as it should.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.live import AgentProcess, LiveBridge, wait_for  # noqa: E402

OUT = Path(__file__).resolve().parent
EDGE = "polaris-login"
PLUGINS = "sysinfo,psij,queue_info,rhapsody,files,tests.plugins.portal_demo:ScratchPlugin"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "pw-" + "x" * 12


def slurm_up() -> bool:
    import shutil
    import subprocess

    if not shutil.which("scontrol"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    return ping.returncode == 0 and "UP" in ping.stdout


def put_work_on(api: httpx.Client) -> tuple[str, str, str | None]:
    """Jobs and tasks to show; returns the ids of a job worth a page of its own, of a failed
    one, and of a Slurm job held for its partition's limit (if Slurm runs here)."""
    sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]

    def submit(spec: dict, executor: str = "local") -> str:
        return api.post(f"/{EDGE}/psij/submit/{sid}", json={"job_spec": spec, "executor": executor}).json()["job_id"]

    failed = submit({"executable": "/bin/sh", "arguments": ["-c", "echo preparing inputs; echo 'inputs/run42.h5: "
                                                            "no such file' >&2; exit 3"], "name": "prepare"})
    script = ("for step in 1 2 3 4 5 6; do echo \"step $step of 6: energy $((1000 - step * 37))\"; sleep 0.3; done;"
              " echo 'converged after 6 steps'; echo 'warning: coarse mesh' >&2")
    shown = submit({"executable": "/bin/sh", "name": "simulate", "arguments": ["-c", script]})
    held = None
    if slurm_up():
        submit({"executable": "/bin/sh", "arguments": ["-c", "echo on $SLURM_JOB_PARTITION; sleep 2"],
                "name": "slurm-hello", "attributes": {"queue_name": "debug", "account": "proj1", "duration": 120}},
               executor="slurm")
        held = submit({"executable": "/bin/true", "name": "too-long", "attributes": {"queue_name": "debug",
                                                                                  "duration": 7200}},
                      executor="slurm")
    submit({"executable": "/bin/sleep", "arguments": ["600"], "name": "long-analysis"})
    rh = api.post(f"/{EDGE}/rhapsody/register_session", json={"backends": ["concurrent"]}).json()["sid"]
    tasks = [{"executable": "/bin/echo", "arguments": [f"sample {i} ok"], "name": f"sample-{i}"} for i in range(6)]
    tasks += [{"function": "add", "args": [i, 40], "name": "sum"} for i in range(2)]
    tasks += [{"executable": "/bin/sh", "arguments": ["-c", "exit 2"], "name": "broken-input"}]
    tasks += [{"function": "sleep", "args": [120], "name": "waiting"}]
    api.post(f"/{EDGE}/rhapsody/submit/{rh}", json={"tasks": tasks})
    return shown, failed, held


def demo_files(home: Path) -> Path:
    """A small project directory for the Files tab's picture."""
    project = home / "projects" / "climate-run-42"
    (project / "output").mkdir(parents=True)
    (project / "input").mkdir()
    (project / "README.md").write_text("# Run 42\n\nCoupled ocean-atmosphere run, 1990-2020.\n")
    (project / "submit.sh").write_text("#!/bin/sh\nsrun ./model --config input/run.yaml\n")
    (project / "submit.sh").chmod(0o755)
    (project / "input" / "run.yaml").write_text("years: [1990, 2020]\nresolution: 0.25\n")
    for i in range(3):
        (project / "output" / f"ocean_{1990 + i}.nc").write_bytes(b"\0" * (1 << 20) * (i + 2))
    (project / "model.log").write_text("step 1 ok\n" * 2000)
    (project / "results.tar.gz").write_bytes(b"\0" * (3 << 20))
    return project


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)
    with tempfile.TemporaryDirectory(prefix="portal-shots-") as tmp:
        var = Path(tmp)
        bridge = LiveBridge(var / "bridge")
        bridge.migrate()
        bridge.start()
        agent = None
        try:
            seeded = bridge.seed(users=["alice", "bob"], api_tokens=["alice"], edge_tokens=[(EDGE, "alice")])
            bridge.manage("edge_grant", EDGE, "bob", "user")
            project = demo_files(var / "home")
            agent = AgentProcess(bridge.url, seeded["edge"][EDGE], var, plugins=PLUGINS,
                                 options=["psij.poll_interval=1", f"files.roots={var / 'home'}"]).start()
            token = seeded["api"]["alice"]
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="edge online")
            with bridge.client(token) as api:
                job_id, failed_id, held_id = put_work_on(api)
                api.get("/api/v1/tokens/")  # so the tokens page shows a "last used" time
            time.sleep(3)  # let the short jobs finish: the pictures should show finished work

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1366, "height": 900}, base_url=bridge.url)

                def shot(name: str, full: bool = True) -> None:
                    page.wait_for_timeout(500)  # let the last layout settle
                    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full)
                    print("wrote", OUT / f"{name}.png")

                page.goto("/accounts/login/")
                page.get_by_label("Username").fill("alice")
                shot("login", full=False)
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Log in").click()
                expect(page.locator("#live-status")).to_have_text("Live")
                expect(page.locator("#recent tbody tr", has_text="simulate")).to_contain_text("COMPLETED")
                shot("dashboard")

                page.goto(f"/edges/{EDGE}/")
                shot("edge")
                page.goto(f"/edges/{EDGE}/plugins/sysinfo/")
                page.select_option("#sysinfo-interval", "2")
                chart = page.locator("#sysinfo-history svg")
                expect(chart).to_have_attribute("aria-label", re.compile(r"([6-9]|\d\d) samples"))
                shot("sysinfo")
                page.goto(f"/edges/{EDGE}/plugins/queue_info/")
                expect(page.locator("#qi-queues-meta")).to_contain_text("collected")
                shot("queue_info")
                page.goto(f"/edges/{EDGE}/plugins/psij/")
                expect(page.locator("#psij-jobs tbody tr", has_text="simulate")).to_contain_text("COMPLETED")
                page.get_by_label("Executable").fill("/usr/bin/python3")
                page.get_by_label("Arguments").fill("analyze.py --input run42.h5")
                shot("psij")
                page.goto(f"/edges/{EDGE}/plugins/psij/jobs/{job_id}/")
                expect(page.locator("#job-state")).to_have_text("COMPLETED")
                shot("psij_job")
                page.goto(f"/edges/{EDGE}/plugins/rhapsody/")
                expect(page.locator('#rh-tasks tbody tr[data-state="DONE"]').first).to_be_visible()
                shot("rhapsody")
                page.goto(f"/edges/{EDGE}/plugins/scratch/")
                page.get_by_label("Pattern *").fill("*.tmp")
                page.get_by_role("button", name="Purge").click()
                expect(page.locator('[data-monitor="purges"] tbody .badge').first).to_have_text("DONE")
                shot("plugin_from_schema")
                page.goto(f"/edges/{EDGE}/plugins/psij/jobs/{failed_id}/")
                expect(page.locator("#job-failure")).to_be_visible()
                shot("psij_job_failed")
                if held_id:
                    page.goto(f"/edges/{EDGE}/plugins/psij/jobs/{held_id}/")
                    expect(page.locator("#job-pending-reason")).to_be_visible()
                    shot("psij_job_pending", full=False)
                page.goto(f"/edges/{EDGE}/plugins/files/#{project}")
                expect(page.locator('#files-list tbody tr[data-name="model.log"]')).to_be_visible()
                page.locator('#files-list tbody tr[data-name="README.md"] a.files-file').click()
                expect(page.locator("#files-preview pre")).to_contain_text("Run 42")
                shot("files")
                page.goto("/tokens/")
                page.get_by_label("Label").fill("laptop SDK")
                page.get_by_role("button", name="Create token").click()
                expect(page.locator("#new-token")).to_be_visible()
                shot("tokens", full=False)
                page.goto(f"/edges/{EDGE}/sharing/")
                page.get_by_label("Role", exact=True).select_option("user")
                shot("sharing")
                page.goto("/edges/new/")
                page.get_by_label("Edge name").fill("frontier-login")
                page.get_by_role("button", name="Add edge and issue its token").click()
                expect(page.locator("#new-edge-token")).to_be_visible()
                shot("add_edge")

                phone = browser.new_page(viewport={"width": 390, "height": 844}, base_url=bridge.url,
                                         is_mobile=True, has_touch=True)
                phone.goto("/accounts/login/")
                phone.get_by_label("Username").fill("alice")
                phone.get_by_label("Password").fill(PASSWORD)
                phone.get_by_role("button", name="Log in").click()
                expect(phone.locator("#recent tbody tr", has_text="simulate")).to_contain_text("COMPLETED")
                phone.get_by_role("button", name="Menu").click()
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(OUT / "phone_dashboard.png"), full_page=False)
                phone.goto(f"/edges/{EDGE}/plugins/psij/")
                expect(phone.locator("#psij-jobs tbody tr", has_text="simulate")).to_contain_text("COMPLETED")
                phone.locator("#psij-jobs").scroll_into_view_if_needed()
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(OUT / "phone_psij.png"), full_page=False)
                phone.goto(f"/edges/{EDGE}/plugins/psij/jobs/{job_id}/")
                expect(phone.locator("#job-state")).to_have_text("COMPLETED")
                phone.locator("#job-details").scroll_into_view_if_needed()
                phone.wait_for_timeout(500)
                phone.screenshot(path=str(OUT / "phone_psij_job.png"), full_page=False)
                print("wrote the phone_*.png pictures")
                browser.close()
        finally:
            if agent is not None:
                agent.stop()
            bridge.stop()


if __name__ == "__main__":
    main()
