"""loopline under test, in its own process: ingest, re-ingest of the unchanged folder, then queries.

One process per embedding runtime (`cfg["runtime"]`: onnx, torch or the default), each with a
home of its own: a collection records the model that built it.

Queries run twice on the same index: hybrid (dense + BM25, RRF) and dense-only (no sparse
query vector). Each question is also asked through `RagService.ask`, for abstention. The
ranks and scores are computed by the parent (`report`); this only measures and records.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from evaluation.benchmarks.rag.process import peak_rss_mib, rss_mib, set_threads, timed_queries

log = logging.getLogger(__name__)

GROUP = "public"  # every document is ingested for this group; the benchmark asks as an admin
WARM_UP_QUESTION = "warm-up question about the handbook"


def run_loopline(cfg: dict) -> dict:
    """Ingest, re-ingest, then query (hybrid and dense-only) in this process."""
    t_boot = time.perf_counter()
    from tqdm import tqdm

    threads = set_threads(cfg["threads"])
    from rag.retrieval import Retriever
    from rag.service import RagService
    from shared.auth import Principal
    from shared.config import Settings

    corpus = Path(cfg["corpus"])
    runtime = cfg.get("runtime")  # None: the product's default embedding runtime
    home = Path(cfg["work"]) / (f"loopline_home_{runtime}" if cfg.get("home_suffix") else "loopline_home")
    admin = Principal(name="bench", admin=True)
    top_k = cfg["top_k"]

    def settings(hybrid: bool, threads: int) -> Settings:
        extra = {k: cfg[k] for k in ("chunk_size", "chunk_overlap", "min_relevance") if cfg.get(k) is not None}
        if runtime:
            extra["embedding_runtime"] = runtime
        return Settings(home=home, hybrid=hybrid, embedding_threads=threads, top_k=top_k, **extra)

    out: dict[str, Any] = {"system": "loopline", "torch_threads": threads}
    s = settings(True, cfg["threads"])
    out["settings"] = {
        "chunk_size": s.chunk_size,
        "chunk_overlap": s.chunk_overlap,
        "min_relevance": s.min_relevance,
        "embedding_runtime": s.embedding_runtime,
        "embedding_batch_size": s.embedding_batch_size,
        "top_k": top_k,
        "hybrid_ingest": True,
    }
    with RagService(s) as svc:
        indexer = svc.pipeline.indexer  # loads the embedding model (timed apart from the ingest)
        indexer.embedder.embed_documents(["warm-up"])  # the first forward pass pages in torch kernels
        out["model_load_s"] = round(time.perf_counter() - t_boot, 3)  # imports and warm-up included
        out["settings"]["embedding_model"] = indexer.embedder.name
        out["rss_after_load_mib"] = rss_mib()
        bar = tqdm(desc="loopline ingest", unit="doc", file=sys.stderr)

        def progress(done: int, total: int, _chunks: int) -> None:
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
    out["query_torch_threads"] = set_threads(cfg["query_threads"])
    questions = {q["id"]: q["question"] for q in cfg["qa"]}
    for mode, hybrid in (("hybrid", True), ("dense", False)):
        with RagService(settings(hybrid, cfg["query_threads"])) as svc:
            retriever = Retriever(svc.store, svc.query_embedder, svc.sparse)
            retriever.retrieve(WARM_UP_QUESTION, groups=admin.readable_groups, top_k=top_k)
            svc.ask(WARM_UP_QUESTION, admin, top_k=top_k)

            def one(question: str, retriever: Retriever = retriever) -> dict:
                got = retriever.retrieve(question, groups=admin.readable_groups, top_k=top_k)
                return {
                    "retrieved": [str(r.hit.payload.get("source", "")) for r in got.chunks],
                    "relevance": [round(r.relevance, 4) for r in got.chunks],
                    "embed_ms": round(got.embed_ms, 3),
                    "search_ms": round(got.search_ms, 3),
                }

            rows = timed_queries(f"loopline {mode} retrieve", cfg["qa"], cfg["repeats"], one)
            for row in rows:  # the answer path, for abstention (and its own latency)
                t0 = time.perf_counter()
                ans = svc.ask(questions[row["id"]], admin, top_k=top_k)
                row["ask_ms"] = round((time.perf_counter() - t0) * 1000, 3)
                row["abstained"] = ans.abstained
                row["cited"] = [c.source for c in ans.citations]
            out["modes"][mode] = rows
    out["peak_rss_total_mib"] = peak_rss_mib()
    return out
