"""sysinfo: live metrics of the host the agent runs on (CPU, memory, disks, network, GPUs).

Everything here is blocking (psutil, /proc, nvidia-smi), so the route is a plain ``def``
that the framework runs in a worker thread; the event loop never waits on it. A mount
that hangs (a dead NFS server) is skipped after a short timeout instead of blocking.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from typing import Any

import psutil

from ...plugin import Plugin, Request, Session, route

NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "cifs", "smb", "smb3", "smbfs", "beegfs", "ceph", "cephfs",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "sshfs", "panfs", "wekafs", "9p", "afs", "pvfs2",
    "fuse.ceph-fuse", "davfs", "fuse.beegfs",
})
DISK_TIMEOUT = 2.0
GPU_CACHE_SECONDS = 5.0
COMMAND_TIMEOUT = 5.0


class SysInfoPlugin(Plugin):
    name = "sysinfo"
    version = "1.0.0"
    description = "Live CPU, memory, disk, network and GPU metrics of the edge's host."
    ui_schema = {
        "title": "System info",
        "icon": "cpu",
        "description": description,
        "forms": [],
        "monitors": [{"id": "metrics", "title": "Host metrics", "type": "metrics", "endpoint": "metrics/{sid}"}],
        "notifications": [],
    }

    def __init__(self, host, config=None) -> None:
        super().__init__(host, config)
        self._disk_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="sysinfo-disk")
        self._hung_mounts: dict[str, float] = {}
        self._gpu_cache: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._gpu_lock = threading.Lock()
        self._static = _static_facts()

    async def start(self) -> None:
        psutil.cpu_percent(interval=None)  # prime: the first non-blocking call returns 0.0

    async def stop(self) -> None:
        await super().stop()
        self._disk_pool.shutdown(wait=False, cancel_futures=True)

    @route("GET", "metrics/{sid}")
    def metrics(self, request: Request, session: Session) -> dict[str, Any]:
        return self.collect()

    def collect(self) -> dict[str, Any]:
        """One snapshot of all metrics (blocking; call from a worker thread)."""
        return {
            "system": self._system(),
            "cpu": self._cpu(),
            "memory": self._memory(),
            "disks": self._disks(),
            "network": self._network(),
            "gpus": self._gpus(),
            "timestamp": time.time(),
        }

    def _system(self) -> dict[str, Any]:
        return {
            "hostname": socket.gethostname(),
            "uptime": round(time.time() - psutil.boot_time(), 1),
            "kernel": platform.release(),
            "arch": platform.machine(),
            "os": self._static["os"],
        }

    def _cpu(self) -> dict[str, Any]:
        try:
            load = [round(x, 2) for x in os.getloadavg()]
        except OSError:
            load = []
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError):
            freq = None
        return {
            "model": self._static["cpu_model"],
            "vendor": self._static["cpu_vendor"],
            "cores_physical": psutil.cpu_count(logical=False),
            "cores_logical": psutil.cpu_count(logical=True),
            "percent": psutil.cpu_percent(interval=None),
            "per_cpu": psutil.cpu_percent(interval=None, percpu=True),
            "load_avg": load,
            "freq_mhz": round(freq.current, 1) if freq else None,
        }

    def _memory(self) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        return {
            "total": vm.total,
            "available": vm.available,
            "percent": vm.percent,
            "used": vm.used,
            "swap_total": swap.total,
            "swap_used": swap.used,
        }

    def _disks(self) -> list[dict[str, Any]]:
        disks = []
        now = time.monotonic()
        for part in psutil.disk_partitions(all=False):
            if now - self._hung_mounts.get(part.mountpoint, -1e9) < 300:
                continue  # it hung recently: do not pile up threads on it
            future = self._disk_pool.submit(psutil.disk_usage, part.mountpoint)
            try:
                usage = future.result(timeout=DISK_TIMEOUT)
            except concurrent.futures.TimeoutError:
                self._hung_mounts[part.mountpoint] = now
                continue
            except (OSError, PermissionError):
                continue
            disks.append({
                "mount": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "type": disk_type(part.device, part.fstype),
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "percent": usage.percent,
            })
        return disks

    def _network(self) -> list[dict[str, Any]]:
        addrs = psutil.net_if_addrs()
        stats = psutil.net_if_stats()
        counters = psutil.net_io_counters(pernic=True)
        result = []
        for name, entries in sorted(addrs.items()):
            ip = next((a.address for a in entries if a.family == socket.AF_INET), None)
            ip6 = next((a.address for a in entries if a.family == socket.AF_INET6), None)
            mac = next((a.address for a in entries if a.family == psutil.AF_LINK), None)
            io = counters.get(name)
            st = stats.get(name)
            result.append({
                "interface": name,
                "ip": ip,
                "ipv6": ip6,
                "mac": mac,
                "up": st.isup if st else None,
                "rx_bytes": io.bytes_recv if io else 0,
                "tx_bytes": io.bytes_sent if io else 0,
                "speed_mbps": st.speed if st else 0,
            })
        return result

    def _gpus(self) -> list[dict[str, Any]]:
        with self._gpu_lock:
            stamp, cached = self._gpu_cache
            if time.monotonic() - stamp < GPU_CACHE_SECONDS:
                return cached
            gpus = nvidia_gpus() or rocm_gpus()
            self._gpu_cache = (time.monotonic(), gpus)
            return gpus


def _static_facts() -> dict[str, Any]:
    model = vendor = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "vendor_id" and not vendor:
                    vendor = value.strip()
                if model and vendor:
                    break
    except OSError:
        pass
    os_name = platform.system()
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    except (OSError, AttributeError):
        pass
    return {"cpu_model": model or platform.processor(), "cpu_vendor": vendor, "os": os_name}


def disk_type(device: str, fstype: str) -> str:
    """``network`` for shared file systems, else ``ssd``/``hdd`` from the kernel, else ``unknown``."""
    if fstype.lower() in NETWORK_FS or ":" in device or device.startswith("//"):
        return "network"
    name = os.path.basename(device)
    if not name:
        return "unknown"
    try:
        real = os.path.realpath(f"/sys/class/block/{name}")
        # A partition's queue/ lives in its parent disk's directory.
        for base in (real, os.path.dirname(real)):
            path = os.path.join(base, "queue", "rotational")
            if os.path.exists(path):
                with open(path, encoding="ascii") as fh:
                    return "hdd" if fh.read().strip() == "1" else "ssd"
    except OSError:
        pass
    return "unknown"


def _run(cmd: list[str]) -> str | None:
    exe = shutil.which(cmd[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _num(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def nvidia_gpus() -> list[dict[str, Any]]:
    fields = ("index,name,utilization.gpu,utilization.memory,memory.total,memory.used,memory.free,"
              "temperature.gpu,power.draw")
    out = _run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"])
    return parse_nvidia_smi(out) if out else []


def parse_nvidia_smi(out: str) -> list[dict[str, Any]]:
    gpus = []
    for line in out.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 9:
            continue
        gpus.append({
            "index": int(_num(cols[0]) or 0),
            "name": cols[1],
            "vendor": "nvidia",
            "util_gpu": _num(cols[2]),
            "util_mem": _num(cols[3]),
            "mem_total": _mib(cols[4]),
            "mem_used": _mib(cols[5]),
            "mem_free": _mib(cols[6]),
            "temperature": _num(cols[7]),
            "power_w": _num(cols[8]),
        })
    return gpus


def _mib(value: str) -> int | None:
    n = _num(value)
    return int(n * 1024 * 1024) if n is not None else None


def rocm_gpus() -> list[dict[str, Any]]:
    out = _run(["rocm-smi", "--showuse", "--showmemuse", "--showmeminfo", "vram", "--showproductname", "--json"])
    return parse_rocm_smi(out) if out else []


def parse_rocm_smi(out: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(out)
    except ValueError:
        return []
    gpus = []
    for key, info in sorted(data.items()):
        if not key.startswith("card") or not isinstance(info, dict):
            continue
        total = _num(info.get("VRAM Total Memory (B)"))
        used = _num(info.get("VRAM Total Used Memory (B)"))
        gpus.append({
            "index": int(key[4:]) if key[4:].isdigit() else len(gpus),
            "name": info.get("Card series") or info.get("Card model") or "AMD GPU",
            "vendor": "amd",
            "util_gpu": _num(info.get("GPU use (%)")),
            "util_mem": _num(info.get("GPU memory use (%)") or info.get("GPU Memory Allocated (VRAM%)")),
            "mem_total": int(total) if total is not None else None,
            "mem_used": int(used) if used is not None else None,
            "mem_free": int(total - used) if total is not None and used is not None else None,
        })
    return gpus
