"""What machine a benchmark ran on, and how busy other processes kept it.

Facts for the reports (CPU model and the instruction sets that decide INT8 speed, package
versions, load average) and a watch on the CPU time other processes take while something is
timed. Linux-first (/proc); elsewhere the figures it cannot read are left out. It times nothing.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

# The CPU features that decide ONNX Runtime's FP32/INT8 speed (VNNI: int8 dot products).
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Platform, CPUs (model, count, affinity, CPU_FLAGS, hypervisor) and memory."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)
        flags = set(fields.get("flags", "").split())
        info["cpu_model"] = fields.get("model name")
        info["cpu_flags"] = {f: f in flags for f in CPU_FLAGS}
        info["hypervisor"] = "hypervisor" in flags
        info["int8_note"] = (
            "VNNI present: ONNX Runtime can use int8 dot-product instructions"
            if {"avx512_vnni", "avx_vnni"} & flags
            else "no VNNI: INT8 convolutions often no faster than FP32 here"
        )
    except OSError:
        info["cpu_model"] = platform.processor() or None
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["mem_total_gb"] = round(int(mem[1]) / 1e6, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


def package_versions(names: Sequence[str], *, keep_missing: bool) -> dict[str, str | None]:
    """{distribution: version}; one that is not installed is None, or left out unless keep_missing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            if keep_missing:
                out[name] = None
    return out


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class CpuWatch:
    """How busy the machine was with *other* processes between start() and stop()."""

    def __init__(self) -> None:
        self._t = self._own = 0.0
        self._busy: float | None = None

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            vals = [int(x) for x in parts]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._t, self._busy = time.perf_counter(), self._machine_busy_s()
        t = os.times()
        self._own = t.user + t.system

    def stop(self) -> dict:
        wall = time.perf_counter() - self._t
        busy = self._machine_busy_s()
        t = os.times()
        own = t.user + t.system - self._own
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        out = {"wall_s": round(wall, 2), "own_cpu_s": round(own, 2)}
        if busy is not None and self._busy is not None and wall > 0:
            out["others_cpu_share"] = round(max(0.0, (busy - self._busy - own)) / (wall * (os.cpu_count() or cpus)), 3)
        out["loadavg_1m"] = round(os.getloadavg()[0], 2)
        return out


def wait_for_quiet(max_wait_s: float, *, threshold: float = 0.10, window_s: float = 3.0) -> dict:
    """Wait (up to max_wait_s) until other processes use at most `threshold` of the CPUs."""
    t0 = time.perf_counter()
    while True:
        watch = CpuWatch()
        watch.start()
        time.sleep(window_s)
        share = watch.stop().get("others_cpu_share")
        if share is None or share <= threshold or time.perf_counter() - t0 >= max_wait_s:
            break
    return {
        "waited_s": round(time.perf_counter() - t0, 1),
        "others_cpu_share_last": share,
        "quiet": share is not None and share <= threshold,
        "threshold": threshold,
    }
