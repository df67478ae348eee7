"""The files plugin end to end: a real bridge, a real agent, the SDK and plain HTTP.

Resumed uploads (client lost, agent killed, bridge restarted), resumed downloads, a
directory as a tar stream, hostile paths through the bridge, viewers and two users."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from edge_agent.client import BridgeClient
from edge_agent.client.errors import BridgeError, Forbidden
from tests.support.live import ModuleSite, wait_for

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


class Interrupt(Exception):
    pass


USERS = ["owner", "viewer", "bob", "carol"]
EDGES = [f"files-{i}" for i in range(16)]  # an edge of its own for each test (there are fewer)


@pytest.fixture(scope="module")
def files_site(tmp_path_factory, sqlite_template, request):
    """One bridge for the module's tests, its users (an owner, a viewer and two with the user
    role), and an edge token for each test with those grants, made in one management command:
    a bridge of their own and two manage.py start-ups cost each test 5 to 10 s of set-up.
    ``take_edge()`` hands out the next edge no test has used."""
    site = ModuleSite(request, tmp_path_factory.mktemp("files"), template=sqlite_template, users=USERS,
                      api_tokens=USERS, edge_tokens=[(edge, "owner") for edge in EDGES],
                      grants=[(edge, user, role) for edge in EDGES
                              for user, role in (("viewer", "viewer"), ("bob", "user"), ("carol", "user"))])
    unused = iter(EDGES)
    site.take_edge = lambda: next(unused)
    yield site
    site.close()


@pytest.fixture
def files_edge(files_site, agent_factory, tmp_path):
    """The module's bridge and a fresh edge, its agent serving only ``root`` (plus ``scratch``)."""
    root, scratch, outside = tmp_path / "root", tmp_path / "scratch", tmp_path / "outside"
    for d in (root, scratch, outside):
        d.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    (root / "out").symlink_to(outside)
    bridge, edge = files_site.bridge, files_site.take_edge()
    agent = agent_factory(bridge, files_site.seeded["edge"][edge], plugins="files",
                          options=[f"files.roots={root},{scratch}"])
    token = files_site.tokens["owner"]
    wait_for(lambda: bridge.edge_online(token, edge), 20, what="edge online")
    return type("FilesEdge", (), {"bridge": bridge, "agent": agent, "edge": edge, "tokens": files_site.tokens,
                                  "token": token, "root": root, "scratch": scratch, "outside": outside})


def sdk(s, user: str = "owner"):
    bc = BridgeClient(s.bridge.url, token=s.tokens[user], timeout=120)
    return bc, bc.get_edge_client(s.edge).get_plugin("files")


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_64_mib_upload_interrupted_and_resumed_is_byte_identical(files_edge, tmp_path):
    s = files_edge
    local = tmp_path / "big.bin"
    data = make_file(local, 64 * MiB)
    bc, fs = sdk(s)
    seen = []

    def drop_after_24_mib(done, total):
        seen.append(done)
        if done >= 24 * MiB:
            raise Interrupt  # the client goes away mid-upload

    with pytest.raises(Interrupt):
        fs.upload(local, f"{s.root}/big.bin", chunk_size=4 * MiB, progress=drop_after_24_mib)
    assert not (s.root / "big.bin").exists()  # never visible half-written
    pending = fs.pending_uploads(f"{s.root}/big.bin")
    assert len(pending) == 1 and pending[0]["offset"] == 24 * MiB
    result = fs.upload(local, f"{s.root}/big.bin", chunk_size=4 * MiB, progress=False)
    assert result["resumed_from"] == 24 * MiB
    assert result["sent"] == 40 * MiB  # only what was missing
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert (s.root / "big.bin").read_bytes() == data
    assert fs.pending_uploads() == []
    assert not [p.name for p in s.root.iterdir() if p.name.endswith(".upload")]
    bc.close()


def test_a_file_changed_while_it_is_uploaded_is_refused_and_a_changed_file_starts_again(files_edge, tmp_path):
    """The SDK hashes while it sends: a file rewritten meanwhile never takes its name, and an
    unfinished upload is continued only for the same file (same size and mtime, and the
    edge's digest of its bytes so far matching the file's start)."""
    s = files_edge
    local = tmp_path / "moving.bin"
    make_file(local, 6 * MiB)
    bc, fs = sdk(s)

    def rewrite_at_2_mib(done, total):
        if done >= 2 * MiB:
            local.write_bytes(os.urandom(6 * MiB))

    with pytest.raises(BridgeError) as caught:
        fs.upload(local, f"{s.root}/moving.bin", chunk_size=MiB, progress=rewrite_at_2_mib)
    assert caught.value.error == "file_changed"
    assert not (s.root / "moving.bin").exists() and fs.pending_uploads(f"{s.root}/moving.bin") == []

    def stop_at_3_mib(done, total):
        if done >= 3 * MiB:
            raise Interrupt

    with pytest.raises(Interrupt):
        fs.upload(local, f"{s.root}/moving.bin", chunk_size=MiB, progress=stop_at_3_mib)
    data = os.urandom(6 * MiB)
    local.write_bytes(data)  # another file of the same size under the same name
    result = fs.upload(local, f"{s.root}/moving.bin", chunk_size=MiB, progress=False)
    assert result["resumed_from"] == 0 and result["sha256"] == hashlib.sha256(data).hexdigest()
    assert (s.root / "moving.bin").read_bytes() == data
    bc.close()


def test_upload_survives_an_agent_kill_and_a_bridge_restart(files_edge, tmp_path):
    s = files_edge
    local = tmp_path / "mid.bin"
    data = make_file(local, 24 * MiB)
    bc, fs = sdk(s)
    events = []

    def disrupt(done, total):
        if done >= 8 * MiB and "agent" not in events:
            events.append("agent")
            s.agent.kill()
            s.agent.start()
        elif done >= 16 * MiB and "bridge" not in events:
            events.append("bridge")
            s.bridge.stop()
            s.bridge.start()

    result = fs.upload(local, f"{s.root}/mid.bin", chunk_size=2 * MiB, progress=disrupt)
    assert events == ["agent", "bridge"]
    assert (s.root / "mid.bin").read_bytes() == data
    assert result["sent"] <= len(data) + 2 * MiB  # at most the chunk in flight again
    bc.close()


def test_download_resumes_with_range_and_is_byte_identical(files_edge, tmp_path):
    s = files_edge
    data = make_file(s.root / "down.bin", 20 * MiB)
    bc, fs = sdk(s)
    local = tmp_path / "down.bin"

    def stop_half_way(done, total):
        if done >= 8 * MiB:
            raise Interrupt

    with pytest.raises(Interrupt):
        fs.download(f"{s.root}/down.bin", local, progress=stop_half_way)
    assert not local.exists() and (tmp_path / "down.bin.part").stat().st_size >= 8 * MiB
    result = fs.download(f"{s.root}/down.bin", local, progress=False, verify=True)
    assert result["resumed_from"] >= 8 * MiB and result["received"] == len(data) - result["resumed_from"]
    assert local.read_bytes() == data
    # Raw HTTP: Range, ETag and the headers a browser needs.
    with s.bridge.client(s.token) as c:
        r = c.get(f"/{s.edge}/files/download/{str(s.root).lstrip('/')}/down.bin", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}" and r.headers["etag"]
        assert r.headers["content-disposition"].startswith("attachment;")
        r2 = c.get(f"/{s.edge}/files/download/{str(s.root).lstrip('/')}/down.bin",
                   headers={"If-None-Match": r.headers["etag"]})
        assert r2.status_code == 304
    bc.close()


def test_directory_downloads_as_a_streamed_tar(files_edge, tmp_path):
    s = files_edge
    (s.root / "proj" / "sub").mkdir(parents=True)
    files = {"proj/a.txt": b"alpha\n", "proj/sub/b.bin": os.urandom(5 * MiB)}
    for rel, data in files.items():
        (s.root / rel).write_bytes(data)
    with s.bridge.client(s.token) as c:
        r = c.get(f"/{s.edge}/files/download/{str(s.root).lstrip('/')}/proj", params={"archive": "tar"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
        assert "proj.tar" in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        for rel, data in files.items():
            assert tar.extractfile(rel).read() == data
    bc, fs = sdk(s)
    fs.download_dir(f"{s.root}/proj", tmp_path / "got", progress=False)
    assert (tmp_path / "got" / "proj" / "sub" / "b.bin").read_bytes() == files["proj/sub/b.bin"]
    bc.close()


def test_hostile_paths_through_the_bridge_are_refused_and_nothing_is_written_outside(files_edge):
    s = files_edge
    root = str(s.root).lstrip("/")
    attempts = [
        ("GET", f"download/{root}/%2e%2e/outside/secret.txt"),
        ("GET", f"download/{root}/..%2Foutside%2Fsecret.txt"),
        ("GET", f"download/{root}/out/secret.txt"),
        ("GET", "download/etc/passwd"),
        ("GET", f"list/{root}/out"),
        ("PUT", f"put/{root}/out/planted.txt"),
        ("PUT", f"put/{root}/%2e%2e/outside/planted.txt"),
        ("POST", f"upload/{root}/out/planted.txt"),
        ("POST", f"mkdir/{root}/out/newdir"),
        ("DELETE", f"remove/{root}/out/secret.txt"),
        ("POST", f"move/{root}/out/secret.txt"),
        ("PUT", "put/tmp/planted.txt"),
    ]
    with s.bridge.client(s.token) as c:
        for method, route in attempts:
            body = b"x" if method == "PUT" else b'{"to": "%s/stolen"}' % str(s.root).encode()
            r = c.request(method, f"/{s.edge}/files/{route}", content=body,
                          headers={"Upload-Length": "1", "Content-Type": "application/json"}
                          if method == "POST" else {})
            assert r.status_code in (400, 403, 404), (method, route, r.status_code, r.text)
            assert "top secret" not in r.text
            if r.status_code != 404:
                assert r.json()["error"] in ("bad_path", "outside_roots", "symlink_escape"), (route, r.json())
    assert sorted(p.name for p in s.outside.iterdir()) == ["secret.txt"]
    assert (s.outside / "secret.txt").read_text() == "top secret\n"
    assert not Path("/tmp/planted.txt").exists()


def test_viewer_reads_but_may_not_write(files_edge, tmp_path):
    s = files_edge
    (s.root / "shared.txt").write_text("hello\n")
    bc, fs = sdk(s, "viewer")
    assert [e["name"] for e in fs.list(str(s.root))["entries"]].count("shared.txt") == 1
    assert fs.stat(f"{s.root}/shared.txt")["size"] == 6
    fs.download(f"{s.root}/shared.txt", tmp_path / "s.txt", progress=False)
    assert (tmp_path / "s.txt").read_text() == "hello\n"
    local = tmp_path / "w.txt"
    local.write_text("nope")
    for attempt in (lambda: fs.upload(local, f"{s.root}/w.txt", progress=False, retry_for=0),
                    lambda: fs.put_bytes(f"{s.root}/w.txt", b"nope"),
                    lambda: fs.mkdir(f"{s.root}/newdir"),
                    lambda: fs.remove(f"{s.root}/shared.txt"),
                    lambda: fs.move(f"{s.root}/shared.txt", f"{s.root}/moved.txt"),
                    lambda: fs.chmod(f"{s.root}/shared.txt", "600")):
        with pytest.raises(Forbidden):
            attempt()
    assert sorted(p.name for p in s.root.iterdir()) == ["out", "shared.txt"]
    bc.close()


def test_two_users_on_one_edge_keep_their_uploads_apart(files_edge, tmp_path):
    s = files_edge
    local = tmp_path / "b.bin"
    data = make_file(local, 6 * MiB)
    bc_b, fs_b = sdk(s, "bob")
    bc_c, fs_c = sdk(s, "carol")

    def stop(done, total):
        if done >= 2 * MiB:
            raise Interrupt

    with pytest.raises(Interrupt):
        fs_b.upload(local, f"{s.root}/b.bin", chunk_size=MiB, progress=stop)
    [pending] = fs_b.pending_uploads()
    assert fs_c.pending_uploads() == []
    with s.bridge.client(s.tokens["carol"]) as c:
        r = c.request("PATCH", f"/{s.edge}/files/uploads/{pending['id']}", content=b"evil",
                      headers={"Upload-Offset": str(pending["offset"]), "Tus-Resumable": "1.0.0",
                               "Content-Type": "application/offset+octet-stream"})
        assert r.status_code == 404
        r = c.head(f"/{s.edge}/files/uploads/{pending['id']}")
        assert r.status_code == 404
    # carol's own work goes on meanwhile
    fs_c.put_bytes(f"{s.scratch}/c.txt", b"carol")
    assert fs_b.upload(local, f"{s.root}/b.bin", chunk_size=MiB, progress=False)["resumed_from"] == 2 * MiB
    assert (s.root / "b.bin").read_bytes() == data
    assert (s.scratch / "c.txt").read_bytes() == b"carol"
    bc_b.close()
    bc_c.close()


def test_command_line_put_ls_get_rm(files_edge, tmp_path):
    import subprocess
    import sys

    s = files_edge
    local = tmp_path / "cli.bin"
    data = make_file(local, 3 * MiB)
    env = {**os.environ, "RADICAL_BRIDGE_URL": s.bridge.url, "RADICAL_API_TOKEN": s.token}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_agent.plugins.files.cli", "files", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    r = cli("put", str(local), f"{s.edge}:{s.root}/")
    assert r.returncode == 0, r.stderr
    assert (s.root / "cli.bin").read_bytes() == data
    r = cli("ls", f"{s.edge}:{s.root}")
    assert r.returncode == 0 and "cli.bin" in r.stdout
    r = cli("get", "--verify", f"{s.edge}:{s.root}/cli.bin", str(tmp_path / "back.bin"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.bin").read_bytes() == data
    r = cli("sum", f"{s.edge}:{s.root}/cli.bin")
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    r = cli("rm", f"{s.edge}:{s.root}/cli.bin")
    assert r.returncode == 0 and not (s.root / "cli.bin").exists()
    r = cli("get", f"{s.edge}:/etc/passwd", str(tmp_path / "pw"))
    assert r.returncode == 1 and "outside_roots" in r.stderr


def test_site_limits_answer_413_and_429_and_the_edge_stays_up(files_site, agent_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    bridge, unique_name = files_site.bridge, files_site.take_edge()
    token = files_site.tokens["owner"]
    agent_factory(bridge, files_site.seeded["edge"][unique_name], plugins="files",
                  options=[f"files.roots={root}", "files.max_upload=1048576", "files.max_downloads=1"])
    wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
    (root / "f.bin").write_bytes(os.urandom(16 * MiB))
    r_root = str(root).lstrip("/")
    with bridge.client(token) as c:
        r = c.post(f"/{unique_name}/files/upload/{r_root}/big.bin", headers={"Upload-Length": str(2 * MiB)})
        assert r.status_code == 413 and r.json()["error"] == "upload_too_large"
        r = c.put(f"/{unique_name}/files/put/{r_root}/big.bin", content=os.urandom(2 * MiB))
        assert r.status_code == 413
        # one download streaming (read slowly): a second is a 429 with Retry-After
        with c.stream("GET", f"/{unique_name}/files/download/{r_root}/f.bin") as first:
            next(first.iter_bytes(65536))
            r = c.get(f"/{unique_name}/files/download/{r_root}/f.bin")
            assert r.status_code == 429 and r.headers["retry-after"]
            # other calls stay answered meanwhile
            assert c.get(f"/{unique_name}/files/list/{r_root}").status_code == 200
        assert bridge.edge_online(token, unique_name)


def test_every_upload_chunk_is_in_the_audit_trail_with_its_path_and_bytes(files_edge, tmp_path):
    s = files_edge
    local = tmp_path / "audited.bin"
    make_file(local, 3 * MiB)
    bc, fs = sdk(s)
    fs.upload(local, f"{s.root}/audited.bin", chunk_size=MiB, progress=False)
    bc.close()
    s.bridge.create_user("auditor", superuser=True)
    admin = s.bridge.api_token("auditor")

    def chunks():
        with s.bridge.client(admin) as c:
            rows = c.get("/api/v1/audit/calls/", params={"edge": s.edge}).json()["results"]
        return [r for r in rows if r["method"] == "PATCH" and r["path"].endswith(f"{s.root}/audited.bin")]

    rows = wait_for(lambda: len(chunks()) == 3 and chunks(), 30, what="audit records")
    assert sorted(r["bytes_in"] for r in rows) == [MiB, MiB, MiB]
    assert {r["username"] for r in rows} == {"owner"}


def test_a_stock_tus_client_uploads_and_resumes(files_edge, tmp_path):
    """tuspy, the Python tus client, against the bridge: what any tus tool does."""
    tus = pytest.importorskip("tusclient.client")
    s = files_edge
    local = tmp_path / "tus.bin"
    data = make_file(local, 10 * MiB)
    creation = f"{s.bridge.url}/{s.edge}/files/upload/{str(s.root).lstrip('/')}/tus.bin"
    client = tus.TusClient(creation, headers={"Authorization": f"Bearer {s.token}"})
    first = client.uploader(str(local), chunk_size=2 * MiB, metadata={"filename": "tus.bin"})
    first.upload(stop_at=4 * MiB)  # the first session ends early
    assert first.offset == 4 * MiB and not (s.root / "tus.bin").exists()
    again = client.uploader(str(local), chunk_size=2 * MiB, url=first.url)  # a new process would do this
    assert again.get_offset() == 4 * MiB
    again.upload()
    assert (s.root / "tus.bin").read_bytes() == data


def test_odd_names_and_empty_files_round_trip(files_edge, tmp_path):
    s = files_edge
    bc, fs = sdk(s)
    names = ["with space.txt", "ünïcødé.dat", "per%cent#hash?q.bin", "semi;colon&amp.txt", "empty.bin"]
    fs.mkdir(f"{s.root}/odd")
    for name in names:
        local = tmp_path / name
        local.write_bytes(b"" if name == "empty.bin" else name.encode() * 100)
        fs.upload(local, f"{s.root}/odd/{name}", progress=False)
        assert (s.root / "odd" / name).read_bytes() == local.read_bytes(), name
        back = tmp_path / f"back-{name}"
        fs.download(f"{s.root}/odd/{name}", back, progress=False)
        assert back.read_bytes() == local.read_bytes(), name
    listed = sorted(e["name"] for e in fs.list(f"{s.root}/odd")["entries"])
    assert listed == sorted(names)
    with s.bridge.client(s.token) as c:
        r = c.head(f"/{s.edge}/files/download/{str(s.root).lstrip('/')}/odd/with%20space.txt")
        assert r.status_code == 200 and r.headers["x-edge-size"] == str(len("with space.txt") * 100)
        assert "filename*=UTF-8''with%20space.txt" in r.headers["content-disposition"]
    with fs.open(f"{s.root}/odd/with space.txt") as f:
        f.seek(10)
        assert f.read(4) == b".txt"
    bc.close()


def test_staging_a_file_from_one_edge_to_another_resumes(files_site, agent_factory, tmp_path):
    bridge, token = files_site.bridge, files_site.tokens["owner"]
    edges = {"site-a": files_site.take_edge(), "site-b": files_site.take_edge()}
    roots = {}
    for site, edge in edges.items():
        roots[site] = tmp_path / site
        roots[site].mkdir()
        agent_factory(bridge, files_site.seeded["edge"][edge], plugins="files", options=[f"files.roots={roots[site]}"])
    for edge in edges.values():
        wait_for(lambda edge=edge: bridge.edge_online(token, edge), 20, what=f"{edge} online")
    data = make_file(roots["site-a"] / "input.bin", 12 * MiB)
    bc = BridgeClient(bridge.url, token=token, timeout=120)
    a = bc.get_edge_client(edges["site-a"]).get_plugin("files")
    b = bc.get_edge_client(edges["site-b"]).get_plugin("files")

    def stop(done, total):
        if done >= 4 * MiB:
            raise Interrupt

    with pytest.raises(Interrupt):
        a.copy_to(f"{roots['site-a']}/input.bin", b, f"{roots['site-b']}/staged.bin", chunk_size=2 * MiB,
                  progress=stop)
    assert not (roots["site-b"] / "staged.bin").exists()
    result = a.copy_to(f"{roots['site-a']}/input.bin", b, f"{roots['site-b']}/staged.bin", chunk_size=2 * MiB,
                       progress=False)
    assert result["resumed_from"] == 4 * MiB and result["sent"] == 8 * MiB
    assert (roots["site-b"] / "staged.bin").read_bytes() == data
    bc.close()
