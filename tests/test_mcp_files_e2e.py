"""The MCP file tools end to end: a real bridge, a real agent with the files plugin serving
a temporary directory (and psij, for a job's working directory), driven by the official MCP
client over Streamable HTTP.

What a file tool does must be what the token's user could do over REST: the plugin's
confinement and errors, the proxy's roles and read-only rule, and every call in the audit
trail with the MCP client and the tool.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest

pytest.importorskip("mcp")

from tests.support.live import wait_for
from tests.test_mcp_e2e import audit_rows, error_text, mcp_client, run, structured

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FILE_READ = {"file_roots", "list_files", "stat_file", "read_file", "checksum_file", "find_files", "job_files"}
FILE_WRITE = {"write_file", "make_directory", "move_file", "copy_file", "delete_file"}


@pytest.fixture
def files_mcp(bridge_factory, agent_factory, unique_name, tmp_path):
    """A bridge; an agent serving only ``root`` with the files and psij plugins; the owner
    (an API token and a read-only one) and a viewer."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    bridge = bridge_factory()
    seeded = bridge.seed(users=["owner", "viewer"], api_tokens=["owner", "viewer"],
                         edge_tokens=[(unique_name, "owner")])
    bridge.manage("edge_grant", unique_name, "viewer", "viewer")
    agent_factory(bridge, seeded["edge"][unique_name], plugins="files,psij",
                  options=[f"files.roots={root}", "psij.poll_interval=1"])
    token = seeded["api"]["owner"]
    wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
    tokens = {**seeded["api"], "read_only": bridge.api_token("owner", "--read-only")}
    return type("FilesMcp", (), {"bridge": bridge, "edge": unique_name, "tokens": tokens, "root": root,
                                 "outside": outside})


def test_list_write_read_back_and_manage_files(files_mcp):
    s = files_mcp
    root = s.root
    (root / "data").mkdir()
    (root / "data" / "a.txt").write_text("alpha\n")
    (root / "data" / "b.log").write_text("".join(f"line {i}\n" for i in range(1, 501)))
    binary = os.urandom(200_000) + b"\x00"
    text = "héllo wörld ✓\n" * 1000  # multi-byte characters, 17 000 bytes

    async def session():
        async with mcp_client(s.bridge.url, s.tokens["owner"]) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) >= FILE_READ | FILE_WRITE
            assert not any(name.startswith("ext.files.") for name in tools)  # hand-written tools instead
            assert tools["list_files"].annotations.read_only_hint is True
            assert tools["delete_file"].annotations.destructive_hint is True
            assert tools["write_file"].annotations.read_only_hint is False
            assert tools["make_directory"].annotations.destructive_hint is False
            assert tools["read_file"].title and tools["read_file"].description

            roots = structured(await client.call_tool("file_roots", {"edge": s.edge}))
            assert [r["path"] for r in roots["roots"]] == [str(root)]

            listing = structured(await client.call_tool("list_files", {"edge": s.edge, "path": f"{root}/data"}))
            assert [e["name"] for e in listing["entries"]] == ["a.txt", "b.log"] and listing["total"] == 2
            page = structured(await client.call_tool("list_files", {"edge": s.edge, "path": f"{root}/data",
                                                                    "limit": 1, "offset": 1}))
            assert [e["name"] for e in page["entries"]] == ["b.log"] and page["next_offset"] is None

            # Write, then read back byte-identical: text, and binary as base64.
            wrote = structured(await client.call_tool("write_file", {"edge": s.edge, "path": f"{root}/data/t.txt",
                                                                     "content": text}))
            assert wrote["size"] == len(text.encode()) and wrote["sha256"] == hashlib.sha256(text.encode()).hexdigest()
            back = structured(await client.call_tool("read_file", {"edge": s.edge, "path": f"{root}/data/t.txt"}))
            assert back["text"] == text and back["truncated"] is False and back["size"] == len(text.encode())
            # In pieces that cut multi-byte characters: each piece is valid text, together the file.
            pieces, offset = [], 0
            while True:
                piece = structured(await client.call_tool("read_file", {
                    "edge": s.edge, "path": f"{root}/data/t.txt", "offset": offset, "max_bytes": 1001}))
                pieces.append(piece["text"])
                offset = piece["next_offset"]
                if not piece["truncated"]:
                    break
            assert "".join(pieces) == text and len(pieces) > 1

            blob = base64.b64encode(binary).decode()
            structured(await client.call_tool("write_file", {"edge": s.edge, "path": f"{root}/data/x.bin",
                                                             "content": blob, "encoding": "base64"}))
            assert (root / "data" / "x.bin").read_bytes() == binary
            got, offset = b"", 0
            while True:
                piece = structured(await client.call_tool("read_file", {
                    "edge": s.edge, "path": f"{root}/data/x.bin", "offset": offset, "encoding": "base64"}))
                got += base64.b64decode(piece["content_base64"])
                offset = piece["next_offset"]
                if not piece["truncated"]:
                    break
            assert got == binary
            refused = error_text(await client.call_tool("read_file", {"edge": s.edge, "path": f"{root}/data/x.bin"}))
            assert "binary_file" in refused and "base64" in refused
            checksum = structured(await client.call_tool("checksum_file", {"edge": s.edge,
                                                                           "path": f"{root}/data/x.bin"}))
            assert checksum["digest"] == hashlib.sha256(binary).hexdigest()

            # An existing file is replaced only when asked.
            exists = error_text(await client.call_tool("write_file", {"edge": s.edge, "path": f"{root}/data/a.txt",
                                                                      "content": "new"}))
            assert "exists" in exists
            structured(await client.call_tool("write_file", {"edge": s.edge, "path": f"{root}/data/a.txt",
                                                             "content": "new\n", "overwrite": True}))
            assert (root / "data" / "a.txt").read_text() == "new\n"
            big = error_text(await client.call_tool("write_file", {"edge": s.edge, "path": f"{root}/data/big.txt",
                                                                   "content": "x" * (2 * 1024 * 1024 + 1)}))
            assert "too_large" in big and "RADICAL_MCP_MAX_WRITE_BYTES" in big
            assert not (root / "data" / "big.txt").exists()

            head = structured(await client.call_tool("read_file", {"edge": s.edge, "path": f"{root}/data/b.log",
                                                                   "head": 2}))
            assert head["text"] == "line 1\nline 2" and head["lines"] == 2
            tail = structured(await client.call_tool("read_file", {"edge": s.edge, "path": f"{root}/data/b.log",
                                                                   "tail": 1}))
            assert tail["text"] == "line 500" and tail["from_end"] is True

            stat = structured(await client.call_tool("stat_file", {"edge": s.edge, "path": f"{root}/data/b.log"}))
            assert stat["type"] == "file" and stat["size"] == (root / "data" / "b.log").stat().st_size

            # A download as an MCP resource.
            res = await client.read_resource(f"radical-edge://files/{s.edge}{root}/data/a.txt")
            assert res.contents[0].text == "new\n"
            (root / "data" / "small.bin").write_bytes(b"\x00\xff" * 10)
            res = await client.read_resource(f"radical-edge://files/{s.edge}{root}/data/small.bin")
            assert base64.b64decode(res.contents[0].blob) == b"\x00\xff" * 10
            with pytest.raises(Exception, match="too_large"):  # larger than the output limit
                await client.read_resource(f"radical-edge://files/{s.edge}{root}/data/x.bin")
            with pytest.raises(Exception, match="outside_roots"):
                await client.read_resource(f"radical-edge://files/{s.edge}{s.outside}/secret.txt")

            # mkdir, copy, move, find, delete (recursive only when asked).
            structured(await client.call_tool("make_directory", {"edge": s.edge, "path": f"{root}/out/deep",
                                                                 "parents": True}))
            copied = structured(await client.call_tool("copy_file", {"edge": s.edge, "path": f"{root}/data/t.txt",
                                                                     "to": f"{root}/out/deep/"}))
            assert copied["copied"] and (root / "out" / "deep" / "t.txt").read_text() == text
            structured(await client.call_tool("move_file", {"edge": s.edge, "path": f"{root}/out/deep/t.txt",
                                                            "to": f"{root}/out/moved.txt"}))
            assert (root / "out" / "moved.txt").exists() and not (root / "out" / "deep" / "t.txt").exists()
            found = structured(await client.call_tool("find_files", {"edge": s.edge, "path": str(root),
                                                                     "pattern": "*.txt"}))
            assert {m["name"] for m in found["matches"]} == {"a.txt", "t.txt", "moved.txt"}
            not_empty = error_text(await client.call_tool("delete_file", {"edge": s.edge, "path": f"{root}/out"}))
            assert "not_empty" in not_empty and (root / "out").exists()
            structured(await client.call_tool("delete_file", {"edge": s.edge, "path": f"{root}/out",
                                                              "recursive": True}))
            assert not (root / "out").exists()

            # Outside the roots: the plugin's refusal, in its words; nothing read or written.
            for tool, args in (("read_file", {}), ("list_files", {}), ("write_file", {"content": "x"}),
                               ("delete_file", {})):
                path = f"{s.outside}/secret.txt" if tool != "list_files" else str(s.outside)
                bad = error_text(await client.call_tool(tool, {"edge": s.edge, "path": path, **args}))
                assert "outside_roots" in bad and "403" in bad, (tool, bad)
            bad = error_text(await client.call_tool("read_file", {"edge": s.edge, "path": f"{root}/../outside/x"}))
            assert "bad_path" in bad
            (root / "leak.txt").symlink_to(s.outside / "secret.txt")
            (root / "way-out").symlink_to(s.outside)
            for path in (f"{root}/leak.txt", f"{root}/way-out/secret.txt"):
                bad = error_text(await client.call_tool("read_file", {"edge": s.edge, "path": path}))
                assert "symlink_escape" in bad or "outside_roots" in bad, (path, bad)
                assert "top secret" not in bad
            assert (s.outside / "secret.txt").read_text() == "top secret\n"
            assert sorted(p.name for p in s.outside.iterdir()) == ["secret.txt"]

    run(session)

    def audited():
        rows = audit_rows(s.bridge, s.edge)
        return rows if any("tool=delete_file" in r["client"] for r in rows) else None

    rows = wait_for(audited, 20, what="MCP file calls in the audit trail")
    files_rows = [r for r in rows if r["plugin"] == "files"]
    assert all(r["client"].startswith("mcp pytest-assistant 9.9 tool=") for r in files_rows)
    puts = [r for r in files_rows if r["client"].endswith("tool=write_file") and r["method"] == "PUT"]
    assert any(r["path"].endswith("data/t.txt") and r["status"] == 200 for r in puts)
    assert any(r["client"].endswith("tool=list_files") and r["path"].startswith("list/") for r in files_rows)
    refused = [r for r in files_rows if r["path"].endswith("outside/secret.txt")]
    assert refused and all(r["status"] == 403 and r["username"] == "owner" for r in refused)


def test_viewer_and_read_only_token_read_but_cannot_write(files_mcp):
    s = files_mcp
    (s.root / "notes.txt").write_text("hello\n")

    async def session(who: str):
        async with mcp_client(s.bridge.url, s.tokens[who]) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            read = await client.call_tool("read_file", {"edge": s.edge, "path": f"{s.root}/notes.txt"})
            wrote = await client.call_tool("write_file", {"edge": s.edge, "path": f"{s.root}/new.txt",
                                                          "content": "no"})
            deleted = await client.call_tool("delete_file", {"edge": s.edge, "path": f"{s.root}/notes.txt"})
            made = await client.call_tool("make_directory", {"edge": s.edge, "path": f"{s.root}/d"})
            return names, read, wrote, deleted, made

    names, read, wrote, deleted, made = run(session, "read_only")
    assert names >= FILE_READ and not names & FILE_WRITE  # shown only the read tools
    assert structured(read)["text"] == "hello\n"
    for result in (wrote, deleted, made):
        assert "403" in error_text(result)

    names, read, wrote, deleted, made = run(session, "viewer")
    assert names >= FILE_READ | FILE_WRITE  # listed, but the proxy refuses them to a viewer
    assert structured(read)["text"] == "hello\n"
    for result in (wrote, deleted, made):
        assert "403" in error_text(result)
    with s.bridge.client(s.tokens["viewer"]) as c:  # the same refusal as over REST
        r = c.put(f"/{s.edge}/files/put{s.root}/new.txt", content=b"no")
    assert r.status_code == 403 and r.json()["detail"] in error_text(wrote)

    assert not (s.root / "new.txt").exists() and not (s.root / "d").exists()
    assert (s.root / "notes.txt").read_text() == "hello\n"


def test_a_jobs_working_directory_and_its_files(files_mcp):
    s = files_mcp
    work = s.root / "run1"
    work.mkdir()

    async def session():
        async with mcp_client(s.bridge.url, s.tokens["owner"]) as client:
            job = structured(await client.call_tool("submit_job", {
                "edge": s.edge, "executable": "/bin/sh", "arguments": ["-c", "echo result > out.dat"],
                "directory": str(work), "idempotency_key": uuid.uuid4().hex}))
            done = structured(await client.call_tool("wait_job", {"edge": s.edge, "job_id": job["job_id"],
                                                                  "timeout": 60}))
            assert done["state"] == "COMPLETED"
            files = structured(await client.call_tool("job_files", {"edge": s.edge, "job_id": job["job_id"]}))
            assert files["directory"] == str(work) and files["state"] == "COMPLETED"
            assert "out.dat" in {e["name"] for e in files["listing"]["entries"]}
            out = structured(await client.call_tool("read_file", {"edge": s.edge, "path": f"{work}/out.dat"}))
            assert out["text"] == "result\n"

    run(session)
