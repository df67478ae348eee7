"""sysinfo: live metrics of the host the agent runs on (CPU, memory, disks, network, GPUs).

Field names and units are the original RADICAL Edge's (GPU memory in MiB, ``kernel`` as
``"Linux 6.1.0"``, disk types ``local ssd``/``local hdd``/``network``/``unknown``,
``network`` without loopback, down or address-less interfaces); what we add sits beside
them under new names (``mem_total_bytes``, ``kernel_release``, ``interfaces``) so that no
old name changes its meaning (docs/MIGRATING.md).

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

from ...host import batch_job_facts
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
        self._cpu_meter = CpuMeter()

    async def stop(self) -> None:
        await super().stop()
        self._disk_pool.shutdown(wait=False, cancel_futures=True)

    @route("GET", "metrics/{sid}")
    def metrics(self, request: Request, session: Session) -> dict[str, Any]:
        return self.collect()

    def collect(self) -> dict[str, Any]:
        """One snapshot of all metrics (blocking; call from a worker thread)."""
        interfaces = self._interfaces()
        return {
            "system": self._system(),
            "cpu": self._cpu(),
            "memory": self._memory(),
            "disks": self._disks(),
            "network": [n for n in interfaces if n["interface"] != "lo" and n["up"] is not False and n["ip"]],
            "interfaces": interfaces,
            "gpus": self._gpus(),
            "timestamp": time.time(),
        }

    def _system(self) -> dict[str, Any]:
        return {
            "hostname": socket.gethostname(),
            "uptime": round(time.time() - psutil.boot_time(), 1),
            "kernel": f"{platform.system()} {platform.release()}",
            "kernel_release": platform.release(),
            "arch": platform.machine(),
            "os": self._static["os"],
            **batch_job_facts(),
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
            **self._cpu_meter.percent(),
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

    def _interfaces(self) -> list[dict[str, Any]]:
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


class CpuMeter:
    """CPU use since the previous reading, from ``psutil.cpu_times`` deltas kept here.

    ``psutil.cpu_percent(interval=None)`` keeps its baseline per thread, so priming it on
    the event loop left the first reading of every worker thread at 0.0. This meter's
    baseline is taken when it is made (the plugin's start) and shared by every thread, so
    the first reading is real: the use since the agent started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = self._sample()
        self._answer: dict[str, Any] = {"percent": 0.0, "per_cpu": [0.0] * len(self._last[1])}

    @staticmethod
    def _sample() -> tuple[Any, list[Any]]:
        return psutil.cpu_times(), psutil.cpu_times(percpu=True)

    def percent(self) -> dict[str, Any]:
        """``{"percent", "per_cpu"}`` since the previous call (or the meter's creation)."""
        with self._lock:
            now = self._sample()
            before = self._last
            total = busy_percent(before[0], now[0])
            if total is None:  # called again within the clock's resolution: the last answer
                return dict(self._answer)
            per_cpu = [busy_percent(a, b) for a, b in zip(before[1], now[1])]
            self._last = now
            self._answer = {"percent": total, "per_cpu": [0.0 if p is None else p for p in per_cpu]}
            return dict(self._answer)


def busy_percent(before: Any, after: Any) -> float | None:
    """Percent of time busy between two ``cpu_times`` samples (None: no time passed). Busy is
    everything but idle and iowait; guest time is already inside user time on Linux."""

    def split(t: Any) -> tuple[float, float]:
        fields = t._asdict()
        total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
        idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
        return total - idle, total

    busy0, total0 = split(before)
    busy1, total1 = split(after)
    if total1 - total0 <= 0:
        return None
    return round(min(100.0, max(0.0, 100.0 * (busy1 - busy0) / (total1 - total0))), 1)


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
    """``network`` for shared file systems, else ``local ssd``/``local hdd`` from the kernel
    (the original's values), else ``unknown``."""
    if fstype.lower() in NETWORK_FS or ":" in device or device.startswith("//"):
        return "network"
    name = os.path.basename(device)
    if not name:
        return "unknown"
    kind = _rotational(name)
    return f"local {kind}" if kind else "unknown"


def _rotational(name: str) -> str | None:
    """``hdd`` or ``ssd`` for block device ``name`` (a partition's disk decides), else None."""
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
    return None


def _run(cmd: list[str], env_var: str | None = None) -> str | None:
    """Run a tool (``env_var`` may name where it is, as ``NVIDIA_SMI_PATH`` does); its
    stdout, or None if it is missing, fails or hangs."""
    exe = shutil.which((os.environ.get(env_var) if env_var else None) or cmd[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _memory(mib: float | None, nbytes: float | None = None, prefix: str = "mem_total") -> dict[str, Any]:
    """``{prefix: MiB (the original's unit), prefix_bytes: bytes}`` from either unit."""
    if nbytes is None and mib is not None:
        nbytes = mib * 1024 * 1024
    return {
        prefix: int(nbytes // (1024 * 1024)) if nbytes is not None else None,
        f"{prefix}_bytes": int(nbytes) if nbytes is not None else None,
    }


NVIDIA_FIELDS = ("index,name,utilization.gpu,utilization.memory,memory.total,memory.used,memory.free,"
                 "temperature.gpu,power.draw,driver_version,uuid")


def nvidia_gpus() -> list[dict[str, Any]]:
    out = _run(["nvidia-smi", f"--query-gpu={NVIDIA_FIELDS}", "--format=csv,noheader,nounits"], "NVIDIA_SMI_PATH")
    return parse_nvidia_smi(out) if out else []


def parse_nvidia_smi(out: str) -> list[dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=NVIDIA_FIELDS`` (memory in MiB there, and here in
    ``mem_*``; ``mem_*_bytes`` in bytes)."""
    gpus = []
    for line in out.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 9:
            continue
        cols += [""] * (11 - len(cols))
        index = int(_num(cols[0]) or 0)
        gpus.append({
            "id": str(index),
            "index": index,
            "name": cols[1],
            "vendor": "NVIDIA",
            "driver_version": cols[9] or None,
            "uuid": cols[10] or None,
            "util_gpu": _num(cols[2]),
            "util_mem": _num(cols[3]),
            **_memory(_num(cols[4]), prefix="mem_total"),
            **_memory(_num(cols[5]), prefix="mem_used"),
            **_memory(_num(cols[6]), prefix="mem_free"),
            "temperature": _num(cols[7]),
            "power_w": _num(cols[8]),
        })
    return gpus


def rocm_gpus() -> list[dict[str, Any]]:
    out = _run(["rocm-smi", "--showuse", "--showmemuse", "--showmeminfo", "vram", "--showproductname",
                "--showdriverversion", "--showuniqueid", "--json"], "ROCM_SMI_PATH")
    return parse_rocm_smi(out) if out else []


def parse_rocm_smi(out: str) -> list[dict[str, Any]]:
    """``rocm-smi --json`` (memory in bytes there; MiB in ``mem_*`` here, as the original)."""
    try:
        data = json.loads(out)
    except ValueError:
        return []
    system = data.get("system") if isinstance(data.get("system"), dict) else {}
    gpus: list[dict[str, Any]] = []
    for key, info in sorted(data.items()):
        if not key.startswith("card") or not isinstance(info, dict):
            continue
        total = _num(info.get("VRAM Total Memory (B)"))
        used = _num(info.get("VRAM Total Used Memory (B)"))
        free = total - used if total is not None and used is not None else None
        gpus.append({
            "id": key,
            "index": int(key[4:]) if key[4:].isdigit() else len(gpus),
            "name": info.get("Card series") or info.get("Card Series") or info.get("Card model") or "AMD GPU",
            "vendor": "AMD",
            "driver_version": info.get("Driver version") or system.get("Driver version"),
            "uuid": info.get("Unique ID"),
            "util_gpu": _num(info.get("GPU use (%)")),
            "util_mem": _num(info.get("GPU memory use (%)") or info.get("GPU Memory Allocated (VRAM%)")),
            **_memory(None, total, prefix="mem_total"),
            **_memory(None, used, prefix="mem_used"),
            **_memory(None, free, prefix="mem_free"),
        })
    return gpus
