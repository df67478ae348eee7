"""The portal's Files tab in a real headless Chromium, against a real bridge and agent:
browse, a 100 MiB upload with a progress bar, a byte-identical download, new folder,
rename, delete with confirmation, preview, and a viewer who may only look."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from tests.support.browser import page_opener
from tests.support.live import ModuleSite, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def setup(tmp_path_factory, sqlite_template, request):
    var = tmp_path_factory.mktemp("files-portal")
    root = var / "home"
    (root / "project" / "results").mkdir(parents=True)
    (root / "project" / "notes.txt").write_text("first line\nsecond line\n")
    (root / "project" / "results" / "out.dat").write_bytes(os.urandom(3 * MiB))
    edge = f"files-{uuid.uuid4().hex[:6]}"
    site = ModuleSite(request, var, template=sqlite_template, users=["alice", "dave"], api_tokens=["alice"],
                      edge_tokens=[(edge, "alice")], grants=[(edge, "dave", "viewer")])
    run = root / "project" / "run.sh"
    run.write_text("#!/bin/sh\necho made by the job > made.txt\necho job says hello\n")
    run.chmod(0o755)
    site.agent_for(edge, plugins="files,psij", options=[f"files.roots={root}", "psij.poll_interval=1"])
    site.wait_online(edge, "alice")
    site.edge, site.root = edge, root
    yield site
    site.close()


@pytest.fixture
def open_files(browser, setup):
    with page_opener(browser, setup.url, accept_downloads=True) as open_page:

        def make(user: str = "alice"):
            page = open_page(user)
            page.goto(f"/edges/{setup.edge}/plugins/files/#{setup.root}/project")
            return page

        yield make


def row(page, name: str):
    return page.locator(f'#files-list tbody tr[data-name="{name}"]')


def test_browse_upload_100_mib_download_and_manage_files(setup, open_files, tmp_path):
    from playwright.sync_api import expect

    page = open_files("alice")
    expect(row(page, "notes.txt")).to_be_visible()
    expect(page.locator("#files-crumbs")).to_contain_text("project")
    # into a directory and back through the breadcrumbs
    row(page, "results").locator("a.files-dir").click()
    expect(row(page, "out.dat")).to_be_visible()
    page.locator("#files-crumbs a", has_text="project").click()
    expect(row(page, "notes.txt")).to_be_visible()
    # preview of a text file
    row(page, "notes.txt").locator("a.files-file").click()
    expect(page.locator("#files-preview pre")).to_have_text("first line\nsecond line\n".rstrip("\n"))

    # a 100 MiB upload through the file picker, with a progress bar
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(100 * MiB))
    page.set_input_files("#files-picker", str(big))
    item = page.locator('#files-uploads li[data-name="big.bin"]')
    expect(item.locator("progress")).to_be_visible()
    expect(item).to_have_class("done", timeout=180_000)
    assert item.locator("progress").get_attribute("max") == str(100 * MiB)
    expect(row(page, "big.bin")).to_be_visible()
    uploaded = setup.root / "project" / "big.bin"
    assert hashlib.sha256(uploaded.read_bytes()).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert not [p for p in uploaded.parent.iterdir() if p.name.endswith(".upload")]

    # download it back: byte-identical
    with page.expect_download(timeout=120_000) as info:
        row(page, "big.bin").get_by_role("link", name="Download big.bin").click()
    got = tmp_path / "got.bin"
    info.value.save_as(got)
    assert got.read_bytes() == big.read_bytes()

    # new folder, rename, delete with confirmation
    page.once("dialog", lambda d: d.accept("fresh"))
    page.locator("#files-mkdir").click()
    expect(row(page, "fresh")).to_be_visible()
    assert (setup.root / "project" / "fresh").is_dir()
    page.once("dialog", lambda d: d.accept("renamed.txt"))
    row(page, "notes.txt").get_by_role("button", name="Rename notes.txt").click()
    expect(row(page, "renamed.txt")).to_be_visible()
    page.once("dialog", lambda d: d.dismiss())
    row(page, "renamed.txt").get_by_role("button", name="Delete renamed.txt").click()
    expect(row(page, "renamed.txt")).to_be_visible()  # dismissed: still there
    page.once("dialog", lambda d: d.accept())
    row(page, "big.bin").get_by_role("button", name="Delete big.bin").click()
    expect(row(page, "big.bin")).to_have_count(0)
    assert not uploaded.exists()


def test_an_upload_can_be_cancelled(setup, open_files, tmp_path):
    from playwright.sync_api import expect

    page = open_files("alice")
    expect(row(page, "results")).to_be_visible()
    big = tmp_path / "cancel.bin"
    big.write_bytes(os.urandom(64 * MiB))
    held = []

    def hold_chunks(route):
        # The first chunk is kept in flight (never answered), so the upload is surely still
        # running when Cancel is clicked, however fast this machine is.
        if route.request.method == "PATCH":
            held.append(route)
        else:
            route.continue_()

    page.route("**/files/uploads/**", hold_chunks)
    with page.expect_request(lambda r: r.method == "PATCH" and "/files/uploads/" in r.url):
        page.set_input_files("#files-picker", str(big))
    item = page.locator('#files-uploads li[data-name="cancel.bin"]')
    item.get_by_role("button", name="Cancel cancel.bin").click()
    expect(item).to_have_class("cancelled")
    wait_for(lambda: not [p for p in (setup.root / "project").iterdir() if p.name.endswith(".upload")],
             30, what="the partial upload removed")
    assert not (setup.root / "project" / "cancel.bin").exists()


def test_a_viewer_browses_and_downloads_but_cannot_change_anything(setup, open_files, tmp_path):
    from playwright.sync_api import expect

    page = open_files("dave")
    expect(row(page, "results")).to_be_visible()
    expect(page.locator("#files-mkdir")).to_be_disabled()
    expect(page.locator("#files-write-note")).to_contain_text("viewer")
    expect(row(page, "results").get_by_role("button", name="Delete results")).to_be_disabled()
    row(page, "results").locator("a.files-dir").click()
    with page.expect_download() as info:
        row(page, "out.dat").get_by_role("link", name="Download out.dat").click()
    got = tmp_path / "out.dat"
    info.value.save_as(got)
    assert got.read_bytes() == (setup.root / "project" / "results" / "out.dat").read_bytes()


def test_a_job_form_picks_paths_from_the_edge_and_the_job_page_links_to_its_files(setup, open_files):
    from playwright.sync_api import expect

    page = open_files("alice")
    page.goto(f"/edges/{setup.edge}/plugins/psij/")
    # the executable, picked from the edge
    page.get_by_role("button", name="Browse the edge for a program").click()
    picker = page.locator("dialog.files-pick")
    picker.get_by_role("button", name="project/").click()
    picker.get_by_role("button", name="run.sh").click()
    expect(page.locator("#psij-executable")).to_have_value(f"{setup.root}/project/run.sh")
    # the working directory too
    page.get_by_role("button", name="Browse the edge for a folder").click()
    picker = page.locator("dialog.files-pick")
    picker.get_by_role("button", name="project/").click()
    # "Choose this folder" takes the folder shown: wait until project/ is.
    expect(picker.locator("p.mono")).to_have_text(f"{setup.root}/project")
    picker.get_by_role("button", name="Choose this folder").click()
    expect(page.locator("#psij-directory")).to_have_value(f"{setup.root}/project")
    page.get_by_label("Job name").fill("files-linked")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#psij-submit-status")).to_contain_text("Job submitted")
    page.locator("#psij-submit-status a").click()
    expect(page.locator("#job-state")).to_have_text("COMPLETED")
    # from the job to its directory in the Files tab
    page.get_by_role("link", name=f"Open {setup.root}/project in Files").click()
    expect(row(page, "made.txt")).to_be_visible()
    assert (setup.root / "project" / "made.txt").read_text() == "made by the job\n"


def test_uploading_over_an_existing_file_asks_first(setup, open_files, tmp_path):
    from playwright.sync_api import expect

    page = open_files("alice")
    expect(row(page, "results")).to_be_visible()
    target = setup.root / "project" / "twice.txt"
    target.write_text("old\n")
    local = tmp_path / "twice.txt"
    local.write_text("new\n")
    page.once("dialog", lambda d: d.dismiss())
    page.set_input_files("#files-picker", str(local))
    item = page.locator('#files-uploads li[data-name="twice.txt"]').last
    expect(item).to_contain_text("existing file was kept")
    assert target.read_text() == "old\n"
    page.once("dialog", lambda d: d.accept())
    page.set_input_files("#files-picker", str(local))
    expect(page.locator('#files-uploads li[data-name="twice.txt"].done')).to_have_count(1)
    assert target.read_text() == "new\n"
