"""A system under test in its own process: threads, memory, and timed queries.

Each system runs in a fresh spawned process, so its peak RSS is its own high-water mark and
neither system's model, caches or imports are counted against the other. Only the standard
library (and tqdm, lazily) at import: the children import this module first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from evaluation.benchmarks.machine import loadavg


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """This process's peak RSS: VmHWM (its own address space), else ru_maxrss."""
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024, 1)


def rss_mib() -> float | None:
    kib = _proc_status_kib("VmRSS")
    return round(kib / 1024, 1) if kib is not None else None


def init_logging(level: int) -> None:
    """Log to stderr with the process id (the parent's and the children's lines interleave)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "sentence_transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_threads(threads: int) -> int:
    """torch's intra-op threads; returns what torch reports back."""
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def timed_queries(label: str, qa: Sequence[dict], repeats: int, run_one: Callable[[str], dict]) -> list[dict]:
    """Run `run_one(question) -> dict` `repeats` times per question; the first run's result, all latencies."""
    from tqdm import tqdm

    rows = []
    for q in tqdm(qa, desc=label, unit="q", file=sys.stderr, leave=False):
        lat = []
        first = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = run_one(q["question"])
            lat.append((time.perf_counter() - t0) * 1000)
            first = first or res
        rows.append({"id": q["id"], "source": q["source"], "latency_ms": [round(x, 3) for x in lat], **(first or {})})
    return rows


def run_in_child(fn: Callable[[dict], dict], cfg: dict, level: int) -> dict:
    """Run fn(cfg) in a fresh spawned process, so its peak RSS is its own; adds the load averages."""
    import multiprocessing as mp

    before = loadavg()
    with ProcessPoolExecutor(
        max_workers=1, mp_context=mp.get_context("spawn"), initializer=init_logging, initargs=(level,)
    ) as ex:
        res = ex.submit(fn, cfg).result()
    res["loadavg_before"], res["loadavg_after"] = before, loadavg()
    return res
