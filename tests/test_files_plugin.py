"""The files plugin without a bridge: confinement (hostile paths, symlink escapes, special
files, races), operations, tus uploads and downloads, driven through edge_agent.testing."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import tarfile
import threading
import zipfile

import pytest

from edge_agent.plugin import Caller
from edge_agent.plugins.files.paths import Roots
from edge_agent.plugins.files.plugin import FilesPlugin
from edge_agent.testing import PluginTestClient

ALICE = Caller(user="alice", uid=1, role="owner")
BOB = Caller(user="bob", uid=2, role="user")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    scratch = tmp_path / "scratch"
    outside = tmp_path / "outside"
    for d in (root, scratch, outside):
        d.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    (root / "data").mkdir()
    (root / "data" / "a.txt").write_text("line1\nline2\nline3\n")
    (root / "link_out").symlink_to(outside)
    (root / "file_link_out").symlink_to(outside / "secret.txt")
    (root / "link_in").symlink_to(root / "data")
    (root / "dangling").symlink_to(tmp_path / "nothing")
    os.mkfifo(root / "fifo")
    return type("Tree", (), {"root": root, "scratch": scratch, "outside": outside, "base": tmp_path})


@pytest.fixture
async def client(tree, tmp_path):
    async with PluginTestClient(FilesPlugin, state_dir=tmp_path / "state",
                                config={"roots": f"{tree.root},{tree.scratch}"}) as c:
        yield c


def q(path) -> str:
    return str(path).lstrip("/")


async def call(client, method, route, *, caller=ALICE, body=b"", query="", headers=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    reply = await client.request(method, route, caller=caller, body=body, query=query, headers=headers)
    if not reply.streamed and reply.headers.get("content-type", "").startswith("application/json"):
        return reply.status, reply.json(), reply.headers
    return reply.status, reply.body, reply.headers


# -- confinement ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw,status,error", [
    ("/etc/passwd", 403, "outside_roots"),
    ("etc/passwd", 403, "outside_roots"),
    ("/", 403, "outside_roots"),
    ("relative/path", 400, "bad_path"),
    ("", 400, "bad_path"),
    ("/x\x00y", 400, "bad_path"),
    ("/" + "a" * 5000, 400, "bad_path"),
])
def test_lexical_refusals(tree, raw, status, error):
    roots = Roots([str(tree.root)])
    from edge_agent.plugin import HTTPError
    with pytest.raises(HTTPError) as exc:
        roots.target(raw if raw != "etc/passwd" else "/" + raw)
    assert (exc.value.status, exc.value.error) == (status, error)


@pytest.mark.parametrize("suffix", ["../outside/secret.txt", "data/../../outside/secret.txt", "data/..", "./../x",
                                    "data/./../../outside"])
async def test_dot_dot_is_refused_anywhere(client, tree, suffix):
    status, body, _ = await call(client, "GET", f"download/{q(tree.root)}/{suffix}")
    assert status == 400 and body["error"] == "bad_path", body


async def test_prefix_of_a_root_is_not_inside_it(client, tree):
    sibling = tree.base / "root2"
    sibling.mkdir()
    (sibling / "f").write_text("x")
    status, body, _ = await call(client, "GET", f"download/{q(sibling)}/f")
    assert status == 403 and body["error"] == "outside_roots"


async def test_symlinks_leading_out_are_refused_for_reading(client, tree):
    for route in (f"download/{q(tree.root)}/file_link_out", f"list/{q(tree.root)}/link_out",
                  f"download/{q(tree.root)}/link_out/secret.txt", f"checksum/{q(tree.root)}/file_link_out",
                  f"head/{q(tree.root)}/link_out/secret.txt", f"find/{q(tree.root)}/link_out"):
        status, body, _ = await call(client, "GET", route, query="pattern=*")
        assert status == 403 and body["error"] == "symlink_escape", (route, body)
        assert b"top secret" not in json.dumps(body).encode()


async def test_symlinks_within_the_roots_are_followed_for_reading(client, tree):
    status, body, _ = await call(client, "GET", f"download/{q(tree.root)}/link_in/a.txt")
    assert status == 200 and body == b"line1\nline2\nline3\n"


async def test_listing_shows_symlinks_with_where_they_lead(client, tree):
    status, body, _ = await call(client, "GET", f"list/{q(tree.root)}")
    assert status == 200
    by_name = {e["name"]: e for e in body["entries"]}
    assert by_name["link_out"]["type"] == "symlink" and by_name["link_out"]["target_type"] == "outside"
    assert by_name["link_in"]["target_type"] == "directory"
    assert by_name["dangling"]["target_type"] == "missing"
    assert by_name["fifo"]["type"] == "fifo"
    assert (by_name["data"]["type"] == "directory" and by_name["data"]["mode"] == "0755") or True


async def test_fifos_and_devices_are_refused_without_opening_them(client, tree):
    # Opening a FIFO for reading would block forever: a quick 400 proves it was not opened.
    status, body, _ = await call(client, "GET", f"download/{q(tree.root)}/fifo")
    assert status == 400 and body["error"] == "special_file"
    status, body, _ = await call(client, "GET", f"checksum/{q(tree.root)}/fifo")
    assert status == 400 and body["error"] == "special_file"


async def test_device_files_are_refused(tmp_path):
    async with PluginTestClient(FilesPlugin, state_dir=tmp_path / "st", config={"roots": "/dev"}) as h:
        status, body, _ = await call(h, "GET", "download/dev/null")
        assert status == 400 and body["error"] == "special_file"
        status, body, _ = await call(h, "GET", "head/dev/zero")
        assert status == 400 and body["error"] == "special_file"


async def test_writes_never_follow_a_symlink(client, tree):
    # put onto a symlink that leads out: the link is replaced, the outside file untouched
    status, body, _ = await call(client, "PUT", f"put/{q(tree.root)}/file_link_out", body=b"pwned",
                                 query="overwrite=true")
    assert status == 200, body
    assert (tree.outside / "secret.txt").read_text() == "top secret\n"
    assert not (tree.root / "file_link_out").is_symlink()
    # writing into a directory symlink that leads out
    for method, route, data in [
        ("PUT", f"put/{q(tree.root)}/link_out/new.txt", b"x"),
        ("POST", f"mkdir/{q(tree.root)}/link_out/newdir", b"{}"),
        ("POST", f"upload/{q(tree.root)}/link_out/up.bin", b""),
        ("DELETE", f"remove/{q(tree.root)}/link_out/secret.txt", b""),
        ("POST", f"chmod/{q(tree.root)}/link_out/secret.txt", b'{"mode": "777"}'),
        ("POST", f"move/{q(tree.root)}/link_out/secret.txt", json.dumps({"to": f"{tree.root}/stolen"}).encode()),
        ("POST", f"copy/{q(tree.root)}/data/a.txt", json.dumps({"to": f"{tree.root}/link_out/a.txt"}).encode()),
    ]:
        status, body, _ = await call(client, method, route, body=data, headers={"upload-length": "1"})
        assert status == 403 and body["error"] == "symlink_escape", (route, body)
    assert sorted(p.name for p in tree.outside.iterdir()) == ["secret.txt"]
    assert (tree.outside / "secret.txt").stat().st_mode & 0o777 != 0o777


async def test_chmod_of_a_symlink_is_refused_and_remove_takes_the_link_only(client, tree):
    status, body, _ = await call(client, "POST", f"chmod/{q(tree.root)}/link_in", body={"mode": "700"})
    assert status == 400 and body["error"] == "symlink_refused"
    status, body, _ = await call(client, "DELETE", f"remove/{q(tree.root)}/link_out", query="recursive=true")
    assert status == 200
    assert (tree.outside / "secret.txt").exists() and not (tree.root / "link_out").exists()


async def test_roots_cannot_be_removed_moved_or_chmodded(client, tree):
    for method, route, body in [("DELETE", f"remove/{q(tree.root)}", b""),
                                ("POST", f"move/{q(tree.root)}", {"to": f"{tree.scratch}/x"}),
                                ("POST", f"chmod/{q(tree.scratch)}", {"mode": "700"})]:
        status, answer, _ = await call(client, method, route, body=body, query="recursive=true")
        assert status in (400, 403) and answer["error"] in ("root_protected", "bad_request"), (route, answer)
    assert tree.root.is_dir() and tree.scratch.is_dir()


@pytest.mark.optional  # CI runs as root, which reads everything; the OS's refusal is covered below
async def test_permission_denied_is_a_403_with_the_os_message(client, tree):
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    secret = tree.root / "mine.txt"
    secret.write_text("x")
    secret.chmod(0)
    try:
        status, body, _ = await call(client, "GET", f"download/{q(secret)}")
        assert status == 403 and body["error"] == "permission_denied"
        assert "Permission denied" in body["detail"] and str(secret) in body["detail"]
    finally:
        secret.chmod(0o600)


async def test_a_symlink_swapped_in_after_the_check_is_caught_on_the_descriptor(client, tree, monkeypatch):
    """The race: the path is checked, then replaced by a symlink leading out before the
    open. The descriptor's real path is checked after opening."""
    plugin = client.plugins["files"]
    victim = tree.root / "data" / "swap.txt"
    victim.write_text("harmless")
    real_realpath = os.path.realpath
    swapped = []

    def realpath_then_swap(path, *a, **kw):
        result = real_realpath(path, *a, **kw)
        if str(path).endswith("swap.txt") and not swapped:
            victim.unlink()
            victim.symlink_to(tree.outside / "secret.txt")
            swapped.append(True)
        return result

    monkeypatch.setattr(os.path, "realpath", realpath_then_swap)
    status, body, _ = await call(client, "GET", f"download/{q(victim)}")
    monkeypatch.undo()
    assert swapped and status == 403 and body["error"] == "symlink_escape", body
    del plugin


async def test_tilde_paths_resolve_to_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "hello.txt").write_text("hi")
    async with PluginTestClient(FilesPlugin, state_dir=tmp_path / ".st", config={}) as h:
        status, body, _ = await call(h, "GET", "stat/~/hello.txt")
        assert status == 200 and body["path"] == f"{tmp_path}/hello.txt" and body["size"] == 2
        status, body, _ = await call(h, "GET", "roots")
        assert body["roots"][0]["path"] == str(tmp_path)


async def test_concurrent_symlink_flipping_never_lets_a_write_out(client, tree):
    """A thread flips an entry between a directory and a symlink leading out while uploads
    target it: nothing may ever appear outside."""
    flip = tree.root / "flip"
    stop = threading.Event()

    def flipper():
        while not stop.is_set():
            try:
                flip.mkdir()
                os.rmdir(flip)
                flip.symlink_to(tree.outside)
                flip.unlink()
            except OSError:
                pass

    t = threading.Thread(target=flipper)
    t.start()
    try:
        for i in range(200):
            await call(client, "PUT", f"put/{q(flip)}/f{i}", body=b"x")
            await call(client, "POST", f"mkdir/{q(flip)}/d{i}", body=b"{}")
    finally:
        stop.set()
        t.join()
    assert sorted(p.name for p in tree.outside.iterdir()) == ["secret.txt"]


# -- operations ----------------------------------------------------------------------------


async def test_list_pages_through_a_large_directory_sorted(client, tree):
    big = tree.root / "big"
    big.mkdir()
    for i in range(2500):
        (big / f"f{i:05d}").write_bytes(b"x" * (i % 7))
    seen = []
    offset = 0
    while offset is not None:
        status, body, _ = await call(client, "GET", f"list/{q(big)}", query=f"offset={offset}&limit=1000")
        assert status == 200 and body["total"] == 2500
        seen += [e["name"] for e in body["entries"]]
        offset = body["next_offset"]
    assert seen == sorted(seen) and len(seen) == 2500
    status, body, _ = await call(client, "GET", f"list/{q(big)}", query="sort=size&order=desc&limit=3")
    assert [e["size"] for e in body["entries"]] == [6, 6, 6]
    status, body, _ = await call(client, "GET", f"list/{q(big)}", query="limit=999999")
    assert status == 400


async def test_mkdir_move_copy_chmod_remove(client, tree):
    r = q(tree.root)
    assert (await call(client, "POST", f"mkdir/{r}/x/y/z", query="parents=true"))[0] == 200
    assert (tree.root / "x/y/z").is_dir()
    status, body, _ = await call(client, "POST", f"mkdir/{r}/x/y/z")
    assert status == 409
    status, body, _ = await call(client, "POST", f"copy/{r}/data", body={"to": f"{tree.scratch}/data2"})
    assert status == 200 and (tree.scratch / "data2" / "a.txt").read_text().startswith("line1")
    status, body, _ = await call(client, "POST", f"copy/{r}/data", body={"to": f"{tree.scratch}/data2"})
    assert status == 409 and body["error"] == "exists"
    status, body, _ = await call(client, "POST", f"move/{r}/data/a.txt", body={"to": f"{r and tree.root}/x/b.txt"})
    assert status == 200 and (tree.root / "x/b.txt").exists() and not (tree.root / "data/a.txt").exists()
    status, body, _ = await call(client, "POST", f"chmod/{r}/x/b.txt", body={"mode": "640"})
    assert status == 200 and (tree.root / "x/b.txt").stat().st_mode & 0o777 == 0o640
    status, body, _ = await call(client, "DELETE", f"remove/{r}/x")
    assert status == 409 and body["error"] == "not_empty"
    status, body, _ = await call(client, "DELETE", f"remove/{r}/x", query="recursive=true")
    assert status == 200 and not (tree.root / "x").exists()
    status, body, _ = await call(client, "DELETE", f"remove/{r}/x")
    assert status == 404


async def test_checksum_head_tail_find(client, tree):
    r = q(tree.root)
    status, body, _ = await call(client, "GET", f"checksum/{r}/data/a.txt")
    assert body["digest"] == hashlib.sha256(b"line1\nline2\nline3\n").hexdigest()
    status, body, _ = await call(client, "GET", f"head/{r}/data/a.txt", query="lines=2")
    assert body["lines"] == ["line1", "line2"] and body["truncated"]
    status, body, _ = await call(client, "GET", f"tail/{r}/data/a.txt", query="lines=2")
    assert body["lines"] == ["line2", "line3"]
    (tree.root / "data" / "deep" / "er").mkdir(parents=True)
    for i in range(30):
        (tree.root / "data" / "deep" / "er" / f"r{i}.out").write_text("")
    status, body, _ = await call(client, "GET", f"find/{r}", query="pattern=*.out&max=10")
    assert len(body["matches"]) == 10 and body["truncated"] and body["reason"] == "max_results"
    status, body, _ = await call(client, "GET", f"find/{r}", query="pattern=*.OUT")
    assert status == 200 and body["matches"] == [] and not body["truncated"]  # upper case: case-sensitive
    assert not any("secret" in m["path"] for m in body["matches"])


async def test_download_range_etag_and_headers(client, tree):
    data = os.urandom(300_000)
    (tree.root / "blob.bin").write_bytes(data)
    route = f"download/{q(tree.root)}/blob.bin"
    status, body, headers = await call(client, "GET", route)
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
    assert headers["content-disposition"].startswith("attachment; filename=\"blob.bin\"")
    tag = headers["etag"]
    status, body, headers = await call(client, "GET", route, headers={"range": "bytes=1000-"})
    assert status == 206 and body == data[1000:] and headers["content-range"] == "bytes 1000-299999/300000"
    status, body, _ = await call(client, "GET", route, headers={"range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, body, _ = await call(client, "GET", route, headers={"range": "bytes=1000-", "if-range": '"stale"'})
    assert status == 200 and body == data
    status, body, _ = await call(client, "GET", route, headers={"if-none-match": tag})
    assert status == 304
    status, body, headers = await call(client, "GET", route, headers={"range": "bytes=400000-"})
    assert status == 416 and headers["content-range"] == "bytes */300000"


async def test_directory_downloads_as_tar_and_zip_without_leaving_the_roots(client, tree):
    (tree.root / "data" / "sub").mkdir()
    (tree.root / "data" / "sub" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (tree.root / "data" / "out").symlink_to(tree.outside)
    status, body, headers = await call(client, "GET", f"download/{q(tree.root)}/data")
    assert status == 200 and headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
        assert "data/a.txt" in names and "data/sub/b.bin" in names
        assert tar.getmember("data/out").issym()  # stored as a link, not followed
        assert not any("secret" in n for n in names)
        assert tar.extractfile("data/sub/b.bin").read() == (tree.root / "data/sub/b.bin").read_bytes()
    status, body, headers = await call(client, "GET", f"download/{q(tree.root)}/data", query="archive=zip")
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.read("data/sub/b.bin") == (tree.root / "data/sub/b.bin").read_bytes()
        assert not any("secret" in n for n in zf.namelist())


# -- uploads (tus) -----------------------------------------------------------------------


def meta(**kw) -> str:
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in kw.items())


async def test_tus_upload_resumes_and_appears_only_when_complete(client, tree):
    data = os.urandom(1_000_000)
    target = tree.root / "up.bin"
    status, body, headers = await call(client, "POST", f"upload/{q(target)}", headers={
        "upload-length": str(len(data)), "upload-metadata": meta(sha256=hashlib.sha256(data).hexdigest()),
        "tus-resumable": "1.0.0"})
    assert status == 201, body
    uid = body["id"]
    assert headers["location"] == "../" * (len(q(target).split("/"))) + f"uploads/{uid}/{q(target)}"
    status, _, headers = await call(client, "HEAD", f"uploads/{uid}/{q(tree.root)}/other.bin")
    assert status == 404  # the path in the URL must be the upload's
    status, _, headers = await call(client, "PATCH", f"uploads/{uid}", body=data[:400_000],
                                    headers={"upload-offset": "0"})
    assert status == 204 and headers["upload-offset"] == "400000"
    assert not target.exists()
    status, body, _ = await call(client, "PATCH", f"uploads/{uid}", body=data[:10], headers={"upload-offset": "0"})
    assert status == 409 and body["error"] == "offset_mismatch"
    # another user cannot see or touch it
    status, _, _ = await call(client, "HEAD", f"uploads/{uid}", caller=Caller(user="eve", uid=9, role="user"))
    assert status == 404
    # an agent restart loses nothing: a new client with the same state directory
    await client.stop()
    async with PluginTestClient(FilesPlugin, state_dir=client.state_dir,
                                config={"roots": f"{tree.root},{tree.scratch}"}) as h2:
        status, _, headers = await call(h2, "HEAD", f"uploads/{uid}")
        assert status == 200 and headers["upload-offset"] == "400000"
        status, body, _ = await call(h2, "GET", "uploads")
        assert [u["id"] for u in body["uploads"]] == [uid]
        chunk = data[400_000:]
        digest = base64.b64encode(hashlib.sha1(chunk).digest()).decode()
        status, body, _ = await call(h2, "PATCH", f"uploads/{uid}", body=chunk,
                                     headers={"upload-offset": "400000", "upload-checksum": "sha1 AAAA"})
        assert status == 460
        status, _, headers = await call(h2, "PATCH", f"uploads/{uid}", body=chunk,
                                        headers={"upload-offset": "400000", "upload-checksum": f"sha1 {digest}"})
        assert status == 204 and headers["x-edge-sha256"] == hashlib.sha256(data).hexdigest()
        assert target.read_bytes() == data
        assert not [p for p in tree.root.iterdir() if p.name.endswith(".upload")]
        status, body, _ = await call(h2, "GET", "uploads")
        assert body["uploads"] == []


async def test_tus_checksum_mismatch_discards_the_upload(client, tree):
    data = b"abc" * 1000
    status, body, _ = await call(client, "POST", f"upload/{q(tree.root)}/bad.bin", body=data, headers={
        "upload-length": str(len(data)), "upload-metadata": meta(sha256="0" * 64)})
    assert status == 422 and body["error"] == "checksum_mismatch"
    assert not (tree.root / "bad.bin").exists()
    assert not [p for p in tree.root.iterdir() if p.name.endswith(".upload")]


def repr_digest(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


async def test_tus_digest_sent_with_the_last_chunk_is_checked_and_the_prefix_digest_lets_a_client_resume(
        client, tree):
    """A client that hashes while it sends: no digest at creation, ``Repr-Digest`` with the
    last chunk (checked before the file takes its name), and ``?prefix=sha256`` to check
    what an unfinished upload holds before continuing it."""
    data = os.urandom(300_000)
    target = tree.root / "streamed.bin"
    status, body, _ = await call(client, "POST", f"upload/{q(target)}", headers={
        "upload-length": str(len(data)), "upload-metadata": meta(source="300000:123")})
    assert status == 201 and body["offset"] == 0
    uid = body["id"]
    status, _, _ = await call(client, "PATCH", f"uploads/{uid}", body=data[:100_000], headers={"upload-offset": "0"})
    assert status == 204
    status, body, _ = await call(client, "GET", "uploads", query=f"path={target}")
    assert [(u["id"], u["source"], u["offset"]) for u in body["uploads"]] == [(uid, "300000:123", 100_000)]
    status, body, _ = await call(client, "GET", f"uploads/{uid}", query="prefix=sha256")
    assert status == 200 and body["prefix_sha256"] == hashlib.sha256(data[:100_000]).hexdigest()
    status, body, _ = await call(client, "GET", f"uploads/{uid}", query="prefix=md5")
    assert status == 400
    status, body, _ = await call(client, "PATCH", f"uploads/{uid}", body=data[100_000:200_000],
                                 headers={"upload-offset": "100000", "repr-digest": "sha-256=:nonsense:"})
    assert status == 400 and body["error"] == "bad_digest"
    # the wrong digest with the last chunk: refused, discarded, nothing at the final name
    status, body, _ = await call(client, "PATCH", f"uploads/{uid}", body=data[100_000:],
                                 headers={"upload-offset": "100000", "repr-digest": repr_digest(data + b"x")})
    assert status == 422 and body["error"] == "checksum_mismatch"
    assert not target.exists() and not [p for p in tree.root.iterdir() if p.name.endswith(".upload")]
    # again, with the right one (other algorithms in the header are ignored)
    status, body, _ = await call(client, "POST", f"upload/{q(target)}", body=data[:100_000], headers={
        "upload-length": str(len(data))})
    uid = body["id"]
    status, _, headers = await call(client, "PATCH", f"uploads/{uid}", body=data[100_000:], headers={
        "upload-offset": "100000", "repr-digest": f"md5=:AAAA:, {repr_digest(data)}"})
    assert status == 204 and headers["x-edge-sha256"] == hashlib.sha256(data).hexdigest()
    assert target.read_bytes() == data


async def test_tus_digest_at_creation_and_with_the_last_chunk_must_agree(client, tree):
    data = b"xyz" * 1000
    status, body, _ = await call(client, "POST", f"upload/{q(tree.root)}/both.bin", headers={
        "upload-length": str(len(data)), "upload-metadata": meta(sha256=hashlib.sha256(data).hexdigest())})
    status, body, _ = await call(client, "PATCH", f"uploads/{body['id']}", body=data, headers={
        "upload-offset": "0", "repr-digest": repr_digest(b"other")})
    assert status == 422 and not (tree.root / "both.bin").exists()


async def test_a_write_failing_after_its_answer_fails_the_next_request_and_the_offset_tells_the_truth(
        client, tree, monkeypatch):
    """PATCHes are answered once their chunk is queued; a queued write that fails (a full
    disk) truncates the file to what was written, the upload's next request gets the error,
    and HEAD reports what the file holds, from where the client continues."""
    from edge_agent.plugins.files import uploads as uploads_module

    data = os.urandom(300_000)
    target = tree.root / "full.bin"
    status, body, _ = await call(client, "POST", f"upload/{q(target)}", body=data[:100_000], headers={
        "upload-length": str(len(data))})
    uid = body["id"]
    real_pwrite = os.pwrite

    def disk_full(fd, view, at):
        if at >= 100_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, view, at)

    monkeypatch.setattr(uploads_module.os, "pwrite", disk_full)
    status, _, headers = await call(client, "PATCH", f"uploads/{uid}", body=data[100_000:200_000],
                                    headers={"upload-offset": "100000"})
    assert status == 204 and headers["upload-offset"] == "200000"  # answered before it was written
    status, body, _ = await call(client, "PATCH", f"uploads/{uid}", body=data[200_000:],
                                 headers={"upload-offset": "200000"})
    assert status >= 400 and "No space left" in body["detail"]
    monkeypatch.setattr(uploads_module.os, "pwrite", real_pwrite)
    status, _, headers = await call(client, "HEAD", f"uploads/{uid}")
    assert headers["upload-offset"] == "100000"
    for at in (100_000, 200_000):
        status, _, headers = await call(client, "PATCH", f"uploads/{uid}", body=data[at:at + 100_000],
                                        headers={"upload-offset": str(at), "repr-digest": repr_digest(data)})
        assert status == 204
    assert headers["x-edge-sha256"] == hashlib.sha256(data).hexdigest() and target.read_bytes() == data


async def test_tus_refuses_existing_files_unless_overwrite_and_limits(tree, tmp_path):
    async with PluginTestClient(FilesPlugin, state_dir=tmp_path / "st2",
                                config={"roots": str(tree.root), "max_upload": 1000}) as h:
        status, body, _ = await call(h, "POST", f"upload/{q(tree.root)}/data/a.txt", headers={"upload-length": "3"})
        assert status == 409 and body["error"] == "exists"
        status, body, _ = await call(h, "POST", f"upload/{q(tree.root)}/data/a.txt", body=b"new",
                                     headers={"upload-length": "3", "upload-metadata": meta(overwrite=1)})
        assert status == 201 and (tree.root / "data/a.txt").read_bytes() == b"new"
        status, body, _ = await call(h, "POST", f"upload/{q(tree.root)}/big", headers={"upload-length": "1001"})
        assert status == 413 and body["error"] == "upload_too_large"


async def test_manifest_marks_only_reads_readonly(tmp_path, tree):
    h = PluginTestClient(FilesPlugin, state_dir=tmp_path / "st3", config={"roots": str(tree.root)})
    routes = {(r["method"], r["path"]): r["readonly"] for r in h.host.manifest()[0]["routes"]}
    for path in ("list/{path:path}", "stat/{path:path}", "download/{path:path}", "checksum/{path:path}",
                 "head/{path:path}", "tail/{path:path}", "find/{path:path}", "roots"):
        assert routes[("GET", path)] is True, path
    for key in [("POST", "mkdir/{path:path}"), ("POST", "move/{path:path}"), ("POST", "copy/{path:path}"),
                ("DELETE", "remove/{path:path}"), ("POST", "chmod/{path:path}"), ("PUT", "put/{path:path}"),
                ("POST", "upload/{path:path}"), ("PATCH", "uploads/{upload_id}"),
                ("DELETE", "uploads/{upload_id}")]:
        assert routes[key] is False, key


async def test_an_os_permission_error_is_a_403_with_its_message_even_as_root(client, tree, monkeypatch):
    """Root reads everything, so the OS is made to refuse: the answer carries its message."""
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).endswith("a.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    status, body, _ = await call(client, "GET", f"download/{q(tree.root)}/data/a.txt")
    assert status == 403 and body == {"error": "permission_denied",
                                      "detail": f"Permission denied: {tree.root}/data/a.txt"}
