"""File transfers through the bridge with the files plugin: upload and download through the
SDK (tus chunks up, one streamed GET down), every file checked by SHA-256, with throughput,
bridge and agent CPU per MiB and their peak memory growth; a resumed upload; a listing of a
directory of 100,000 files; and, where an sshd can be started here, scp to localhost.

    python -m bench.files                          # 1, 64 and 1024 MiB
    python -m bench.files --sizes 1,64 --files 20000
    python -m bench.files --root /dev/shm          # the edge's root in memory: no disk

"plain write + fsync" is the same bytes written to the root directory straight from the
benchmark, as fast as the disk takes them: an upload (which ends with an fsync) cannot go
faster.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.proxy import cpu_seconds
from edge_agent.client import BridgeClient
from tests.support.live import AgentProcess, LiveBridge, free_port, wait_for
from tests.test_transfer_e2e import PeakRSS

EDGE = "bench-files"
MiB = 2**20


def make_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    block = os.urandom(8 * MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


class Meter:
    """CPU seconds and peak RSS growth of the bridge and the agent over a block."""

    def __init__(self, bridge_pid: int, agent_pid: int) -> None:
        self.pids = (bridge_pid, agent_pid)

    def __enter__(self) -> Meter:
        self.cpu0 = [cpu_seconds(p) for p in self.pids]
        self.peaks = [PeakRSS(p).__enter__() for p in self.pids]
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        for p in self.peaks:
            p.__exit__(None, None, None)
        self.cpu = [cpu_seconds(p) - c for p, c in zip(self.pids, self.cpu0)]


def start_sshd(tmp: Path) -> tuple[subprocess.Popen, int] | None:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd is None or shutil.which("scp") is None:
        return None
    d = tmp / "ssh"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")], check=True)
    shutil.copy(d / "id.pub", d / "authorized_keys")
    port = free_port()
    conf = d / "sshd_config"
    conf.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nPidFile {d / 'pid'}\n"
                    "StrictModes no\nPermitRootLogin yes\n"
                    "Subsystem sftp internal-sftp\n")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-f", str(conf), "-e"], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    if proc.poll() is not None:
        return None
    return proc, port


def scp(port: int, key: Path, src: str, dst: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["scp", "-q", "-P", str(port), "-i", str(key), "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null", src, dst], check=True)
    return time.perf_counter() - t0


def plain_write(src: Path, dst: Path) -> float:
    """Seconds to write ``src``'s bytes to ``dst`` and fsync them, as an upload's last step
    does: what the disk allows an upload at best."""
    data = src.read_bytes()
    t0 = time.perf_counter()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        for at in range(0, len(data), 16 * MiB):
            os.write(fd, view[at:at + 16 * MiB])
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t0
    dst.unlink()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1,64,1024", help="file sizes in MiB")
    p.add_argument("--files", type=int, default=100_000, help="entries of the directory listed")
    p.add_argument("--chunk-mib", type=int, default=16, help="upload chunk (one PATCH) in MiB")
    p.add_argument("--root", default=None,
                   help="a directory for the edge's root (default: in the temporary directory); e.g. /dev/shm "
                        "to take the disk out of the figures")
    args = p.parse_args(argv)
    rows, extra = [], []
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp_name, \
            tempfile.TemporaryDirectory(prefix="bench-files-root-", dir=args.root) as root_name:
        tmp = Path(tmp_name)
        root, local = Path(root_name), tmp / "local"
        local.mkdir()
        env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"}
        bridge = LiveBridge(tmp / "bridge", env=env)
        bridge.migrate()
        seeded = bridge.seed(superusers=["bench"], api_tokens=["bench"], edge_tokens=[(EDGE, "bench")])
        token = seeded["api"]["bench"]
        bridge.start()
        agent = AgentProcess(bridge.url, seeded["edge"][EDGE], tmp, plugins="files",
                             options=[f"files.roots={root}"], extra_args=["-q"]).start()
        sshd = start_sshd(tmp)
        try:
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="edge online")
            bc = BridgeClient(bridge.url, token=token, timeout=600)
            fs = bc.get_edge_client(EDGE).get_plugin("files")
            fs.list(str(root))  # warm up
            for mib in [int(s) for s in args.sizes.split(",")]:
                size = mib * MiB
                src = local / f"f{mib}.bin"
                digest = make_file(src, size)
                t0 = time.perf_counter()
                sha256_of(src)
                hash_s = time.perf_counter() - t0
                with Meter(bridge.proc.pid, agent.proc.pid) as up:
                    result = fs.upload(src, f"{root}/f{mib}.bin", chunk_size=args.chunk_mib * MiB, progress=False,
                                       overwrite=True)
                assert result["sha256"] == digest and sha256_of(root / f"f{mib}.bin") == digest, "upload corrupted"
                dst = local / f"back{mib}.bin"
                with Meter(bridge.proc.pid, agent.proc.pid) as down:
                    fs.download(f"{root}/f{mib}.bin", dst, progress=False, resume=False)
                assert sha256_of(dst) == digest, "download corrupted"
                row = {"mib": mib, "hash_s": hash_s, "up": up, "down": down,
                       "disk": size / plain_write(src, root / "plain.bin") / 1e6}
                if sshd is not None:
                    key = tmp / "ssh" / "id"
                    row["scp_up"] = size / scp(sshd[1], key, str(src), f"127.0.0.1:{root}/scp{mib}.bin") / 1e6
                    row["scp_down"] = size / scp(sshd[1], key, f"127.0.0.1:{root}/scp{mib}.bin",
                                                 str(local / f"scp{mib}.bin")) / 1e6
                rows.append(row)
                dst.unlink()
                (root / f"f{mib}.bin").unlink()
                for leftover in (root / f"scp{mib}.bin", local / f"scp{mib}.bin"):
                    leftover.unlink(missing_ok=True)

            # A resumed upload sends only what is missing.
            size = 64 * MiB
            src = local / "resume.bin"
            make_file(src, size)

            class Stop(Exception):
                pass

            def stop_at_half(done: int, total: int) -> None:
                if done >= size // 2:
                    raise Stop

            try:
                fs.upload(src, f"{root}/resume.bin", chunk_size=8 * MiB, progress=stop_at_half)
            except Stop:
                pass
            resumed = fs.upload(src, f"{root}/resume.bin", chunk_size=8 * MiB, progress=False)
            extra.append(f"Resumed 64 MiB upload: continued from byte {resumed['resumed_from']:,}, "
                         f"sent {resumed['sent']:,} bytes ({resumed['sent'] / size:.0%} of the file).")

            # A directory of many files.
            big = root / "many"
            big.mkdir()
            t0 = time.perf_counter()
            for i in range(args.files):
                (big / f"file{i:06d}.dat").touch()
            create_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            first = fs.list(str(big), limit=500)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            fs.list(str(big), offset=args.files // 2, limit=500)
            warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            n = sum(1 for _ in fs.iter_list(str(big), page=5000))
            full = time.perf_counter() - t0
            assert first["total"] == args.files and n == args.files
            t0 = time.perf_counter()
            sorted(os.listdir(big))
            local_ls = time.perf_counter() - t0
            extra.append(f"Directory of {args.files:,} files (made in {create_s:.1f} s): first page of 500 "
                         f"{cold * 1e3:.0f} ms (a scan with lstat of every entry), a page from the middle "
                         f"{warm * 1e3:.0f} ms (cached scan), all {n:,} entries in pages of 5,000 {full:.2f} s; "
                         f"sorted os.listdir on the edge's host alone: {local_ls * 1e3:.0f} ms.")
            bc.close()
        finally:
            if sshd is not None:
                sshd[0].terminate()
            agent.stop()
            bridge.stop()

    print("\nFile transfers through the bridge (SDK, files plugin), SHA-256 checked\n")
    head = ("| size MiB | upload MB/s | download MB/s | bridge CPU ms/MiB up / down | agent CPU ms/MiB up / down "
            "| bridge peak growth MiB up / down | agent peak growth MiB up / down | client sha256 s "
            "| plain write + fsync MB/s |")
    sep = "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if any("scp_up" in r for r in rows):
        head += " scp up / down MB/s |"
        sep += "---:|"
    print(head)
    print(sep)
    for r in rows:
        size = r["mib"] * MiB
        up, down = r["up"], r["down"]
        line = (f"| {r['mib']} | {size / up.seconds / 1e6:.0f} | {size / down.seconds / 1e6:.0f} | "
                f"{up.cpu[0] * 1e3 / r['mib']:.1f} / {down.cpu[0] * 1e3 / r['mib']:.1f} | "
                f"{up.cpu[1] * 1e3 / r['mib']:.1f} / {down.cpu[1] * 1e3 / r['mib']:.1f} | "
                f"{up.peaks[0].growth_mib:.1f} / {down.peaks[0].growth_mib:.1f} | "
                f"{up.peaks[1].growth_mib:.1f} / {down.peaks[1].growth_mib:.1f} | {r['hash_s']:.2f} | "
                f"{r['disk']:.0f} |")
        if "scp_up" in r:
            line += f" {r['scp_up']:.0f} / {r['scp_down']:.0f} |"
        print(line)
    print()
    for line in extra:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
